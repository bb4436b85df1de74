//go:build linux

package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/uds"
)

// send is Send on a bare descriptor, the way git's C client does it:
// connect, write, wait for the reply in poll(2), read, close. A
// net.UnixConn would add an epoll registration and its removal, and a
// wait in the netpoller whose wake-up costs two thread switches.
func send(ctx context.Context, path string, req []byte, o clientOptions) ([]byte, error) {
	fd, err := uds.DialFD(ctx, path, o.dial...)
	if err != nil {
		return nil, &ClientError{"dial", path, fmt.Errorf("%w: %w", ErrNotProcessed, err)}
	}
	c := &oneShotConn{fd: fd, ctx: ctx}
	defer c.close()
	if dl, ok := ctx.Deadline(); ok {
		c.deadline = dl
	}
	if ctx.Done() != nil {
		// Cancellation ends a wait: shutdown wakes poll, and the error
		// reported is the context's.
		c.stop = context.AfterFunc(ctx, c.shutdown)
	}
	if err := c.writeAll(frame.AppendMessage(make([]byte, 0, frame.EncodedLen(len(req))), req)); err != nil {
		return nil, &ClientError{"send", path, sendFailure(ctxOr(ctx, err))}
	}
	msg, err := frame.NewReader(c, frame.SimpleIPC, o.maxReply).ReadMessage()
	if err != nil {
		return nil, &ClientError{"read", path, readFailure(ctxOr(ctx, err))}
	}
	return bytes.Clone(msg), nil
}

// pollers counts the goroutines of the process waiting in poll(2) for a
// one-shot reply. A thread blocked in a system call keeps its P until the
// runtime takes it back, which can take milliseconds; so at most
// GOMAXPROCS-1 of them wait that way, and the others in the netpoller.
var pollers atomic.Int32

// oneShotConn is one Send's connection. Only Send's goroutine uses it,
// except shutdown, which the context's callback may call at any time:
// mu orders it before close, so it never reaches a reused descriptor.
type oneShotConn struct {
	fd       int
	ctx      context.Context
	deadline time.Time
	stop     func() bool
	file     *os.File // fd, once handed to the netpoller
	raw      syscall.RawConn
	waited   bool

	mu     sync.Mutex
	closed bool
}

func (c *oneShotConn) shutdown() {
	c.mu.Lock()
	if !c.closed {
		unix.Shutdown(c.fd, unix.SHUT_RDWR)
	}
	c.mu.Unlock()
}

func (c *oneShotConn) close() {
	if c.stop != nil {
		c.stop()
	}
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	if c.file != nil {
		c.file.Close()
	} else {
		sysClose(c.fd)
	}
}

func (c *oneShotConn) writeAll(b []byte) error {
	for len(b) > 0 {
		n, err := sysWrite(uintptr(c.fd), b)
		switch {
		case err == nil:
			b = b[n:]
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			if err := c.wait(unix.POLLOUT); err != nil {
				return err
			}
		default:
			return os.NewSyscallError("write", err)
		}
	}
	return nil
}

// Read is io.Reader for the reply's decoder. Its first call waits before
// it reads: the reply cannot be there the moment the request is written,
// and a read that says EAGAIN is a system call for nothing.
func (c *oneShotConn) Read(p []byte) (int, error) {
	if !c.waited {
		c.waited = true
		if err := c.wait(unix.POLLIN); err != nil {
			return 0, err
		}
	}
	for {
		n, err := sysRead(uintptr(c.fd), p)
		switch {
		case err == nil && n == 0:
			return 0, io.EOF
		case err == nil:
			return n, nil
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			if err := c.wait(unix.POLLIN); err != nil {
				return 0, err
			}
		default:
			return 0, os.NewSyscallError("read", err)
		}
	}
}

// wait waits until the socket is ready for events, ctx's deadline passes
// (context.DeadlineExceeded, also before ctx's own timer fires) or ctx
// ends (its error).
func (c *oneShotConn) wait(events int16) error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	if c.file == nil {
		if pollers.Add(1) <= int32(max(1, runtime.GOMAXPROCS(0)-1)) {
			err := c.poll(events)
			pollers.Add(-1)
			return err
		}
		pollers.Add(-1)
		c.file = os.NewFile(uintptr(c.fd), "pktipc")
		if !c.deadline.IsZero() {
			c.file.SetDeadline(c.deadline)
		}
		var err error
		if c.raw, err = c.file.SyscallConn(); err != nil {
			return err
		}
	}
	// The callback looks (poll(2) without waiting) before the netpoller
	// waits: the netpoller forgets a readiness it reported before the
	// wait began, and the socket reports no new one for bytes already
	// there.
	ready := func(fd uintptr) bool {
		pfd := [1]unix.PollFd{{Fd: int32(fd), Events: events}}
		n, err := unix.Poll(pfd[:], 0)
		return n > 0 || err != nil && err != unix.EINTR
	}
	var err error
	if events == unix.POLLIN {
		err = c.raw.Read(ready)
	} else {
		err = c.raw.Write(ready)
	}
	if err := c.ctx.Err(); err != nil {
		return err
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return err
}

// poll waits in poll(2), its thread blocked as a C client's is.
func (c *oneShotConn) poll(events int16) error {
	for {
		timeout := -1
		if !c.deadline.IsZero() {
			left := time.Until(c.deadline)
			if left <= 0 {
				// The deadline is ctx's, whose own timer may not have
				// fired yet.
				return context.DeadlineExceeded
			}
			timeout = int((left + time.Millisecond - 1) / time.Millisecond)
		}
		pfd := [1]unix.PollFd{{Fd: int32(c.fd), Events: events}}
		n, err := unix.Poll(pfd[:], timeout)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("poll", err)
		}
		if n > 0 {
			// Errors and hang-ups show in the read or write that follows.
			return nil
		}
	}
}

//go:build linux

package events

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/valyala/bytebufferpool"
	"golang.org/x/sys/unix"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/uds"
)

type connKind uint8

const (
	kindConn connKind = iota
	kindListener
	kindExternal
)

// conn is one descriptor the Loop watches: a message connection, a
// listener or an external descriptor.
//
// Invariant: id, slot, kind, fd, format, ln, lock and lnID are set before
// the conn is published in the slot table and never change. queued
// changes under the loop's mu, closed under both waitMu and mu. The read
// side (readable, rbuf, rs, re, need, asm, xform, failing, retry,
// stop) belongs to the loop's waitMu holder; peer is set by AddSwitch
// under waitMu and read by writers through the atomic. The write side
// (outq and the fields after wmu) changes only under wmu; pending, paused,
// msgTx, relayTx and failed are atomics that hand a flush, a resumption,
// a report owed or a write failure's cause from one side to the other.
type conn struct {
	l      *loop
	id     ConnID
	slot   int32
	kind   connKind
	fd     int
	format Format
	ln     *uds.Listener
	lock   *os.File
	lnID   ConnID

	queued bool
	closed bool

	readable bool
	rbuf     []byte
	rs, re   int
	need     int
	asm      *frame.Assembler
	xform    Transform
	failing  bool
	retry    *time.Timer
	stop     chan struct{} // ends a listener's theft watcher
	peer     atomic.Pointer[conn]
	paused   atomic.Bool
	msgTx    atomic.Int32 // MessageTx events owed
	relayTx  atomic.Int32 // SwitchTx events owed

	wmu        sync.Mutex
	outq       []outMsg
	outHead    int
	outBytes   int
	wclosed    bool
	outWatched bool
	hdrs       []byte
	iov        []unix.Iovec
	pending    atomic.Bool
	failed     atomic.Pointer[error] // why a writer ended the connection
}

// outMsg is one encoded frame waiting in a connection's outbound queue.
type outMsg struct {
	buf   *bytebufferpool.ByteBuffer
	off   int
	relay bool // reported as SwitchTx, not MessageTx
}

func newConn(fd int, kind connKind, f Format) *conn {
	return &conn{fd: fd, kind: kind, format: f, rbuf: make([]byte, DefaultReadBuffer)}
}

// epollEvent is c's epoll registration for events: the data names its
// slot and the ID's sequence, so a report for a descriptor since closed
// and reused is recognised as stale.
func (c *conn) epollEvent(events uint32) unix.EpollEvent {
	return unix.EpollEvent{Events: events, Fd: c.slot, Pad: int32(uint32(c.id >> slotBits))}
}

// releaseLock drops LibIPC's single-instance lock, leaving the file as
// LibIPC does.
func (c *conn) releaseLock() {
	if c.lock != nil {
		c.lock.Close()
		c.lock = nil
	}
}

func (c *conn) freeRead() {
	if c.asm != nil {
		c.asm.Release()
	}
	c.rbuf = nil
	c.rs, c.re = 0, 0
}

// produce returns c's next message, or Disconnection, reading as needed.
// It runs under waitMu.
func (c *conn) produce() (Event, bool) {
	l := c.l
	if ev, ok := c.nextTx(); ok {
		l.pushToken(c)
		return ev, true
	}
	for {
		if c.paused.Load() {
			return Event{}, false
		}
		if c.rs < c.re || c.format == PktLine && c.asm != nil && c.asm.Buffered() > 0 {
			ev, ok, err := c.decode()
			if err != nil {
				if err == errFarewell {
					err = nil
				}
				c.end(err)
				return Event{}, false
			}
			if ok {
				if c.rs < c.re || c.readable {
					l.pushToken(c)
				}
				if p := c.peer.Load(); p != nil {
					return c.relay(p, ev)
				}
				return ev, true
			}
		}
		if !c.readable {
			return Event{}, false
		}
		c.makeRoom()
		n, err := rawIO(unix.SYS_READ, c.fd, c.rbuf[c.re:])
		switch {
		case err == unix.EAGAIN:
			c.readable = false
			return Event{}, false
		case err == unix.EINTR:
			continue
		case err != nil:
			c.end(c.failedOr(&ConnError{Conn: c.id, Op: "read", Err: os.NewSyscallError("read", err)}))
			return Event{}, false
		case n == 0:
			var cause error
			if c.rs < c.re || c.asm != nil && c.asm.Buffered() > 0 {
				cause = &ConnError{Conn: c.id, Op: "read", Err: fmt.Errorf("%w: %d bytes of a frame", ErrTruncated, c.re-c.rs)}
			}
			c.end(c.failedOr(cause))
			return Event{}, false
		}
		c.re += n
		// A short read does not say the socket is empty: a Unix socket's
		// read stops where bytes that carried descriptors (or an
		// out-of-band mark) end, with more behind them and no new edge to
		// come. Only EAGAIN clears readable.
	}
}

// end closes c (and its switch partner) and queues c's Disconnection
// behind the events still owed for its messages (the MessageTx of frames
// written, or dropped with the queue), which come first. The caller
// produces no event itself.
func (c *conn) end(cause error) {
	c.l.closeConn(c, cause, true)
}

// errFarewell is decode's word that the peer said goodbye (the C
// library's server-close frame): the connection ends without an error.
var errFarewell = errors.New("events: peer's farewell")

// makeRoom compacts or grows the read buffer so that a read can bring
// what the decoder waits for.
func (c *conn) makeRoom() {
	if c.rs == c.re {
		c.rs, c.re = 0, 0
	}
	used := c.re - c.rs
	want := max(c.need, used+1)
	if want > len(c.rbuf) {
		nb := make([]byte, max(want, 2*len(c.rbuf)))
		copy(nb, c.rbuf[c.rs:c.re])
		c.rbuf, c.rs, c.re = nb, 0, used
		return
	}
	if c.rs+want > len(c.rbuf) || c.re == len(c.rbuf) {
		copy(c.rbuf, c.rbuf[c.rs:c.re])
		c.rs, c.re = 0, used
	}
}

// decode takes one message from the buffered bytes, if one is whole.
func (c *conn) decode() (Event, bool, error) {
	b := c.rbuf[c.rs:c.re]
	limit := c.l.opts.maxMessage
	switch c.format {
	case LibIPC:
		limit = min(limit, frame.LibIPCMaxPayload)
		if len(b) >= frame.LibIPCHeaderSize {
			if n := binary.BigEndian.Uint32(b); int64(n) > int64(limit) {
				return Event{}, false, c.tooLarge(int64(n), limit)
			}
		}
		p, n, err := frame.DecodeLibIPC(b, limit)
		if err != nil {
			return Event{}, false, &ConnError{Conn: c.id, Op: "read", Err: err}
		}
		if n == 0 {
			c.needFrom(b, frame.LibIPCHeaderSize, 0)
			return Event{}, false, nil
		}
		c.rs += n
		c.need = 0
		return Event{Kind: MessageRx, Conn: c.id, FD: -1, Data: p}, true, nil
	case LibIPCC:
		limit = min(limit, frame.LibIPCCMaxPayload)
		if len(b) >= 5 && b[0] <= byte(frame.CNetworkLookup) {
			if n := binary.BigEndian.Uint32(b[1:]); int64(n) > int64(limit) {
				return Event{}, false, c.tooLarge(int64(n), limit)
			}
		}
		f, n, err := frame.DecodeLibIPCC(b)
		if err != nil {
			return Event{}, false, &ConnError{Conn: c.id, Op: "read", Err: err}
		}
		if n == 0 {
			c.needFrom(b, frame.LibIPCCHeaderSize, 1)
			return Event{}, false, nil
		}
		c.rs += n
		c.need = 0
		if f.Type == frame.CServerClose {
			// The C library's farewell: the peer is going away.
			return Event{}, false, errFarewell
		}
		return Event{Kind: MessageRx, Conn: c.id, FD: -1, Data: f.Payload, Type: f.Type, UserType: f.UserType}, true, nil
	}
	if c.asm == nil {
		c.asm = frame.NewAssembler(frame.Persistent, limit)
	}
	for {
		msg, n, done, err := c.asm.Next(c.rbuf[c.rs:c.re])
		if errors.Is(err, frame.ErrTooLarge) {
			// The message would pass the cap: at least what was gathered
			// and the packet announced.
			size := int64(c.asm.Buffered())
			if fe := (*frame.Error)(nil); errors.As(err, &fe) && fe.Length > frame.HeaderSize {
				size += int64(fe.Length - frame.HeaderSize)
			}
			return Event{}, false, &ConnError{Conn: c.id, Op: "read", Err: fmt.Errorf("%w (%w)", &SizeError{Size: size, Max: int64(limit)}, err)}
		}
		if err != nil {
			return Event{}, false, &ConnError{Conn: c.id, Op: "read", Err: err}
		}
		c.rs += n
		if done {
			c.need = 0
			return Event{Kind: MessageRx, Conn: c.id, FD: -1, Data: msg}, true, nil
		}
		if n == 0 {
			c.need = c.re - c.rs + 1
			return Event{}, false, nil
		}
	}
}

// overlaps reports whether a and b share memory.
func overlaps(a, b []byte) bool {
	if cap(a) == 0 || cap(b) == 0 {
		return false
	}
	pa := uintptr(unsafe.Pointer(unsafe.SliceData(a)))
	pb := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return pa < pb+uintptr(cap(b)) && pb < pa+uintptr(cap(a))
}

// needFrom records how many bytes the frame at the start of b needs, once
// its length (a 4-byte big-endian field at lenAt) is known.
func (c *conn) needFrom(b []byte, hdr, lenAt int) {
	if len(b) < hdr {
		c.need = hdr
		return
	}
	c.need = hdr + int(binary.BigEndian.Uint32(b[lenAt:]))
}

func (c *conn) tooLarge(n int64, limit int) error {
	return &ConnError{Conn: c.id, Op: "read", Err: &SizeError{Size: n, Max: int64(limit)}}
}

// relay passes a message that arrived on one side of a switch to the
// other, through the side's transform.
func (c *conn) relay(p *conn, ev Event) (Event, bool) {
	l := c.l
	out, res := ev.Data, Forward
	if c.xform != nil {
		out, res = c.xform(l.scratch[:0], ev.Data)
		// A larger result is the scratch from now on, unless it is (part
		// of) the message itself, which lies in the connection's read
		// buffer: the next transform would write over unread input.
		if cap(out) > cap(l.scratch) && !overlaps(out[:cap(out)], ev.Data) {
			l.scratch = out[:0]
		}
	}
	switch res {
	case Forward:
		if err := p.schedule(ev.UserType, out, true); err != nil {
			c.end(err)
			return Event{}, false
		}
	case Ignore:
	default:
		cause := &ConnError{Conn: c.id, Op: "switch", Err: fmt.Errorf("%w: transform ended the switch (%d)", ErrClosed, res)}
		if res == FDClosing {
			cause = nil
		}
		c.end(cause)
		return Event{}, false
	}
	ev.Kind = SwitchRx
	return ev, true
}

// Write side.

// frameIOV builds the iovecs of one frame: headers in c.hdrs, the payload
// uncopied. The result is valid until the next call; the caller holds wmu.
func (c *conn) frameIOV(userType uint8, p []byte) ([]unix.Iovec, error) {
	if len(p) > c.l.opts.maxMessage {
		return nil, &ConnError{Conn: c.id, Op: "write", Err: &SizeError{Size: int64(len(p)), Max: int64(c.l.opts.maxMessage)}}
	}
	c.hdrs = c.hdrs[:0]
	c.iov = c.iov[:0]
	var err error
	switch c.format {
	case LibIPC:
		if len(p) == 0 {
			return nil, &ConnError{Conn: c.id, Op: "write", Err: frame.ErrEmptyFrame}
		}
		if c.hdrs, err = frame.AppendLibIPCHeader(c.hdrs, len(p)); err != nil {
			return nil, &ConnError{Conn: c.id, Op: "write", Err: &SizeError{Size: int64(len(p)), Max: frame.LibIPCMaxPayload}}
		}
		c.iov = append(c.iov, iovec(c.hdrs), iovec(p))
	case LibIPCC:
		if len(p) > maxCSend {
			return nil, &ConnError{Conn: c.id, Op: "write", Err: &SizeError{Size: int64(len(p)), Max: maxCSend}}
		}
		c.hdrs, _ = frame.AppendLibIPCCHeader(c.hdrs, frame.CData, userType, len(p))
		c.iov = append(c.iov, iovec(c.hdrs), iovec(p))
	default:
		n := (len(p) + frame.MaxPayloadSize - 1) / frame.MaxPayloadSize
		// Room for every header first, so the iovecs that point into
		// hdrs stay valid while it is filled.
		c.hdrs = slices.Grow(c.hdrs, 4*n+4)
		for i := 0; i < n; i++ {
			chunk := p[i*frame.MaxPayloadSize : min(len(p), (i+1)*frame.MaxPayloadSize)]
			h := len(c.hdrs)
			c.hdrs, _ = frame.AppendHeader(c.hdrs, len(chunk))
			c.iov = append(c.iov, iovec(c.hdrs[h:]), iovec(chunk))
		}
		h := len(c.hdrs)
		c.hdrs = frame.AppendFlush(c.hdrs)
		c.iov = append(c.iov, iovec(c.hdrs[h:]))
	}
	return c.iov, nil
}

// maxCSend is the most a C LibIPC peer can hold in one frame.
const maxCSend = 1999988

func iovec(b []byte) unix.Iovec {
	v := unix.Iovec{}
	if len(b) > 0 {
		v.Base = &b[0]
	}
	v.SetLen(len(b))
	return v
}

// iovMax is the kernel's limit on iovecs per writev.
const iovMax = 1024

// The socket calls of a connection cannot wait (its descriptor is
// non-blocking), so they are raw system calls: an ordinary one, the first
// after the process went idle, wakes the runtime's monitor thread, which
// then polls every 20 microseconds until the process is idle again.

// rawIO is read(2) or write(2) (trap) of p on the non-blocking fd, as a
// raw system call.
func rawIO(trap uintptr, fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// writev writes what it can of iov without blocking.
func writev(fd int, iov []unix.Iovec) (int, error) {
	for len(iov) > 0 && iov[0].Len == 0 {
		iov = iov[1:]
	}
	if len(iov) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(min(len(iov), iovMax)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// advance drops n written bytes from the front of iov.
func advance(iov []unix.Iovec, n int) []unix.Iovec {
	for len(iov) > 0 && n >= int(iov[0].Len) {
		n -= int(iov[0].Len)
		iov = iov[1:]
	}
	if n > 0 {
		iov[0].Base = (*byte)(unsafe.Add(unsafe.Pointer(iov[0].Base), n))
		iov[0].SetLen(int(iov[0].Len) - n)
	}
	return iov
}

func iovLen(iov []unix.Iovec) int {
	t := 0
	for i := range iov {
		t += int(iov[i].Len)
	}
	return t
}

// write is Write: FIFO after anything scheduled, then the frame straight
// from p, waiting for the socket up to the write timeout.
func (c *conn) write(userType uint8, p []byte) error {
	c.wmu.Lock()
	defer c.unlockW()
	if c.wclosed {
		return &ConnError{Conn: c.id, Op: "write", Err: ErrClosed}
	}
	deadline := time.Now().Add(c.l.opts.writeTimeout)
	for c.outHead < len(c.outq) {
		if err := c.flushLocked(); err != nil {
			return err
		}
		if c.outHead < len(c.outq) {
			if err := c.waitWritable(deadline); err != nil {
				return err
			}
		}
	}
	iov, err := c.frameIOV(userType, p)
	if err != nil {
		return err
	}
	total, sent := iovLen(iov), 0
	for sent < total {
		n, err := writev(c.fd, iov)
		switch err {
		case nil:
			sent += n
			iov = advance(iov, n)
		case unix.EINTR:
		case unix.EAGAIN:
			if werr := c.waitWritable(deadline); werr != nil {
				if sent > 0 {
					// Half a frame is in the stream: nothing can follow it.
					c.fail(werr)
				}
				return werr
			}
		default:
			werr := &ConnError{Conn: c.id, Op: "write", Err: os.NewSyscallError("writev", err)}
			c.fail(werr)
			return werr
		}
	}
	return nil
}

// waitWritable waits in poll(2) for room in the socket until deadline.
func (c *conn) waitWritable(deadline time.Time) error {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return &ConnError{Conn: c.id, Op: "write", Err: ErrWriteTimeout}
		}
		pfd := [1]unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(pfd[:], int((left+time.Millisecond-1)/time.Millisecond))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &ConnError{Conn: c.id, Op: "write", Err: os.NewSyscallError("poll", err)}
		}
		if n > 0 {
			if pfd[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
				werr := &ConnError{Conn: c.id, Op: "write", Err: io.ErrClosedPipe}
				c.fail(werr)
				return werr
			}
			return nil
		}
	}
}

// fail ends the write side after a torn frame or a socket error; the read
// side then sees the end and reports Disconnection with cause (see
// failedOr). Caller holds wmu.
func (c *conn) fail(cause error) {
	c.wclosed = true
	c.failed.Store(&cause)
	unix.Shutdown(c.fd, unix.SHUT_RDWR)
	c.dropQueueLocked(cause)
}

// failedOr is the cause a Disconnection reports: the write side's
// failure when a writer ended the connection, else cause.
func (c *conn) failedOr(cause error) error {
	if f := c.failed.Load(); f != nil {
		return *f
	}
	return cause
}

// schedule is Schedule (relay: a switch's message, reported as SwitchTx,
// and let past the queue's bound: its sender pauses instead).
func (c *conn) schedule(userType uint8, p []byte, relay bool) error {
	c.wmu.Lock()
	defer c.unlockW()
	if c.wclosed {
		return &ConnError{Conn: c.id, Op: "schedule", Err: ErrClosed}
	}
	queued := len(c.outq) - c.outHead
	// One message always fits an empty queue, however large: the bound
	// is on what waits behind a peer that does not read.
	if !relay && queued > 0 && (queued >= c.l.opts.queueMsgs || c.outBytes+len(p) > c.l.opts.queueBytes) {
		return &ConnError{Conn: c.id, Op: "schedule", Err: fmt.Errorf("%w: %d messages, %d bytes queued", ErrQueueFull, queued, c.outBytes)}
	}
	iov, err := c.frameIOV(userType, p)
	if err != nil {
		return err
	}
	sent := 0
	if queued == 0 {
		// Nothing ahead of it: try the socket now.
		for {
			n, err := writev(c.fd, iov)
			if err == unix.EINTR {
				continue
			}
			if err != nil && err != unix.EAGAIN {
				werr := &ConnError{Conn: c.id, Op: "schedule", Err: os.NewSyscallError("writev", err)}
				c.fail(werr)
				return werr
			}
			sent = n
			break
		}
		if sent == iovLen(iov) {
			c.txDone(relay)
			return nil
		}
	}
	b := bytebufferpool.Get()
	for i := range iov {
		b.B = append(b.B, unsafe.Slice(iov[i].Base, iov[i].Len)...)
	}
	c.outq = append(c.outq, outMsg{buf: b, off: sent, relay: relay})
	c.outBytes += len(b.B) - sent
	c.watchOut(true)
	if relay && c.outBytes > c.l.opts.queueBytes {
		if p := c.peer.Load(); p != nil {
			p.paused.Store(true)
		}
	}
	return nil
}

// watchOut asks epoll to report the socket writable while frames wait,
// and only then: a socket watched for room all the time would wake the
// Loop each time the peer reads. Caller holds wmu and the connection is
// open.
func (c *conn) watchOut(on bool) {
	if c.outWatched == on {
		return
	}
	c.outWatched = on
	ev := c.epollEvent(connEvents)
	if on {
		ev.Events |= unix.EPOLLOUT
	}
	unix.EpollCtl(c.l.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev)
}

// txDone counts a scheduled frame written and gives c a turn to report
// it. The report comes from c's turn, not the queue's tail, so that it
// precedes any message c's turn reads later (a reply to that frame).
func (c *conn) txDone(relay bool) {
	if relay {
		c.relayTx.Add(1)
	} else {
		c.msgTx.Add(1)
	}
	c.l.pushToken(c)
}

// nextTx returns a MessageTx or SwitchTx owed by c, if any.
func (c *conn) nextTx() (Event, bool) {
	for _, k := range [2]struct {
		n    *atomic.Int32
		kind Kind
	}{{&c.msgTx, MessageTx}, {&c.relayTx, SwitchTx}} {
		for {
			n := k.n.Load()
			if n == 0 {
				break
			}
			if k.n.CompareAndSwap(n, n-1) {
				return Event{Kind: k.kind, Conn: c.id, FD: -1}, true
			}
		}
	}
	return Event{}, false
}

func txKind(relay bool) Kind {
	if relay {
		return SwitchTx
	}
	return MessageTx
}

// flushLocked writes queued frames until the socket is full, batching
// them in one writev, and reports each one written. Caller holds wmu.
func (c *conn) flushLocked() error {
	for c.outHead < len(c.outq) {
		c.iov = c.iov[:0]
		for i := c.outHead; i < len(c.outq) && len(c.iov) < 64; i++ {
			m := &c.outq[i]
			c.iov = append(c.iov, iovec(m.buf.B[m.off:]))
		}
		n, err := writev(c.fd, c.iov)
		switch err {
		case nil:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return nil
		default:
			werr := &ConnError{Conn: c.id, Op: "write", Err: os.NewSyscallError("writev", err)}
			c.fail(werr)
			return werr
		}
		c.outBytes -= n
		for n > 0 {
			m := &c.outq[c.outHead]
			left := len(m.buf.B) - m.off
			if n < left {
				m.off += n
				break
			}
			n -= left
			c.txDone(m.relay)
			bytebufferpool.Put(m.buf)
			*m = outMsg{}
			c.outHead++
		}
	}
	c.outq = c.outq[:0]
	c.outHead = 0
	c.watchOut(false)
	if p := c.peer.Load(); p != nil && p.paused.CompareAndSwap(true, false) {
		c.l.pushToken(p)
	}
	return nil
}

// dropQueueLocked reports every queued frame as dropped with cause and
// frees it. Caller holds wmu.
func (c *conn) dropQueueLocked(cause error) {
	c.wclosed = true
	// Frames written but not yet reported are reported first, in order.
	for ev, ok := c.nextTx(); ok; ev, ok = c.nextTx() {
		c.l.post(c, ev)
	}
	for i := c.outHead; i < len(c.outq); i++ {
		m := &c.outq[i]
		c.l.post(c, Event{Kind: txKind(m.relay), Conn: c.id, FD: -1, Err: &ConnError{Conn: c.id, Op: "schedule", Err: fmt.Errorf("%w: %w", ErrClosed, orClosed(cause))}})
		bytebufferpool.Put(m.buf)
		*m = outMsg{}
	}
	c.outq = c.outq[:0]
	c.outHead = 0
	c.outBytes = 0
}

func orClosed(err error) error {
	if err == nil {
		return io.EOF
	}
	return err
}

// kick flushes after the socket became writable. If a writer holds wmu,
// the flush is left to it (see unlockW), so the Loop never waits for a
// blocked Write.
func (c *conn) kick() {
	c.pending.Store(true)
	c.flushPending()
}

func (c *conn) flushPending() {
	for c.pending.Load() && c.wmu.TryLock() {
		c.pending.Store(false)
		if !c.wclosed {
			c.flushLocked()
		}
		c.wmu.Unlock()
	}
}

// unlockW releases wmu and does a flush the Loop asked for meanwhile.
func (c *conn) unlockW() {
	c.wmu.Unlock()
	if c.pending.Load() {
		c.flushPending()
	}
}

package engine

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// writeDirect writes all of b on the worker's duplicate of the socket. A
// full socket makes the worker wait in the netpoller for the peer to read,
// until the write deadline; it fails when the deadline passes, the peer is
// gone, or the loop closed the connection.
func (c *conn) writeDirect(b []byte) error {
	for len(b) > 0 { // at once, while the socket takes it
		n, err := sysWrite(uintptr(c.wfd), b)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			c.wb, c.wn, c.werr = b, 0, nil
			c.armWriteDeadline()
			if err := c.wrc.Write(c.writeCB); err != nil || c.werr != nil {
				c.wb = nil
				return net.ErrClosed
			}
			c.wb = nil
			return nil
		case err != nil:
			return net.ErrClosed
		}
		b = b[n:]
	}
	return nil
}

// writeDirectGathered is writeDirect of the pieces in wgw (writev), for a
// large part of a pooled reply that goes out from the handler's bytes.
func (c *conn) writeDirectGathered() error {
	done, err := c.wgw.writeSome(uintptr(c.wfd), &c.wiov)
	if err != nil {
		return net.ErrClosed
	}
	if done {
		return nil
	}
	c.werr = nil
	c.armWriteDeadline()
	if err := c.wrc.Write(c.gatherCB); err != nil || c.werr != nil {
		return net.ErrClosed
	}
	return nil
}

// armWriteDeadline gives the worker's wait for room on wf the write
// timeout. Under mu, as onClose's past deadline (which makes a waiting
// worker give up) is set: a close that came first keeps its deadline, and
// one that comes later sets it after this one. A rescued connection's
// worker finishes its reply, so its wait gets the timeout.
func (c *conn) armWriteDeadline() {
	d := c.s.opts.writeTimeout
	if d <= 0 {
		return
	}
	c.mu.Lock()
	if !c.closed.Load() || c.rescue != nil {
		_ = c.wf.SetWriteDeadline(time.Now().Add(d))
	}
	c.mu.Unlock()
}

// writeGathered is the RawConn.Write callback of writeDirectGathered.
func (c *conn) writeGathered(fd uintptr) bool {
	done, err := c.wgw.writeSome(fd, &c.wiov)
	if err != nil {
		c.werr = err
	}
	return done
}

// writeSome is the RawConn.Write callback of writeDirect: it writes what
// the socket takes, and asks the netpoller to wait when it takes no more.
func (c *conn) writeSome(fd uintptr) bool {
	done, err := writeAvailable(fd, c.wb, &c.wn)
	if err != nil {
		c.werr = err
	}
	return done
}

// openWriteFD makes the worker's duplicate of the socket if there is none.
// It runs on the loop. Without one (descriptor table full) replies go
// through the loop.
func (c *conn) openWriteFD() bool {
	if c.wf == nil {
		fd, err := c.gc.Dup()
		if err != nil {
			return false
		}
		// Non-blocking like gnet's (the flag is the socket's), so the
		// file is pollable.
		f := os.NewFile(uintptr(fd), "pktipc-reply")
		rc, err := f.SyscallConn()
		if err != nil {
			_ = f.Close()
			return false
		}
		c.wf, c.wfd, c.wrc = f, fd, rc
		c.writeCB = c.writeSome
		c.gatherCB = c.writeGathered
	}
	return true
}

// closeWriteFD closes the duplicate; the caller holds mu.
func (c *conn) closeWriteFD() {
	if c.workerIO != nil && c.wf != nil {
		_ = c.wf.Close()
		c.wf, c.wfd, c.wrc = nil, -1, nil
	}
}

// dupConn duplicates the socket of a gnet connection as a *net.UnixConn,
// which lives on after gnet closes its descriptor.
func dupConn(gc transport) (*net.UnixConn, error) {
	fd, err := gc.Dup()
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "pktipc-rescue")
	nc, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		return nil, err
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		_ = nc.Close()
		return nil, fmt.Errorf("engine: duplicated socket is %T", nc)
	}
	return uc, nil
}

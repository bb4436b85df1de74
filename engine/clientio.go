package engine

import (
	"errors"
	"io"
	"os"
	"syscall"

	"github.com/pktipc/pktipc/frame"
)

// The Client's socket I/O: raw non-blocking system calls inside RawConn
// callbacks, so that a wait for a reply can spin on the socket before the
// netpoller parks the goroutine. Only the owner goroutine runs these.

// write writes the whole message of req on the open connection.
func (c *Client) write(req []byte) error {
	if c.rout != nil {
		return c.writeRing(req)
	}
	c.wbuf = frame.AppendMessage(c.wbuf[:0], req)
	c.woff, c.werr = 0, nil
	if err := c.rc.Write(c.writeFn); err != nil && c.werr == nil {
		c.werr = err
	}
	c.trimWriteBuffer()
	return c.werr
}

// trimWriteBuffer lets go of a write buffer grown past clientKeep by a
// large request, once nothing staged lies in it: kept, one large request
// would hold its size for the Client's life.
func (c *Client) trimWriteBuffer() {
	if c.unsent == 0 && cap(c.wbuf) > clientKeep {
		c.wbuf = nil
	}
}

// readReply reads the reply at the head of the open connection.
func (c *Client) readReply() ([]byte, error) {
	if c.rin != nil {
		return c.readRingReply()
	}
	clientWaits.add(1)
	c.spin.plan(c.now(), c.inflight)
	msg, err := c.readReplySpinning()
	c.spin.end()
	clientWaits.add(-1)
	return msg, err
}

func (c *Client) readReplySpinning() ([]byte, error) {
	for {
		if c.rend > c.rstart {
			msg, n, done, err := c.asm.Next(c.rbuf[c.rstart:c.rend])
			if err != nil {
				return nil, err
			}
			c.rstart += n
			if done {
				c.spin.learn(c.now(), c.inflight)
				if c.rstart == c.rend {
					c.rstart, c.rend = 0, 0
				}
				return msg, nil
			}
			if n > 0 {
				continue
			}
		}
		if err := c.fill(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, c.asm.Truncated(c.rend - c.rstart)
			}
			return nil, err
		}
	}
}

// clientPlanPackets is how many whole packets of a large reply a read may
// put straight into the reply's buffer, beyond the rest of the packet
// under way (frame.Assembler.Plan); without readv, none.
var clientPlanPackets = planPackets(1)

// fill reads more bytes into the buffer, compacting or growing it first.
// When the buffer is empty and the assembler is gathering a large reply,
// the read puts the reply's next bytes straight into the assembler's
// buffer, uncopied, and what follows into the buffer, all in one system
// call.
func (c *Client) fill() error {
	if c.rstart == c.rend {
		c.rstart, c.rend = 0, 0
		if plan := c.asm.Plan(clientPlanPackets); plan != nil {
			return c.fillPlanned(plan)
		}
	}
	if c.rstart > 0 {
		c.rend = copy(c.rbuf, c.rbuf[c.rstart:c.rend])
		c.rstart = 0
	}
	if c.rend == len(c.rbuf) {
		if len(c.rbuf) >= frame.MinReadBuffer {
			return errors.New("engine: reply buffer full") // cannot happen: the assembler gathers
		}
		c.growBuffer()
	}
	c.rn, c.rerr = 0, nil
	if err := c.rc.Read(c.readFn); err != nil && c.rerr == nil {
		c.rerr = err
	}
	if c.rerr != nil {
		return c.rerr
	}
	if c.rn == 0 {
		return io.EOF
	}
	c.rend += c.rn
	return nil
}

func (c *Client) growBuffer() {
	nb := make([]byte, min(2*len(c.rbuf), frame.MinReadBuffer))
	copy(nb, c.rbuf[:c.rend])
	c.rbuf = nb
}

// fillPlanned is fill into the assembler's pieces, then the buffer. The
// buffer's first bytes stay free for what the assembler may hand back
// (Filled), which goes in front of what was read after the pieces.
func (c *Client) fillPlanned(plan [][]byte) error {
	for len(c.rbuf) < frame.MinReadBuffer {
		c.growBuffer()
	}
	planned, room := planSpan(plan)
	c.rplan, c.rtail = plan, c.rbuf[room:]
	c.rn, c.rerr = 0, nil
	if err := c.rc.Read(c.readFn); err != nil && c.rerr == nil {
		c.rerr = err
	}
	c.rplan, c.rtail = nil, nil
	if c.rerr != nil {
		return c.rerr
	}
	if c.rn == 0 {
		return io.EOF
	}
	k := min(c.rn, planned)
	spill := c.asm.Filled(k)
	c.rstart = room - copy(c.rbuf[room-len(spill):room], spill)
	c.rend = room + c.rn - k
	return nil
}

// readSys is the read of readOnce: into the buffer, or into the
// assembler's pieces and then the buffer (fillPlanned).
func (c *Client) readSys(fd uintptr) (int, error) {
	if c.rplan != nil {
		return readInto(fd, c.rplan, c.rtail, &c.iov)
	}
	return sysRead(fd, c.rbuf[c.rend:])
}

// readOnce is the RawConn.Read callback: it reads what is there, spins
// while the plan allows, and otherwise lets the netpoller park the
// goroutine (return false).
func (c *Client) readOnce(fd uintptr) bool {
	for {
		n, err := c.readSys(fd)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			if c.spin.until == 0 || c.closed.Load() {
				return false
			}
			now := c.now()
			if d := c.deadlineNS.Load(); d != 0 && now >= d {
				c.rerr = os.ErrDeadlineExceeded
				return true
			}
			if now >= c.spin.until {
				c.spin.end() // parked once; do not spin again for this reply
				return false
			}
			continue
		case err != nil:
			c.rerr = err
			return true
		}
		c.rn = n
		return true
	}
}

// writeOnce is the RawConn.Write callback: it writes until done or the
// socket is full (then the netpoller waits for room).
func (c *Client) writeOnce(fd uintptr) bool {
	done, err := writeAvailable(fd, c.wbuf, &c.woff)
	if err != nil {
		c.werr = err
	}
	return done
}

// writeGathered is the RawConn.Write callback of SendUncopied: writev of
// the request's pieces until done or the socket is full.
func (c *Client) writeGathered(fd uintptr) bool {
	done, err := c.gw.writeSome(fd, &c.iov)
	if err != nil {
		c.werr = err
	}
	return done
}

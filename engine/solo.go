package engine

import (
	"errors"
	"syscall"
)

// Solo waiting. An event loop that serves a single persistent connection
// and has just answered it would go back to gnet's poller, which calls
// epoll_wait with a zero timeout, then runtime.Gosched (waking an idle
// thread of the runtime through a futex, only for it to find nothing and
// sleep again), then a blocking epoll_wait, and then read: five system calls
// and two context switches per round trip. Instead the loop waits on the
// connection itself with ppoll (and on its doorbell), reads the next request
// into its own buffer and serves it there: ppoll, read, write per round trip,
// no futex, as a blocking C server does. Whatever else may need the loop
// rings its doorbell: the accept loop before it enrolls a connection (the
// loop may be the one gnet picks), a stopping server, and the reaper at every
// tick, after it closed connections or queued tasks, so that anything gnet
// queued for the loop that nobody announced waits at most a tick. Bytes read this way that are not consumed at once
// (a partial request, requests pipelined behind a pooled one or behind
// back-pressure) stay in conn.pend, ahead of anything gnet reads later.

// soloReadBuffer is the loop's own read buffer for solo waits, as large as
// gnet's: a message of up to three maximal packets fits whole, and larger
// ones make progress (frame.MinReadBuffer).
const soloReadBuffer = readBufferCap

// soloPlanPackets is how many whole packets of a large request a solo read
// may put straight into the request's buffer, beyond the rest of the
// packet under way (frame.Assembler.Plan); what the assembler may hand back
// takes as much of the loop's buffer.
var soloPlanPackets = planPackets(2)

// canSoloWait reports whether the loop may wait on c alone: a persistent
// connection with no reply queued and no other connection on the loop,
// either at rest or in the middle of a request whose bytes so far the loop
// read itself.
func (c *conn) canSoloWait() bool {
	l := c.loop
	if !c.s.opts.soloWait || !c.persistent || l.conns != 1 || l.bell == nil || c.closed.Load() ||
		c.gc.InboundBuffered() != 0 || c.gc.OutboundBuffered() != 0 {
		return false
	}
	switch c.phase {
	case phaseIdle:
		return len(c.pend) == 0
	case phaseReading:
		return c.pendBuf == nil
	}
	return false
}

// soloWait serves c's next requests from the loop while the loop may wait on
// it alone. It returns when a wait ends without a request (the doorbell
// rang) or when the connection must close. It runs on the event loop,
// inside OnTraffic.
func (c *conn) soloWait() action {
	l, s := c.loop, c.s
	fd := c.gc.Fd()
	for c.canSoloWait() {
		// Dekker with wakeParked: either a waker sees parked, or the loop
		// sees what the waker announced first.
		if !s.park(l, &s.stopping) {
			break // nothing armed: enter has run since the last spin
		}
		// A busy poll (WithBusyPoll) looks first: a request that comes
		// meanwhile finds the loop awake. It counts as parked, so that
		// wakers ring the bell it looks at too.
		ready := l.exit(s, c.phase == phaseIdle, fd, l.bell.lfd)
		var err error
		if !ready {
			ready, err = waitReadable(&l.pfds, fd, l.bell.lfd)
		}
		s.unpark(l)
		if err != nil || !ready {
			break // rang or interrupted: gnet takes over
		}
		if l.rbuf == nil {
			l.rbuf = make([]byte, soloReadBuffer)
		}
		var plan [][]byte
		if len(c.pend) == 0 && c.asm != nil {
			plan = c.asm.Plan(soloPlanPackets)
		}
		k := copy(l.rbuf, c.pend) // the start of a request read before, if any
		if k == len(l.rbuf) {
			break // cannot happen: the assembler absorbs before that
		}
		var n, planned, room int
		if plan != nil {
			// The request's next bytes go straight into the assembler's
			// buffer, uncopied, and what follows into the loop's, in one
			// system call. The loop's first bytes stay free for what the
			// assembler may hand back.
			planned, room = planSpan(plan)
			n, err = readInto(uintptr(fd), plan, l.rbuf[room:], &l.iov)
		} else {
			n, err = sysRead(uintptr(fd), l.rbuf[k:])
		}
		switch {
		case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR):
			n = 0
		case err != nil || n == 0:
			c.dropPend()
			return closeConn // the peer left; gnet would close too
		}
		if plan != nil {
			if n == 0 {
				break
			}
			d := min(n, planned)
			spill := c.asm.Filled(d)
			start := room - copy(l.rbuf[room-len(spill):room], spill)
			c.pend = l.rbuf[start : room+n-d]
		} else {
			c.pend = l.rbuf[:k+n]
			if n == 0 {
				break
			}
		}
		s.stats.soloReads.Add(1)
		now := s.now()
		l.enter(now)
		if act := c.process(now); act != keepConn {
			c.dropPend()
			return act
		}
	}
	c.keepPend()
	return keepConn
}

// buffered is how many request bytes wait: those the loop read itself, then
// gnet's.
func (c *conn) buffered() int { return len(c.pend) + c.gc.InboundBuffered() }

// peek returns up to n of the waiting bytes. The slice is valid until the
// next discard or until the loop returns to gnet.
func (c *conn) peek(n int) []byte {
	if len(c.pend) == 0 {
		b, _ := c.gc.Peek(n)
		return b
	}
	if n > len(c.pend) && c.gc.InboundBuffered() > 0 {
		// Rare: a message goes on from pend into gnet's buffer. Join them.
		c.ownPend()
		b, _ := c.gc.Peek(-1)
		c.pendBuf.B = append(c.pendBuf.B, b...)
		c.pend = c.pendBuf.B
		_, _ = c.gc.Discard(-1)
	}
	return c.pend[:min(n, len(c.pend))]
}

// discard consumes n waiting bytes; n never exceeds what peek returned.
func (c *conn) discard(n int) {
	if len(c.pend) == 0 {
		_, _ = c.gc.Discard(n)
		return
	}
	c.pend = c.pend[n:]
	if len(c.pend) == 0 {
		c.dropPend()
	}
}

// ownPend leaves pend at the start of a buffer of its own: out of the loop's
// read buffer, or moved down over consumed bytes.
func (c *conn) ownPend() {
	if c.pendBuf == nil {
		c.pendBuf = bufPool.Get()
		c.pendBuf.B = append(c.pendBuf.B[:0], c.pend...)
	} else {
		c.pendBuf.B = c.pendBuf.B[:copy(c.pendBuf.B, c.pend)]
	}
	c.pend = c.pendBuf.B
}

// keepPend makes unconsumed bytes outlive the loop's read buffer.
func (c *conn) keepPend() {
	if len(c.pend) > 0 && c.pendBuf == nil {
		c.ownPend()
	}
}

func (c *conn) dropPend() {
	c.pend = nil
	if c.pendBuf != nil {
		c.pendBuf.B = c.pendBuf.B[:cap(c.pendBuf.B)] // see ReplyWriter.release
		bufPool.Put(c.pendBuf)
		c.pendBuf = nil
	}
}

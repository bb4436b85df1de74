package engine

import (
	"errors"
	"io"
	"net"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/pktipc/pktipc/frame"
)

// events adapts the Server to gnet's callbacks.
type events struct {
	gnet.BuiltinEventEngine
	s *Server
}

func (e *events) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	if b, ok := gc.Context().(*doorbell); ok {
		b.lfd = gc.Fd()
		e.s.registerBell(gc.EventLoop(), b)
		return nil, gnet.None
	}
	c := gc.Context().(*conn)
	c.gc, c.link.g = gc, gc
	e.s.adm.register(c)
	e.s.attach(c)
	c.toIdle(e.s.now())
	return nil, gnet.None
}

func (e *events) OnTraffic(gc gnet.Conn) gnet.Action {
	c, ok := gc.Context().(*conn)
	if !ok {
		gc.Context().(*doorbell).answer(gc)
		return gnet.None
	}
	now := e.s.now()
	c.loop.enter(now)
	var act action
	switch c.phase {
	case phaseHandling, phaseDraining:
		// A request is in progress; later bytes wait in gnet's buffer.
		if c.buffered() > c.s.opts.maxRequest+frame.MaxPacketSize {
			c.s.stats.protocolErrors.Add(1)
			act = closeConn
		}
	default:
		act = c.process(now)
	}
	if act == keepConn && !c.account() {
		act = closeConn
	}
	candidate := act == keepConn && c.persistent && c.phase == phaseIdle && (c.s.opts.inline || c.s.opts.inlineFilter != nil)
	if candidate && c.canSoloWait() {
		return c.soloWait().gnetAction() // it spins first if busy polling is on
	}
	// A reply still queued in gnet goes out when the loop returns: no spin
	// for a request the client cannot send before it has the reply.
	candidate = candidate && c.gc.OutboundBuffered() == 0
	bell := -1
	if c.loop.bell != nil {
		bell = c.loop.bell.lfd
	}
	c.loop.exit(e.s, candidate, gc.Fd(), bell) // gnet's poller finds what a spin caught
	return act.gnetAction()
}

func (e *events) OnClose(gc gnet.Conn, err error) gnet.Action {
	if c, ok := gc.Context().(*conn); ok {
		c.onClose(err)
	}
	return gnet.None
}

// onClose runs on the loop when gnet closes the connection, for whatever
// reason.
func (c *conn) onClose(err error) {
	c.closed.Store(true)
	c.unwatchWrite()
	evicted := c.unaccount()
	// Whether the loop stopped between messages: with part of one taken
	// into the assembler, the bytes after it are no request of their own.
	between := c.asm == nil || c.asm.Truncated(0) == io.EOF
	if c.asm != nil {
		c.asm.Release()
	}
	s := c.s
	s.budget.released(evicted)
	// gnet closes on EOF even when the peer only shut down its writing
	// side; a pooled handler (or a tail's writer) still working for such
	// a peer gets a duplicate of the socket to finish its reply on, and
	// the requests the peer pipelined behind it, unread by the loop
	// meanwhile, to serve after it (serveLeftover).
	// Not one past a deadline whose close the reaper queued: the peer's
	// half close came first, but the handler's time is up all the same.
	halfClosed := errors.Is(err, io.EOF) && c.phase == phaseHandling && c.expired.Load() == 0 &&
		!s.closing.Load() && peerHalfClosed(c.gc.Fd())
	var rest []byte
	if halfClosed && c.persistent && between && c.buffered() > 0 {
		rest = append([]byte(nil), c.peek(c.buffered())...)
	}
	c.dropPend()
	if c.phase != phaseHandling {
		c.dropTail() // an inline reply cut short: nobody to finish it
	}
	if halfClosed && s.rescues.add(c) { // before the rescue is published: letGo takes c out
		c.mu.Lock()
		if !c.workerGone {
			if rc, derr := dupConn(c.gc); derr == nil {
				c.rescue = rc
				c.leftover = rest
				s.stats.rescued.Add(1)
			}
		}
		rescued := c.rescue != nil
		c.mu.Unlock()
		if !rescued {
			s.rescues.remove(c)
		}
	}
	if s.closing.Load() && c.phase == phaseHandling {
		// Close: the worker's duplicate of the socket must not keep the
		// connection open while its handler runs on.
		_ = sysShutdown(c.gc.Fd())
	}
	c.mu.Lock()
	rescued := c.rescue != nil
	if c.phase != phaseHandling || c.workerGone {
		c.closeWriteFD() // else the worker closes it when it is done
	} else if c.workerIO != nil && c.wf != nil && !rescued {
		_ = c.wf.SetWriteDeadline(time.Unix(1, 0)) // a worker waiting for room gives up
	}
	c.mu.Unlock()
	if !rescued {
		// The handler, if one runs, has nobody left to answer.
		cause := err
		if w := c.expired.Load(); w != 0 {
			cause = why(w - 1).exceeded()
		} else if cause == nil {
			cause = net.ErrClosed
		}
		c.cancelHandler(cause)
	}
	if c.done != nil {
		close(c.done)
	}
	s.adm.release(c)
	s.detach(c)
	// Buffers are not released here: the dispatching code (inline) or the
	// worker (pooled) owns them and releases them when it returns.
}

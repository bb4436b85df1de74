package engine

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"runtime/debug"

	"github.com/pktipc/pktipc/frame"
)

// peekWindow is the most of the inbound buffer process looks at first.
// gnet's Peek copies when the bytes are split between its ring and the read
// buffer, or wrap around the ring (and then, for a peek that the ring holds
// whole, it allocates the copy afresh each time), so looking at everything
// a pipelining client has sent would copy it all for every request. The
// window is twice the connection's last message, from peekMin up to
// peekWindow, and doubles only while one message needs more (the assembler
// gathers large ones, so it stays near frame.MinReadBuffer): requests that
// queue in gnet's ring while a worker serves the connection are looked at
// a few hundred bytes at a time, not 16 KiB each.
const (
	peekWindow = 16 << 10
	peekMin    = 512
)

// peekStart is the first window for the next message.
func (c *conn) peekStart() int { return min(max(2*c.lastWire, peekMin), peekWindow) }

// process decodes and serves the requests buffered on the connection. It
// runs on the event loop.
//
// Replies to requests that came together leave together: an inline reply
// that has another request waiting behind it stays in the loop's reply
// buffer (replyBatchBytes at most), and process writes them all in one
// call before it returns, or before a pooled request, whose reply a worker
// may write on its own, is dispatched.
func (c *conn) process(now int64) action {
	act := c.serveRequests(now)
	if c.gathering {
		if act == keepConn && !c.closed.Load() {
			act = c.sendPooled(now)
		} else {
			c.gathering = false
			c.dropRequest() // the connection is closing: nobody to answer
		}
	}
	if c.batched {
		if !c.flushBatch() && act == keepConn {
			act = closeConn
		}
		if c.hasTail() && !c.closed.Load() {
			if act == closeConn {
				// The connection ends (a handler panicked, a protocol
				// error, the server stops), but the replies made before
				// that go out whole first: afterReply closes it once the
				// tail's writer is done.
				c.closeAfter = true
				act = keepConn
			}
			c.startTail(now)
		}
	}
	return act
}

// flushBatch writes the batched inline replies; false means the
// connection is closing.
func (c *conn) flushBatch() bool {
	c.batched = false
	w := &c.reply
	if len(c.loop.reply.B) == 0 {
		return !c.closed.Load() // a large reply took the batch along (writeGathered)
	}
	w.buf = c.loop.reply
	err := w.flushInline()
	w.buf = nil
	if c.closed.Load() || (err != nil && !errors.Is(err, ErrBackpressure)) {
		return false
	}
	if c.persistent && c.phase == phaseIdle && c.gc.OutboundBuffered() > c.s.opts.highWater {
		c.startDrain(c.s.now())
	}
	return true
}

// serveRequests is process without the final flush of batched replies.
func (c *conn) serveRequests(now int64) action {
	window := c.peekStart()
	for !c.closed.Load() {
		total := c.buffered()
		if total == 0 {
			return keepConn
		}
		if c.phase == phaseIdle {
			if c.s.stopping.Load() {
				return closeConn // no new requests during shutdown
			}
			c.setPhase(phaseReading)
			c.setDeadline(now, whyRequest)
		}
		buf := c.peek(min(total, window))
		msg, n, done, err := c.assembler().Next(buf)
		if err != nil && c.gathering {
			// The batch read before it goes first; the assembler keeps
			// the error for the next look, after the batch.
			return keepConn
		}
		if err != nil {
			if !errors.Is(err, frame.ErrNoBuffer) { // the budget counted it
				c.s.protocolError(c, err)
			}
			return closeConn
		}
		if !done {
			switch {
			case n > 0:
				c.discard(n) // the assembler copied these packets
			case len(buf) < total:
				window *= 2 // the message goes on beyond the window
			default:
				return keepConn
			}
			continue
		}
		c.lastWire = n
		window = c.peekStart()
		if act, stop := c.dispatch(now, msg, n); stop {
			return act
		}
	}
	return keepConn
}

// dispatch serves one complete request of n wire bytes whose payload is
// msg: the persistent handshake, or a request for the handler, inline or
// on the pool. stop reports that process must return act instead of
// reading on.
func (c *conn) dispatch(now int64, msg []byte, n int) (act action, stop bool) {
	s := c.s
	s.adm.prove(c)
	if !c.persistent && c.served == 0 && s.opts.persistent && bytes.Equal(msg, helloRequest) {
		return c.acceptHello(now, n)
	}
	if !c.persistent && c.served == 0 && s.opts.persistent && bytes.HasPrefix(msg, ringHelloPrefix) {
		if ask, ok := parseRingHello(msg); ok {
			return c.moveToRings(n, ask)
		}
	}
	c.served++
	s.stats.requests.Add(1)
	// A request behind an open pooled batch joins it: its reply must not
	// overtake theirs.
	pooled := !s.opts.inline && (c.gathering || !s.filterInline(msg))
	if pooled && c.batched && !c.flushBatch() {
		return closeConn, true
	}
	c.prepareHandler(pooled)
	if pooled {
		return c.dispatchPooled(now, msg, n)
	}
	return c.serveInline(now, msg, n)
}

// pooledBatchMax and pooledBatchBytes bound a pooled batch: requests of a
// persistent connection that came together, which one worker serves in
// turn, so that a pipelining client costs one hand-off each way per batch
// rather than per request.
const (
	pooledBatchMax   = 64
	pooledBatchBytes = 64 << 10
)

// acceptHello answers the persistent handshake, whose n wire bytes are
// still buffered, and switches c to the persistent mode.
func (c *conn) acceptHello(now int64, n int) (act action, stop bool) {
	c.discard(n)
	c.persistent = true
	c.asm.Release()
	c.asm = nil // the next is made for the persistent mode
	if _, err := c.gc.Write(helloWire); err != nil {
		return closeConn, true
	}
	c.toIdle(now)
	return keepConn, false
}

// dispatchPooled takes the request for a worker (handoff.go): at once, or,
// on a persistent connection with more bytes buffered behind it, as the
// first of a batch that the requests behind it join (stop false: read
// on), up to the batch's bounds; a gathered request (one that spanned
// packets) is not copied and ends the batch. process sends a batch that
// the buffered bytes end. The loop reads no further request of c until
// the worker hands c back.
func (c *conn) dispatchPooled(now int64, msg []byte, n int) (act action, stop bool) {
	c.ensureWorkerIO()
	if c.gathering {
		c.s.stats.poolBatched.Add(1)
	}
	if big := c.asm.Detach(); big != nil {
		c.reqBig, c.reqMsg, c.reqHeld = big, msg, cap(big)
		c.discard(n)
		return c.sendPooled(now), true
	}
	if c.req == nil {
		c.req = bufPool.Get()
		c.req.B = c.req.B[:0]
	}
	c.req.B = append(c.req.B, msg...)
	c.bends = append(c.bends, len(c.req.B))
	c.discard(n)
	if c.persistent && c.buffered() > 0 && len(c.bends) < pooledBatchMax && len(c.req.B) < pooledBatchBytes {
		c.gathering = true
		return keepConn, false
	}
	return c.sendPooled(now), true
}

// sendPooled gives the taken request, or batch, to a worker: the batch's
// last request becomes reqMsg, unless a gathered one already is.
func (c *conn) sendPooled(now int64) action {
	c.gathering = false
	if c.reqMsg == nil {
		k := len(c.bends)
		start := 0
		if k > 1 {
			start = c.bends[k-2]
		}
		c.reqMsg = c.req.B[start:c.bends[k-1]]
		c.bends = c.bends[:k-1]
	}
	if len(c.bends) > 0 {
		c.reqHeld += cap(c.req.B) // the batch's copies, out of gnet's counted buffer now
	}
	c.direct = c.gc.OutboundBuffered() == 0 && c.openWriteFD()
	c.setPhase(phaseHandling)
	c.hstart = now
	c.setDeadline(now, whyHandler)
	select {
	case c.s.jobs <- c:
		// The send made a waiting worker ready on this processor, where
		// it would sit while the loop blocks in epoll_wait until another
		// thread, woken for it, steals it or the scheduler's monitor
		// takes the processor back from the system call (tens of
		// microseconds at best). Yielding runs it here at once, with the
		// request warm in this core's cache; the loop goes to the global
		// run queue, which the woken thread serves (with one processor,
		// the loop runs again once the worker blocks or ends).
		runtime.Gosched()
		return keepConn
	default:
		// Unreachable while the queue holds a request per admitted
		// connection; if it were full, do as git does: close without a
		// reply.
		c.dropRequest()
		c.s.stats.overloaded.Add(1)
		return closeConn
	}
}

// serveInline runs the handler on the loop and queues its reply; msg lies
// in the loop's buffers until the n wire bytes are discarded.
func (c *conn) serveInline(now int64, msg []byte, n int) (act action, stop bool) {
	s := c.s
	c.reply.begin(true)
	herr, panicked := s.call(c, msg)
	c.discard(n)
	if c.closed.Load() {
		c.reply.buf.B = c.reply.buf.B[:0] // nobody to answer
		c.batched = false
		c.reply.release()
		return keepConn, true
	}
	if panicked || c.reply.err != nil {
		c.reply.buf.B = c.reply.buf.B[:c.reply.start] // the replies before it still go out
		c.reply.release()
		return closeConn, true
	}
	if errors.Is(herr, ErrQuit) {
		s.requestQuit()
	}
	c.reply.buf.B = frame.AppendFlush(c.reply.buf.B)
	if c.persistent && len(c.reply.buf.B) < replyBatchBytes && !s.stopping.Load() && c.buffered() > 0 &&
		c.outbound() <= s.opts.highWater && !c.hasTail() {
		// Another request waits: this reply leaves with its reply.
		c.batched = true
		s.stats.batched.Add(1)
		c.reply.release()
		c.toIdle(now)
		return keepConn, false
	}
	c.batched = false
	err := c.reply.flushInline()
	c.reply.release()
	if c.closed.Load() {
		return keepConn, true
	}
	if err != nil && !errors.Is(err, ErrBackpressure) {
		return closeConn, true
	}
	if c.hasTail() {
		c.startTail(now) // the loop takes c back once the peer has read it
		return keepConn, true
	}
	return c.afterReply(now)
}

// dropRequest releases the request's buffer; its owner (the loop before
// dispatch, the worker after) calls it.
func (c *conn) dropRequest() {
	if c.workerIO == nil {
		return // no request was ever copied
	}
	if c.reqBig != nil {
		c.s.budget.put(c.reqBig)
		c.reqBig = nil
	}
	if c.req != nil {
		bufPool.Put(c.req)
		c.req = nil
	}
	c.reqMsg = nil
	c.bends = c.bends[:0]
}

// afterReply decides what follows a reply that is wholly queued: close (git
// style), wait for the peer to read, or serve the next request.
func (c *conn) afterReply(now int64) (action, bool) {
	out := c.gc.OutboundBuffered()
	if !c.persistent || c.s.stopping.Load() || c.closeAfter {
		if out == 0 {
			return closeConn, true
		}
		c.closeWhenRead(now)
		return keepConn, true
	}
	if out > c.s.opts.highWater {
		c.startDrain(now)
		return keepConn, true
	}
	c.toIdle(now)
	return keepConn, false
}

// call runs the handler, containing a panic: one bad
// request must not take the server down.
func (s *Server) call(c *conn, req []byte) (err error, panicked bool) {
	return s.invoke(c.ctx, c.peer.ID, req, &c.reply)
}

// invoke runs the handler for connection id, containing a panic.
func (s *Server) invoke(ctx context.Context, id uint64, req []byte, w *ReplyWriter) (err error, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			panicked = true
			s.stats.panics.Add(1)
			s.log.Error("engine: handler panic", "conn", id, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	err = s.h.ServeIPC(ctx, req, w)
	if err != nil && !errors.Is(err, ErrQuit) {
		s.log.Debug("engine: handler error", "conn", id, "err", err)
	}
	return err, false
}

func (s *Server) protocolError(c *conn, err error) {
	s.stats.protocolErrors.Add(1)
	if s.logProto.allow(s.now()) {
		s.log.Warn("engine: bad request; closing connection", "conn", c.peer.ID, "uid", c.peer.Cred.UID, "err", err)
	}
}

// filterInline asks WithInlineFilter's function whether msg runs on the
// loop. A panic there is contained like a handler's, and the request goes
// to the pool.
func (s *Server) filterInline(msg []byte) (inline bool) {
	if s.opts.inlineFilter == nil {
		return false
	}
	defer func() {
		if v := recover(); v != nil {
			s.stats.panics.Add(1)
			s.log.Error("engine: inline filter panicked", "panic", v)
			inline = false
		}
	}()
	return s.opts.inlineFilter(msg)
}

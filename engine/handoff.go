package engine

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/pktipc/pktipc/frame"
)

// A pooled request: the loop hands a request to a worker goroutine, the
// worker runs the handler and writes the reply, and the loop takes the
// connection back. Who owns what, in each state (phase is the loop's
// view; rescue, workerGone and wf's closing are under c.mu):
//
//	state      request bytes      reply (c.reply)    socket duplicate (wf)     next step, by whom
//	dispatched worker's (req or   -                  loop made it; direct set  worker takes c from jobs
//	           reqBig), queued                       if gnet holds no bytes
//	handling   worker's, dropped  worker's           worker writes on it;      worker: a chunk or the
//	           once the handler                      onClose may set a past    final bytes (handOff)
//	           returns                               deadline to stop it
//	chunk      -                  worker's; bytes    -                         loop acks (onChunkWritten,
//	handed off                    with gnet, copied                            or checkDrain once gnet's
//	                                                                           buffer fell below the mark)
//	final      -                  loop's from the    kept for the next         loop: onFinalWritten (or
//	handed off                    final callback on  pooled request            finalTask after a direct
//	                                                                           write) acks; the worker
//	                                                                           touches nothing after it
//	failed     -                  worker releases    worker closes it if the   worker closes the socket
//	                                                 loop already closed c     and cancels the handler
//
// Every hand-off is numbered (ackSeq) and answered once on the channel of
// the worker that made it: gnet runs a callback even after the connection
// closed, when its worker may have moved on, so a worker drops answers
// with another number. A worker waiting for an answer also watches done,
// which onClose closes. When the peer only half-closed, onClose leaves a
// duplicate of the socket in rescue, and the worker finishes the reply on
// it, then serves the whole requests the peer sent behind it (leftover,
// serveLeftover).
//
// A batch (dispatchPooled) goes through the same states as one request:
// its requests lie in req, bends marks where each but the last ends, and
// the last is reqMsg; the worker runs their handlers in turn (serveBatch),
// each reply handed off as a part before the next starts, and only the
// last reply's end is final.

// An ackMsg answers the hand-off numbered seq. gnet runs a hand-off's
// callback even after the connection closed, when the worker may have
// stopped waiting (it saw done) and moved on to another connection; the
// number lets it tell such a late answer from its own.
type ackMsg struct {
	seq uint64
	err error
}

// finalTask tells the loop that a worker wrote a whole reply directly.
type finalTask struct{ c *conn }

// Run takes the connection back on its loop, as onFinalWritten does after a
// handed-off final write.
func (f finalTask) Run(context.Context) error {
	var err error
	if f.c.closed.Load() {
		err = net.ErrClosed
	}
	return f.c.onFinalWritten(err)
}

// handOff gives encoded reply bytes from a worker to the event loop and
// waits until gnet has written or buffered them. final marks the reply's
// last bytes: the loop then also decides what follows the reply.
func (c *conn) handOff(b []byte, final bool) (rescued bool, err error) {
	c.mu.Lock()
	rc := c.rescue
	c.mu.Unlock()
	if err := c.writeTailFirst(rc); err != nil {
		return rc != nil, err
	}
	if rc != nil {
		return true, c.writeRescued(rc, b)
	}
	if c.direct {
		if err := c.writeDirect(b); err != nil {
			return false, err
		}
		if !final {
			return false, nil
		}
		if err := c.finishDirect(); err != nil {
			// The reply went out whole, and the loop closed c before it
			// took it back. A half-closed peer's requests behind it wait
			// with the rescue socket (onClose): reported as rescued, they
			// are served (finishPooled), as writeTail serves them.
			c.mu.Lock()
			rc = c.rescue
			c.mu.Unlock()
			if rc != nil {
				return true, nil
			}
			return false, err
		}
		return false, nil
	}
	// Read the channel before the hand-off: once the final bytes are
	// written, the loop may give the connection to another worker, which
	// sets c.ack to its own channel.
	ack, seq := c.nextAck()
	if err := c.writeOnLoop(b, final); err != nil {
		return false, fmt.Errorf("engine: hand reply to event loop: %w", err)
	}
	if err = c.waitAck(ack, seq); err != nil {
		// The loop closed the connection before writing. If the peer only
		// half-closed, OnClose left a duplicate of the socket to finish on.
		c.mu.Lock()
		rc = c.rescue
		c.mu.Unlock()
		if rc != nil {
			return true, c.writeRescued(rc, b)
		}
		return false, net.ErrClosed
	}
	return false, nil
}

// nextAck numbers the worker's next hand-off and returns the channel its
// answer comes on.
func (c *conn) nextAck() (chan ackMsg, uint64) {
	c.ackSeq = c.s.ackSeq.Add(1)
	return c.ack, c.ackSeq
}

// waitAck waits for the answer to hand-off seq, dropping late answers to
// earlier hand-offs of this worker. Once the connection is closed it takes
// the answer only if it is already there: the loop may be gone for good.
func (c *conn) waitAck(ack chan ackMsg, seq uint64) error {
	for {
		select {
		case m := <-ack:
			if m.seq == seq {
				return m.err
			}
		case <-c.done:
			for {
				select {
				case m := <-ack:
					if m.seq == seq {
						return m.err
					}
				default:
					return net.ErrClosed
				}
			}
		}
	}
}

// finishDirect hands the connection back to the loop after the worker wrote
// a whole reply itself, and waits until the loop has taken it.
func (c *conn) finishDirect() error {
	ack, seq := c.nextAck()
	if b := c.loop.bell; b != nil {
		b.ring(bellJob{c: c})
	} else if err := c.onLoop(c.final); err != nil {
		return net.ErrClosed
	}
	return c.waitAck(ack, seq)
}

// setWaitDeadline puts a pooled handler held back until its peer reads
// under the earlier of the write deadline, from now, and its own, from its
// start: the reaper sees one deadline at a time, and the handler's must
// not lapse unseen while it waits. On the loop.
func (c *conn) setWaitDeadline(now int64) {
	h, wr := int64(c.s.opts.handlerTimeout), int64(c.s.opts.writeTimeout)
	if h > 0 && (wr == 0 || c.hstart+h <= now+wr) {
		c.setDeadline(c.hstart, whyHandler)
		return
	}
	c.setDeadline(now, whyWrite)
}

// onChunkWritten runs on the loop after gnet took a chunk of a pooled reply.
// gnet copies what the kernel did not take, so the worker may reuse b; it
// is told only once the outbound buffer is below the high-water mark.
func (c *conn) onChunkWritten(err error) error {
	if err != nil {
		c.answer(c.ack, ackMsg{c.ackSeq, err})
		return nil
	}
	if c.gc.OutboundBuffered() > c.s.opts.highWater {
		c.ackWaiting = true
		c.setWaitDeadline(c.s.now())
		c.watchWrite()
		return nil
	}
	c.ack <- ackMsg{c.ackSeq, nil}
	return nil
}

// onFinalWritten runs on the loop after the last bytes of a pooled reply:
// it serves what the peer pipelined meanwhile, or closes (git style). The
// ack goes to the channel of the worker that wrote the reply: serving the
// next request may hand the connection to another worker at once.
func (c *conn) onFinalWritten(err error) error {
	ack, seq := c.ack, c.ackSeq
	if err == nil {
		// The worker waits for the ack and touches nothing after it: the
		// loop owns the connection again, and may dispatch the next request.
		c.reply.release()
	}
	if err != nil || c.closed.Load() {
		c.answer(ack, ackMsg{seq, err})
		return nil
	}
	// The ack goes before the loop serves anything: serving may close c
	// (a write that fails), and a worker that found c closed with no ack
	// would take for its own a connection the loop has taken back.
	c.answer(ack, ackMsg{seq, nil})
	now := c.s.now()
	c.reqHeld = 0
	c.setPhase(phaseIdle) // the handler is done; nothing to rescue any more
	act, stop := c.afterReply(now)
	if !stop {
		act = c.process(now)
	}
	if act == closeConn || !c.account() {
		_ = c.gc.Close()
	}
	return nil
}

// answer sends m, the answer to a hand-off, on ack, the channel of the
// worker that made it. A failure's answer for a closed connection never
// blocks the loop: its worker stopped waiting once done closed (it gets
// the same error then) and may be serving another connection while late
// answers of earlier hand-offs fill its channel; such an answer that
// finds the channel full goes. Any other answer is awaited, and its
// worker drains the channel. On the loop.
func (c *conn) answer(ack chan ackMsg, m ackMsg) {
	if m.err != nil && c.closed.Load() {
		select {
		case ack <- m:
		default:
		}
		return
	}
	ack <- m
}

// finishPooled ends a pooled request on the worker goroutine. After a
// successful final hand-off the event loop owns the connection again (it
// may already be serving the next request), so the worker touches nothing
// of it; on every other path the worker still owns the reply and cleans up.
func (c *conn) finishPooled(herr error, panicked bool) {
	w := &c.reply
	whole := false // the reply went out whole, on the rescue socket
	// A handler whose context ended (peer gone, handler timeout) gets no
	// terminator: its reply may be cut short, and the client must not take
	// it for a whole one.
	if !panicked && w.err == nil && c.ctx.Err() == nil {
		if errors.Is(herr, ErrQuit) {
			c.s.requestQuit()
		}
		w.buf.B = frame.AppendFlush(w.buf.B)
		rescued, err := c.handOff(w.buf.B, true)
		if err == nil && !rescued {
			return
		}
		whole = err == nil
	}
	if !whole && !c.closed.Load() {
		// The replies before this one (a tail its dispatch left) still go
		// out; this one is cut.
		_ = c.writeTailFirst(nil)
	}
	c.dropTail()
	w.release()
	if whole {
		c.s.serveLeftover(c)
	}
	c.letGo() // no terminator: the client sees an incomplete reply, or the end
	c.cancelHandler(net.ErrClosed)
}

// serveLeftover serves, one after the other, the whole requests a
// half-closed peer sent behind the one whose reply was rescued (onClose
// kept them in leftover), writing each reply on the rescue socket, as
// git's daemon answers what its client sent before shutting down its
// writing side. A partial request at the end is dropped: nothing more can
// come. It stops at the first failure (the handler's, the write's, the
// server stopping), and the caller lets the connection go. On the
// goroutine that owned the rescued reply.
func (s *Server) serveLeftover(c *conn) {
	c.mu.Lock()
	rest, rc := c.leftover, c.rescue
	c.leftover = nil
	c.mu.Unlock()
	if len(rest) == 0 || rc == nil {
		return
	}
	asm := frame.NewAssembler(frame.Persistent, s.opts.maxRequest)
	defer asm.Release()
	w := &c.reply
	for len(rest) > 0 && !s.stopping.Load() && c.ctx.Err() == nil {
		msg, n, done, err := asm.Next(rest)
		if err != nil || (!done && n == 0) {
			return
		}
		rest = rest[n:]
		if !done {
			continue // the assembler took these packets; the message goes on
		}
		s.stats.requests.Add(1)
		w.begin(false)
		c.hstart = s.now()
		c.setDeadline(c.hstart, whyHandler) // its own time, not the rescued request's
		herr, panicked := s.call(c, msg)
		if panicked || w.err != nil || c.ctx.Err() != nil {
			w.release()
			return
		}
		w.buf.B = frame.AppendFlush(w.buf.B)
		err = c.writeRescued(rc, w.buf.B)
		w.release()
		if err != nil || errors.Is(herr, ErrQuit) {
			if err == nil {
				s.requestQuit()
			}
			return
		}
	}
}

// letGo ends the connection for the goroutine that owned its reply (a
// pooled worker, or a tail's writer) and leaves it for good: the rescue
// socket, if onClose left one, is closed, and so is wf if onClose left it
// to this goroutine; the connection closes if it has not. On that
// goroutine, which touches nothing of c afterwards.
func (c *conn) letGo() {
	c.mu.Lock()
	rc := c.rescue
	c.rescue, c.leftover = nil, nil
	c.workerGone = true
	if c.closed.Load() {
		c.closeWriteFD() // onClose left it to us
	}
	c.mu.Unlock()
	// After workerGone: an onClose that adds c to the set from here on
	// finds nothing to rescue and takes it out again itself.
	c.s.rescues.remove(c)
	if rc != nil {
		_ = rc.Close()
	}
	if !c.closed.Load() {
		_ = c.gc.Close()
	}
}

// serveBatch runs, in order, the handlers of a pooled batch's requests
// before its last (reqMsg, which the worker then serves as any pooled
// request). Each finished reply, with its terminator, goes out before the
// next handler starts: a handler may block, even on what its client does
// once it has the replies before it, so none waits for a later one; what
// the batch saves is the hand-offs between the loop and a worker. It
// reports false when the batch ended early: a handler failed (panicked,
// its reply failed, or the connection ended) or asked the server to quit,
// and finishPooled has ended the request, as after a single pooled
// request. On the worker.
func (s *Server) serveBatch(c *conn) bool {
	w := &c.reply
	start := 0
	for _, end := range c.bends {
		herr, panicked := s.call(c, c.req.B[start:end])
		start = end
		if panicked || w.err != nil || c.ctx.Err() != nil || errors.Is(herr, ErrQuit) {
			// A quit ends the batch as it ends a connection's requests:
			// its reply is the last.
			c.dropRequest()
			c.finishPooled(herr, panicked)
			return false
		}
		w.buf.B = frame.AppendFlush(w.buf.B)
		w.n = 0
		if err := w.flush(); err != nil {
			w.err = err
			c.dropRequest()
			c.finishPooled(nil, false)
			return false
		}
		c.hstart = s.now()
		c.setDeadline(c.hstart, whyHandler) // the next handler's own time
	}
	return true
}

func (s *Server) worker() {
	defer s.workers.Done()
	// Each worker has its own ack channel, so that an ack meant for the
	// previous worker of a connection can never reach this one.
	ack := make(chan ackMsg, 4)
	var shotReply shotBuf // one-shot replies (oneshotpool.go)
	var shotSink []byte   // and their requests, read after the reply
	for c := range s.jobs {
		if c.shot {
			s.serveShot(c, &shotReply, &shotSink)
			continue
		}
		c.ack = ack
		c.reply.begin(false)
		if c.ctx.Err() != nil {
			// Its connection ended while it waited in the queue (not a
			// half close: a rescued one's context lives on): nobody is
			// left to answer, and a stopping server would wait for it.
			c.dropRequest()
			c.finishPooled(nil, false)
			continue
		}
		if len(c.bends) > 0 && !s.serveBatch(c) {
			continue
		}
		herr, panicked := s.call(c, c.reqMsg)
		c.dropRequest()
		c.finishPooled(herr, panicked)
	}
}

package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"

	"github.com/pktipc/pktipc/frame"
)

// The persistent-connection handshake. A pktipc client opens with this
// request; a pktipc server answers helloReply and from then on serves any
// number of requests on the connection, in order. git's test daemon answers
// "unhandled command: ..." and fsmonitor a trivial reply, and both close, so
// the client falls back to one request per connection. The request starts
// with a control byte no git command has, and has no NUL (fsmonitor's
// daemon aborts on a NUL in a request).
var (
	helloRequest = []byte("\x01pktipc/persistent/1")
	helloReply   = []byte("\x01pktipc/persistent/1 ok")
	helloWire    = frame.AppendMessage(nil, helloReply)
)

// phase is where a connection stands. It is owned by the event loop; a copy
// in conn.phaseA lets the reaper see it.
type phase int32

const (
	phaseIdle     phase = iota // no byte of a request buffered
	phaseReading               // part of a request buffered
	phaseHandling              // a pooled handler owns the request
	phaseDraining              // reply queued; waiting for the peer to read it
)

// why says which deadline a connection is under.
type why int32

const (
	whyFirstByte why = iota
	whyRequest
	whyIdle
	whyHandler
	whyWrite
)

func (w why) String() string {
	return [...]string{"first byte", "request", "idle", "handler", "write"}[w]
}

// conn is the server's state for one connection. Fields without a comment
// belong to the event loop.
type conn struct {
	s    *Server
	gc   gnet.Conn
	loop *loopState
	peer Peer // immutable

	ctx    context.Context // immutable; carries peer
	cancel context.CancelCauseFunc

	asm         *frame.Assembler
	persistent  bool
	firstPooled bool // the accept loop's one-shot path asked WithInlineFilter already: pool
	served      uint64
	phase       phase
	closeAfter  bool // close once the outbound buffer is empty (SI)
	ackWaiting  bool // a worker waits for the outbound buffer to fall below the high-water mark

	reply   ReplyWriter                // the loop's while inline; the worker's while handling
	req     *bytebufferpool.ByteBuffer // the worker's copy of a request that lay in gnet's buffer
	reqBig  []byte                     // the worker's: the assembler's buffer holding a gathered request
	reqMsg  []byte                     // the worker's request: in req or reqBig
	reqHeld int                        // the loop's: cap(reqBig) while a worker has it, for the budget

	phaseA  atomic.Int32 // copy of phase for the reaper
	since   atomic.Int64 // monotonic ns when the current deadline started
	why     atomic.Int32 // which deadline; the reaper compares since with its timeout
	held    atomic.Int64 // bytes charged to the memory budget; -1 once evicted or closed (budget.go)
	expired atomic.Int32 // set by the reaper before it closes c: the deadline (why) + 1

	// admission's, under its mu (admission.go).
	counted, inList bool
	prev, next      *conn
	provenLoop      bool          // the loop's: admission.prove ran
	closed          atomic.Bool   // set by OnClose
	done            chan struct{} // closed by OnClose: wakes a worker waiting for an ack
	ack             chan ackMsg   // loop -> worker: a hand-off was done; the current worker's own channel
	ackSeq          uint64        // the worker's current hand-off, echoed in its ackMsg

	mu         sync.Mutex
	rescue     *net.UnixConn // set by OnClose when a half-closed peer still awaits a pooled reply
	workerGone bool          // the worker gave up the reply; nothing to rescue for

	// wf is a duplicate of the socket on which a worker writes a pooled
	// reply itself (no hand-off to the loop), made at the first pooled
	// request; nil when there is none. A duplicate, because gnet may close
	// its descriptor (peer gone) while the worker writes, and the number
	// could then name another client's socket. The worker waits for room
	// in Go's netpoller, until the write deadline; onClose wakes it with a
	// past deadline. direct is set by the loop when it dispatches (nothing
	// is queued in gnet, so the worker's bytes cannot overtake any); with
	// it clear the reply goes through gnet. wf is closed by whichever of
	// onClose and the worker comes last (mu). wb, wn, werr and writeCB are
	// the worker's, for writes through wf's RawConn.
	wf      *os.File
	wfd     int
	wrc     syscall.RawConn
	direct  bool
	wb      []byte
	wn      int
	werr    error
	writeCB func(fd uintptr) bool

	// pend holds request bytes the loop read itself (soloWait) and has not
	// consumed; they come before anything in gnet's inbound buffer. It
	// points into the loop's read buffer while soloWait serves them, into
	// pendBuf once they outlive that.
	pend    []byte
	pendBuf *bytebufferpool.ByteBuffer

	drain drainTask
	final finalTask

	// The loop's: the watch for the peer's reads while replies wait for
	// it (drain.go); pollDrain when there is none and the reaper looks.
	watch     *writeWatch
	pollDrain bool

	// The hand-off callbacks, bound once: a method value allocates.
	chunkCB, finalCB gnet.AsyncCallback
}

// An ackMsg answers the hand-off numbered seq. gnet runs a hand-off's
// callback even after the connection closed, when the worker may have
// stopped waiting (it saw done) and moved on to another connection; the
// number lets it tell such a late answer from its own.
type ackMsg struct {
	seq uint64
	err error
}

type drainTask struct{ c *conn }

// finalTask tells the loop that a worker wrote a whole reply directly.
type finalTask struct{ c *conn }

// Run takes the connection back on its loop, as onFinalWritten does after a
// handed-off final write.
func (f finalTask) Run(context.Context) error {
	var err error
	if f.c.closed.Load() {
		err = net.ErrClosed
	}
	return f.c.onFinalWritten(f.c.gc, err)
}

// Run checks, on the connection's loop, whether its outbound buffer drained.
func (d drainTask) Run(context.Context) error { d.c.checkDrain(); return nil }

// newConn makes the state of an accepted connection. What only a
// connection that sends requests needs (the assembler, the handler's
// context, the pooled path's channel and callbacks) is made when it first
// does, so that an idle connection costs little.
func (s *Server) newConn(p Peer) *conn {
	c := &conn{s: s, peer: p, wfd: -1}
	c.drain = drainTask{c}
	c.final = finalTask{c}
	c.reply.c = c
	return c
}

// assembler returns c's assembler, made at the first request. On the loop.
func (c *conn) assembler() *frame.Assembler {
	if c.asm == nil {
		mode := frame.SimpleIPC
		if c.persistent {
			mode = frame.Persistent
		}
		c.asm = frame.NewAssembler(mode, c.s.opts.maxRequest)
		c.asm.SetBufferSource(c)
	}
	return c.asm
}

// prepareHandler makes what a handler of c needs: its context, and for the
// pool the channel that tells a waiting worker of the close and the
// hand-off callbacks. On the loop, before the first dispatch of each kind.
func (c *conn) prepareHandler(pooled bool) {
	if c.ctx == nil {
		ctx, cancel := context.WithCancelCause(c.s.baseCtx)
		c.ctx = context.WithValue(ctx, peerKey{}, &c.peer)
		c.cancel = cancel
	}
	if pooled && c.done == nil {
		c.done = make(chan struct{})
		c.chunkCB, c.finalCB = c.onChunkWritten, c.onFinalWritten
	}
}

// cancelHandler cancels the handler's context, if there is one.
func (c *conn) cancelHandler(cause error) {
	if c.cancel != nil {
		c.cancel(cause)
	}
}

func (c *conn) setPhase(p phase) {
	c.phase = p
	c.phaseA.Store(int32(p))
}

// setDeadline puts c under deadline w from now; the reaper enforces it.
func (c *conn) setDeadline(now int64, w why) {
	c.why.Store(int32(w))
	c.since.Store(now)
}

func (c *conn) toIdle(now int64) {
	c.setPhase(phaseIdle)
	c.closeAfter = false
	if c.persistent {
		c.setDeadline(now, whyIdle)
	} else {
		c.setDeadline(now, whyFirstByte)
	}
}

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
	c.gc = gc
	e.s.register(c)
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
	var act gnet.Action
	switch c.phase {
	case phaseHandling, phaseDraining:
		// A request is in progress; later bytes wait in gnet's buffer.
		if c.buffered() > c.s.opts.maxRequest+frame.MaxPacketSize {
			c.s.stats.protocolErrors.Add(1)
			act = gnet.Close
		}
	default:
		act = c.process(now)
	}
	if act == gnet.None && !c.account() {
		act = gnet.Close
	}
	candidate := act == gnet.None && c.persistent && c.phase == phaseIdle && (c.s.opts.inline || c.s.opts.inlineFilter != nil)
	if candidate && c.canSoloWait() {
		return c.soloWait() // it spins first if busy polling is on
	}
	c.loop.exit(e.s, candidate)
	return act
}

func (e *events) OnClose(gc gnet.Conn, err error) gnet.Action {
	if c, ok := gc.Context().(*conn); ok {
		c.onClose(err)
	}
	return gnet.None
}

// peekWindow is how much of the inbound buffer process looks at first.
// gnet's Peek copies when the bytes are split between its ring and the read
// buffer, so looking at everything a pipelining client has sent would copy
// it all for every request; the window doubles only while one message needs
// more (the assembler gathers large ones, so it stays near
// frame.MinReadBuffer).
const peekWindow = 16 << 10

// process decodes and serves the requests buffered on the connection. It
// runs on the event loop.
func (c *conn) process(now int64) gnet.Action {
	window := peekWindow
	for !c.closed.Load() {
		total := c.buffered()
		if total == 0 {
			return gnet.None
		}
		if c.phase == phaseIdle {
			if c.s.stopping.Load() {
				return gnet.Close // no new requests during shutdown
			}
			c.setPhase(phaseReading)
			c.setDeadline(now, whyRequest)
		}
		buf := c.peek(min(total, window))
		msg, n, done, err := c.assembler().Next(buf)
		if err != nil {
			if !errors.Is(err, frame.ErrNoBuffer) { // the budget counted it
				c.s.protocolError(c, err)
			}
			return gnet.Close
		}
		if !done {
			switch {
			case n > 0:
				c.discard(n) // the assembler copied these packets
			case len(buf) < total:
				window *= 2 // the message goes on beyond the window
			default:
				return gnet.None
			}
			continue
		}
		window = peekWindow
		if act, stop := c.dispatch(now, msg, n); stop {
			return act
		}
	}
	return gnet.None
}

// dispatch serves one complete request of n wire bytes whose payload is
// msg. stop reports that process must return act instead of reading on.
func (c *conn) dispatch(now int64, msg []byte, n int) (act gnet.Action, stop bool) {
	s := c.s
	s.adm.prove(c)
	if !c.persistent && c.served == 0 && s.opts.persistent && bytes.Equal(msg, helloRequest) {
		c.discard(n)
		c.persistent = true
		c.asm.Release()
		c.asm = nil // the next is made for the persistent mode
		if _, err := c.gc.Write(helloWire); err != nil {
			return gnet.Close, true
		}
		c.toIdle(now)
		return gnet.None, false
	}
	c.served++
	s.stats.requests.Add(1)
	pooled := !s.opts.inline && (c.firstPooled || !s.filterInline(msg))
	c.firstPooled = false
	c.prepareHandler(pooled)
	if pooled {
		c.takeRequest(msg)
		c.discard(n)
		c.direct = c.gc.OutboundBuffered() == 0 && c.openWriteFD()
		c.setPhase(phaseHandling)
		c.setDeadline(now, whyHandler)
		select {
		case s.jobs <- c:
			return gnet.None, true
		default:
			// Unreachable while the queue holds a request per admitted
			// connection; if it were full, do as git does: close without
			// a reply.
			c.dropRequest()
			s.stats.overloaded.Add(1)
			return gnet.Close, true
		}
	}
	c.reply.begin(true)
	herr, panicked := s.call(c, msg)
	c.discard(n)
	if c.closed.Load() {
		c.reply.release()
		return gnet.None, true
	}
	if panicked || c.reply.err != nil {
		c.reply.release()
		return gnet.Close, true
	}
	if errors.Is(herr, ErrQuit) {
		s.requestQuit()
	}
	c.reply.buf.B = frame.AppendFlush(c.reply.buf.B)
	err := c.reply.flushInline()
	c.reply.release()
	if c.closed.Load() {
		return gnet.None, true
	}
	if err != nil && !errors.Is(err, ErrBackpressure) {
		return gnet.Close, true
	}
	return c.afterReply(now)
}

// takeRequest gives msg a home for the worker: the assembler's buffer, if
// msg lies there (no copy), or a pooled copy, since msg in gnet's buffer
// dies with discard.
func (c *conn) takeRequest(msg []byte) {
	if big := c.asm.Detach(); big != nil {
		c.reqBig, c.reqMsg, c.reqHeld = big, msg, cap(big)
		return
	}
	c.req = bufPool.Get()
	c.req.B = append(c.req.B[:0], msg...)
	c.reqMsg = c.req.B
}

// dropRequest releases the request's buffer; its owner (the loop before
// dispatch, the worker after) calls it.
func (c *conn) dropRequest() {
	if c.reqBig != nil {
		c.s.budget.put(c.reqBig)
		c.reqBig = nil
	}
	if c.req != nil {
		bufPool.Put(c.req)
		c.req = nil
	}
	c.reqMsg = nil
}

// Get and Put lend the assembler its gathering buffers from the memory
// budget (frame.BufferSource), all of them: the small first steps of a
// large message would otherwise be garbage. They run on the loop.
func (c *conn) Get(n int) []byte { return c.s.budget.get(c.s, c, n) }

func (c *conn) Put(b []byte) { c.s.budget.put(b) }

// afterReply decides what follows a reply that is wholly queued: close (git
// style), wait for the peer to read, or serve the next request.
func (c *conn) afterReply(now int64) (gnet.Action, bool) {
	out := c.gc.OutboundBuffered()
	if !c.persistent || c.s.stopping.Load() {
		if out == 0 {
			return gnet.Close, true
		}
		c.closeAfter = true
		c.startDrain(now)
		return gnet.None, true
	}
	if out > c.s.opts.highWater {
		c.startDrain(now)
		return gnet.None, true
	}
	c.toIdle(now)
	return gnet.None, false
}

func (c *conn) startDrain(now int64) {
	c.setPhase(phaseDraining)
	c.setDeadline(now, whyWrite)
	c.watchWrite()
}

// checkDrain runs on the loop when the connection's peer has read some of
// what waits for it (its writeWatch woke): gnet has no "outbound drained"
// callback.
func (c *conn) checkDrain() {
	c.s.stats.drainChecks.Add(1)
	if c.closed.Load() {
		c.unwatchWrite()
		return
	}
	out := c.gc.OutboundBuffered()
	if c.ackWaiting {
		if out <= c.s.opts.highWater {
			c.ackWaiting = false
			c.unwatchWrite()
			c.setDeadline(c.s.now(), whyHandler)
			c.ack <- ackMsg{c.ackSeq, nil}
		}
		return
	}
	if c.phase != phaseDraining {
		c.unwatchWrite()
		return
	}
	if c.closeAfter {
		if out == 0 {
			c.unwatchWrite()
			_ = c.gc.Close()
		}
		return
	}
	if out <= c.s.opts.highWater/2 {
		c.unwatchWrite()
		now := c.s.now()
		c.toIdle(now)
		if c.process(now) == gnet.Close || !c.account() {
			_ = c.gc.Close()
		}
		return
	}
	if !c.account() {
		_ = c.gc.Close()
	}
}

// handOff gives encoded reply bytes from a worker to the event loop and
// waits until gnet has written or buffered them. final marks the reply's
// last bytes: the loop then also decides what follows the reply.
func (c *conn) handOff(b []byte, final bool) (rescued bool, err error) {
	c.mu.Lock()
	rc := c.rescue
	c.mu.Unlock()
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
		return false, c.finishDirect()
	}
	cb := c.chunkCB
	if final {
		cb = c.finalCB
	}
	// Read the channel before the hand-off: once the final bytes are
	// written, the loop may give the connection to another worker, which
	// sets c.ack to its own channel.
	ack, seq := c.nextAck()
	if err := c.gc.AsyncWrite(b, cb); err != nil {
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
			if d := c.s.opts.writeTimeout; d > 0 {
				_ = c.wf.SetWriteDeadline(time.Now().Add(d))
			}
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

// writeSome is the RawConn.Write callback of writeDirect: it writes what
// the socket takes, and asks the netpoller to wait when it takes no more.
func (c *conn) writeSome(fd uintptr) bool {
	for c.wn < len(c.wb) {
		n, err := sysWrite(fd, c.wb[c.wn:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			c.werr = err
			return true
		}
		c.wn += n
	}
	return true
}

// finishDirect hands the connection back to the loop after the worker wrote
// a whole reply itself, and waits until the loop has taken it.
func (c *conn) finishDirect() error {
	ack, seq := c.nextAck()
	if b := c.loop.bell; b != nil {
		b.ring(bellJob{c: c})
	} else if err := c.gc.EventLoop().Execute(c.s.baseCtx, c.final); err != nil {
		return net.ErrClosed
	}
	return c.waitAck(ack, seq)
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
	}
	return true
}

// closeWriteFD closes the duplicate; the caller holds mu.
func (c *conn) closeWriteFD() {
	if c.wf != nil {
		_ = c.wf.Close()
		c.wf, c.wfd, c.wrc = nil, -1, nil
	}
}

// onChunkWritten runs on the loop after gnet took a chunk of a pooled reply.
// gnet copies what the kernel did not take, so the worker may reuse b; it
// is told only once the outbound buffer is below the high-water mark.
func (c *conn) onChunkWritten(gc gnet.Conn, err error) error {
	if err != nil {
		c.ack <- ackMsg{c.ackSeq, err}
		return nil
	}
	if gc.OutboundBuffered() > c.s.opts.highWater {
		c.ackWaiting = true
		c.setDeadline(c.s.now(), whyWrite)
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
func (c *conn) onFinalWritten(_ gnet.Conn, err error) error {
	ack, seq := c.ack, c.ackSeq
	if err == nil {
		// The worker waits for the ack and touches nothing after it: the
		// loop owns the connection again, and may dispatch the next request.
		c.reply.release()
	}
	if err == nil && !c.closed.Load() {
		now := c.s.now()
		c.reqHeld = 0
		c.setPhase(phaseIdle) // the handler is done; nothing to rescue any more
		act, stop := c.afterReply(now)
		if !stop {
			act = c.process(now)
		}
		if act == gnet.Close || !c.account() {
			_ = c.gc.Close()
		}
	}
	ack <- ackMsg{seq, err}
	return nil
}

// onClose runs on the loop when gnet closes the connection, for whatever
// reason.
func (c *conn) onClose(err error) {
	c.closed.Store(true)
	c.unwatchWrite()
	c.unaccount()
	if c.asm != nil {
		c.asm.Release()
	}
	c.dropPend()
	s := c.s
	// gnet closes on EOF even when the peer only shut down its writing
	// side; a pooled handler still working for such a peer gets a
	// duplicate of the socket to finish its reply on (faults.md B3).
	if errors.Is(err, io.EOF) && c.phase == phaseHandling && !s.closing.Load() && peerHalfClosed(c.gc) {
		c.mu.Lock()
		if !c.workerGone {
			if rc, derr := dupConn(c.gc); derr == nil {
				c.rescue = rc
				s.stats.rescued.Add(1)
			}
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	rescued := c.rescue != nil
	if c.phase != phaseHandling || c.workerGone {
		c.closeWriteFD() // else the worker closes it when it is done
	} else if c.wf != nil && !rescued {
		_ = c.wf.SetWriteDeadline(time.Unix(1, 0)) // a worker waiting for room gives up
	}
	c.mu.Unlock()
	if !rescued {
		// The handler, if one runs, has nobody left to answer.
		cause := err
		if w := c.expired.Load(); w != 0 {
			cause = fmt.Errorf("engine: %s deadline exceeded: %w", why(w-1), os.ErrDeadlineExceeded)
		} else if cause == nil {
			cause = net.ErrClosed
		}
		c.cancelHandler(cause)
	}
	if c.done != nil {
		close(c.done)
	}
	s.unregister(c)
	// Buffers are not released here: the dispatching code (inline) or the
	// worker (pooled) owns them and releases them when it returns.
}

// finishPooled ends a pooled request on the worker goroutine. After a
// successful final hand-off the event loop owns the connection again (it
// may already be serving the next request), so the worker touches nothing
// of it; on every other path the worker still owns the reply and cleans up.
func (c *conn) finishPooled(herr error, panicked bool) {
	w := &c.reply
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
	}
	w.release()
	c.mu.Lock()
	rc := c.rescue
	c.rescue = nil
	c.workerGone = true
	if c.closed.Load() {
		c.closeWriteFD() // onClose left it to us
	}
	c.mu.Unlock()
	if rc != nil {
		_ = rc.Close()
	}
	if !c.closed.Load() {
		_ = c.gc.Close() // no terminator: the client sees an incomplete reply
	}
	c.cancelHandler(net.ErrClosed)
}

// dupConn duplicates the socket of a gnet connection as a *net.UnixConn,
// which lives on after gnet closes its descriptor.
func dupConn(gc gnet.Conn) (*net.UnixConn, error) {
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

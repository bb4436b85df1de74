package engine

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

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

// exceeded is the cause a handler's context gets when deadline w passed.
func (w why) exceeded() error {
	return fmt.Errorf("engine: %s deadline exceeded: %w", w, os.ErrDeadlineExceeded)
}

// transport is what the protocol uses of a connection's gnet handle: its
// buffers and socket, never its loop (the reactor's link reaches that).
type transport interface {
	Fd() int
	Dup() (int, error)
	Write(b []byte) (int, error)
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
	InboundBuffered() int
	OutboundBuffered() int
	Close() error
}

// conn is the server's state for one connection. Fields without a comment
// belong to the event loop. Invariant: the loop owns c except while a
// worker handles a pooled request or a tail's writer writes an inline
// reply's rest (phase == phaseHandling; handoff.go and tail.go say who
// holds what then); the reaper, admission and the budget read only the
// atomics; c.mu orders onClose against the worker for rescue, leftover,
// workerGone and closing wf. Once closed is set no new request is read, and every
// goroutine that waits on c (a worker, a write watch) is woken: done is
// closed, wf gets a past deadline, the watch is stopped.
type conn struct {
	s    *Server
	gc   transport // gnet's connection, as the protocol sees it
	link link      // the reactor's handle on it (reactor.go)
	loop *loopState
	peer Peer // immutable

	ctx    context.Context // immutable once set; &pctx
	pctx   peerCtx
	cancel context.CancelCauseFunc

	asm        *frame.Assembler
	served     uint64
	lastWire   int // the wire size of the last whole message read (peekStart)
	phase      phase
	closeAfter bool // close once the outbound buffer is empty (SI)
	batched    bool // the loop's: inline replies wait in the loop's reply buffer (process)
	gathering  bool // the loop's: a pooled batch is open and not yet sent (dispatchPooled)
	ackWaiting bool // a worker waits for the outbound buffer to fall below the high-water mark

	reply   ReplyWriter // the loop's while inline; the worker's while handling
	reqHeld int         // the loop's: cap(reqBig), and a batch's req, while a worker has them, for the budget; a pooled one-shot's request, charged until its worker drops it

	// The state of requests served on workers, made at the first one
	// (ensureWorkerIO): an idle connection, or one whose handlers run on
	// its loop, does without it. Its fields are promoted.
	*workerIO

	phaseA  atomic.Int32 // copy of phase for the reaper
	dl      deadlineWord // which deadline, since when; the reaper compares since with its timeout
	held    atomic.Int64 // bytes charged to the memory budget; negative once evicted or closed (budget.go)
	expired atomic.Int32 // set by the reaper before it closes c: the deadline (why) + 1
	closed  atomic.Bool  // set by OnClose

	// admission's, under its mu (admission.go).
	counted, inList bool
	provenLoop      bool // the loop's: it is proven (admission.prove ran, or register found it vouched)
	// vouched is set before the connection goes to its loop, and only
	// read after: its whole first request was in its input when it was
	// admitted, so it joins as proven. Its loop has yet to read the
	// request, which it will in its next turn: a connection evicted then
	// would be a prompt client refused for a newcomer, not a silent one.
	vouched    bool
	prev, next *conn

	done chan struct{} // closed by OnClose: wakes a worker waiting for an ack

	mu         sync.Mutex
	rescue     *net.UnixConn // set by OnClose when a half-closed peer still awaits a pooled reply
	leftover   []byte        // set with rescue: the requests the peer sent after the one being answered
	workerGone bool          // the worker gave up the reply; nothing to rescue for

	// shot: a one-shot connection served on a worker (oneshotpool.go),
	// its state in workerIO.
	shot bool
	// persistent: the connection took the persistent handshake. Beside
	// the other flags, as is pollDrain, which keeps conn small.
	persistent bool
	pollDrain  bool // see watch

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
	watch *writeWatch
}

// workerIO is the part of a connection's state that only requests served
// on workers use: their copies, the hand-off's channel, and the worker's
// own writes. Who owns what is said at each field; the loop makes it
// before the first such request is dispatched (ensureWorkerIO), which
// orders it before the worker's uses.
type workerIO struct {
	req    *bytebufferpool.ByteBuffer // the worker's copy of a request that lay in gnet's buffer
	reqBig []byte                     // the worker's: the assembler's buffer holding a gathered request
	reqMsg []byte                     // the worker's request: in req or reqBig
	bends  []int                      // a pooled batch's requests before reqMsg: where each ends in req.B
	hstart int64                      // when the running pooled handler started (its deadline's start); set by whoever starts it

	ack    chan ackMsg // loop -> worker: a hand-off was done; the current worker's own channel
	ackSeq uint64      // the worker's current hand-off, echoed in its ackMsg

	// wf is a duplicate of the socket on which a worker writes a pooled
	// reply itself (no hand-off to the loop), made at the first pooled
	// request; nil when there is none. A duplicate, because gnet may close
	// its descriptor (peer gone) while the worker writes, and the number
	// could then name another client's socket. The worker waits for room
	// in Go's netpoller, until the write deadline; onClose wakes it with a
	// past deadline. direct is set by the loop when it dispatches (nothing
	// is queued in gnet, so the worker's bytes cannot overtake any); with
	// it clear the reply goes through gnet. wf is closed by whichever of
	// onClose and the worker comes last (mu). wb, wn, werr, writeCB and
	// the gathered write's wgw, wiov and gatherCB are the worker's, for
	// writes through wf's RawConn.
	wf  *os.File
	wfd int

	// tail holds what the socket did not take of inline replies (tail.go);
	// tailHeld mirrors its capacity for the memory budget: stored by the
	// tail's owner of the moment, read by the loop (account).
	tail     *bytebufferpool.ByteBuffer
	tailHeld atomic.Int64

	// A one-shot connection served on a worker (conn.shot) has its bare
	// descriptor in shotFD; the worker's from the hand-off, as is
	// shotWait, the duplicate its reply waits for room on, if it had to.
	// shotIn is the request's length on the wire, still unread in the
	// socket (only peeked) until the connection is closed.
	shotFD   int
	shotIn   int
	shotWait *net.UnixConn

	wrc      syscall.RawConn
	direct   bool
	wb       []byte
	wn       int
	werr     error
	writeCB  func(fd uintptr) bool
	wgw      gather
	wiov     []iovec
	gatherCB func(fd uintptr) bool
}

// ensureWorkerIO makes c's workerIO if it has none. On the loop, before
// the first hand-off to a worker (a one-shot connection served on a worker
// has it from newShotConn).
func (c *conn) ensureWorkerIO() {
	if c.workerIO == nil {
		c.workerIO = &workerIO{wfd: -1}
	}
}

// newConn makes the state of an accepted connection. What only a
// connection that sends requests needs (the assembler, the handler's
// context, the pooled path's channel and callbacks) is made when it first
// does, so that an idle connection costs little.
func (s *Server) newConn(p Peer) *conn {
	c := &conn{}
	s.initConn(c, p)
	return c
}

// shotConn is a one-shot connection served on a worker: the connection
// and its workerIO, which it always needs, in one allocation.
type shotConn struct {
	conn
	io workerIO
}

// newShotConn is newConn for a one-shot connection served on a worker.
func (s *Server) newShotConn(p Peer) *conn {
	sc := &shotConn{io: workerIO{wfd: -1}}
	sc.workerIO = &sc.io
	s.initConn(&sc.conn, p)
	return &sc.conn
}

func (s *Server) initConn(c *conn, p Peer) {
	c.s, c.peer = s, p
	c.drain = drainTask{c}
	c.final = finalTask{c}
	c.reply.c = c
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
		c.pctx = peerCtx{ctx, &c.peer}
		c.ctx = &c.pctx
		c.cancel = cancel
	}
	if pooled && !c.writeCallbacksBound() {
		c.ensureWorkerIO()
		if c.done == nil { // an inline connection's first tail may have made it
			c.done = make(chan struct{})
		}
		c.bindWriteCallbacks()
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
	c.dl.store(w, now)
	if w != whyIdle && w != whyHandler {
		c.s.hurry() // a short deadline: the reaper must not nap through it
	}
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

// Get and Put lend the assembler its gathering buffers from the memory
// budget (frame.BufferSource), all of them: the small first steps of a
// large message would otherwise be garbage. They run on the loop.
func (c *conn) Get(n int) []byte { return c.s.budget.get(c.s, c, n) }

func (c *conn) Put(b []byte) { c.s.budget.put(b) }

package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/ring"
	"github.com/pktipc/pktipc/uds"
)

// Ring connections. A client that wants shared memory opens a connection
// whose first request is the ring handshake, "\x01pktipc/rings/1 <size>",
// or "\x01pktipc/rings/1 <size> inplace" from a client that takes replies
// where they lie in the ring (WithRingRepliesInPlace).
// The accept loop recognises it in what it peeks and the connection never
// joins an event loop: gnet reads with read(2), which would drop the
// descriptors, and a ring connection's traffic does not pass through the
// socket anyway. The server makes two rings in sealed memfds (requests,
// client to server; replies, server to client), each with a data area of
// the size asked (at most WithRingLimits' size), and answers
// "\x01pktipc/rings/1 ok oneway" with both memfds attached (SCM_RIGHTS):
// "oneway" says it takes one-way messages (below), and a client that gets
// a plain "... ok" sends none. A server that will not (rings refused, at
// their cap, stopping) answers "\x01pktipc/rings/1 no" and closes, and the
// client offers the persistent handshake on a new connection instead.
//
// From then on a request is one ring message (one or more records, each
// but the last flagged "more"), and so is its reply; replies come in the
// order of the requests. A request whose first record is marked
// (ring.Writer.Mark) is a one-way message (Client.Post): its handler runs
// as any other's, and no reply goes back. The socket carries only
// doorbell bytes, each meaning "look at the rings again": a side that
// finds its ring empty (or full) spins briefly, then arms it and waits to
// read the socket, and the peer's next commit (or release) writes a byte.
// So a side waiting for its peer is parked in Go's netpoller, like any
// socket reader: no thread is blocked, one epoll watches every ring
// connection of the process, and the end of the socket, the peer's death
// included, ends the wait at once.
// Only a wait that is alone in its process first sleeps on the ring's
// futex for a moment (ringSleep), where a prompt peer wakes it for less;
// waits in a crowd (more than ringCrowd at once) are watched instead
// (ringwatch.go) before they arm.
var (
	ringHelloPrefix = []byte("\x01pktipc/rings/1 ")
	ringOKReply     = []byte("\x01pktipc/rings/1 ok oneway")
	ringOKPlain     = []byte("\x01pktipc/rings/1 ok") // a server that takes no one-way messages
	ringNoReply     = []byte("\x01pktipc/rings/1 no")
	ringOKWire      = frame.AppendMessage(nil, ringOKReply)
	ringNoWire      = frame.AppendMessage(nil, ringNoReply)
)

// ringSpinCrowd: ring goroutines stop spinning for requests while more
// than this many connections per spinning place wait for one. Up to a few
// dozen busy clients per processor, the spinning goroutine catches a
// request most of the time and saves both sides a wake-up; with hundreds,
// its spins mostly miss and take the processor from the clients.
const ringSpinCrowd = 128

// ringStaleLimit bounds how many times in a row a ring may say that a
// record (or room) is there and then not have it when it is taken: an
// honest peer never does it even once, and a peer that keeps doing it
// would keep a goroutine looping without ever waiting. At the limit the
// connection ends with errRingStale.
const ringStaleLimit = 64

// ringSleep is the longest a ring side sleeps on its ring's futex, once
// its spin (if any) missed, before it arms the socket and waits in the
// netpoller. The peer's commit wakes a sleeper with one futex call, and
// the sleeper's thread returns to it directly: about half the cost of a
// doorbell byte, which takes a send, an epoll wake-up and a read, on
// both sides of every round trip. The sleep blocks a thread, so it is
// short (a peer that answers within it is the case it is for), and at
// most ringSleepers of the process's waits sleep at once; the end of the
// peer shows on the socket within it.
const ringSleep = 2 * time.Millisecond

// ringSleepers counts the ring waits of this process (server and Client
// alike) sleeping on a futex now. Each holds a thread, and its processor
// until the scheduler hands it on, so the budget is half of GOMAXPROCS,
// at least one: the rest of the process keeps processors to run on.
var ringSleepers atomic.Int32

// ringSleepSlot takes a place among the sleepers, within limit, for a
// wait while waiting waits (this one included) are under way in its
// group; the caller gives the place back with ringSleepers.Add(-1).
//
// Only a lone waiter sleeps. A sleeper's processor stays with its
// blocked thread until the scheduler's monitor takes it back (tens of
// microseconds at best), so with other connections waiting too, sleeping
// would leave their wake-ups one processor short; they are cheaper in the
// netpoller, which takes many at once.
func ringSleepSlot(limit, waiting int32) bool {
	if waiting > 1 {
		return false
	}
	if ringSleepers.Add(1) <= limit {
		return true
	}
	ringSleepers.Add(-1)
	return false
}

var errRingStale = fmt.Errorf("%w: the peer keeps changing the ring between a look and a take", ring.ErrCorrupt)

// errHandlerPanic is the cause a ring connection is closed with after
// its handler panicked.
var errHandlerPanic = errors.New("engine: handler panicked")

// ringPiece is the largest record a reply's Write makes (writeRing): small
// enough that the client starts copying a large reply out while the rest
// is copied in, large enough that a record's bookkeeping is lost in the
// copy.
const ringPiece = 64 << 10

// errRingBudget: the memory budget has no room for a request gathered
// from several records.
var errRingBudget = errors.New("engine: ring request beyond the memory budget")

// ringAsk is what a ring handshake asks for.
type ringAsk struct {
	size    int  // the data area of each ring
	inPlace bool // the client reads replies in place: write each Write as one record
}

// ringInPlace is the handshake's word for WithRingRepliesInPlace.
const ringInPlace = " inplace"

// parseRingHello returns what a ring handshake asks for.
func parseRingHello(msg []byte) (ringAsk, bool) {
	rest, ok := bytes.CutPrefix(msg, ringHelloPrefix)
	if !ok {
		return ringAsk{}, false
	}
	rest, inPlace := bytes.CutSuffix(rest, []byte(ringInPlace))
	if len(rest) == 0 || len(rest) > 10 {
		return ringAsk{}, false
	}
	n, err := strconv.Atoi(string(rest))
	if err != nil || n < ring.MinCapacity {
		return ringAsk{}, false
	}
	return ringAsk{size: n, inPlace: inPlace}, true
}

// moveToRings takes c out of its event loop for rings: its ring
// handshake (n wire bytes, buffered) came after the accept loop had looked,
// so c joined a loop first. The socket is duplicated, the duplicate
// adopted as a ring connection, and gnet's connection closed; nothing may
// follow the handshake before its reply. On c's loop.
func (c *conn) moveToRings(n int, ask ringAsk) (act action, stop bool) {
	c.discard(n)
	if len(c.pend) > 0 || c.gc.InboundBuffered() > 0 {
		c.s.protocolError(c, errors.New("bytes after the ring handshake"))
		return closeConn, true
	}
	uc, err := dupConn(c.gc)
	if err != nil {
		return closeConn, true
	}
	// c's place under the caps goes to the ring connection: let it go
	// first, or adopting would evict someone else at a cap for a
	// connection that is about to close.
	c.s.adm.release(c)
	c.s.adoptRingConn(uc, c.peer, ask)
	return closeConn, true
}

// ringOptions are the options of a ring side served on uc: spins of up
// to spin (0: none), and uc itself as the doorbell, rung with a byte when
// the peer waits. The caller closes the returned Doorbell (the sides keep
// duplicates).
func ringOptions(uc *net.UnixConn, spin time.Duration) (*ring.Options, error) {
	bell, err := uc.File()
	if err != nil {
		return nil, err
	}
	if spin == 0 {
		spin = -1
	}
	return &ring.Options{Spin: spin, Doorbell: bell}, nil
}

// grantRing is the data area given for a request of n bytes: n rounded
// down to a power of two, within the server's bounds. (The doubling is
// bounded by n/2, not g*2 <= n: with a 32-bit int, twice the largest ring
// overflows, and the loop would never end.)
func grantRing(n, most int) int {
	n = min(n, most)
	g := ring.MinCapacity
	for g <= n/2 {
		g *= 2
	}
	return g
}

// ringSet owns the server's ring connections and their goroutines.
//
// Invariant (mu): count is the number of ring goroutines started and not
// yet ended, at most max; a goroutine enters (count, wg) on the accept
// loop before it starts and leaves when it ends. conns holds the
// connections whose rings are set up, from then until their goroutine
// ends; closed is set once, by the server's Close, after which nothing
// enters or is added, and every connection in conns has been killed.
// gauge counts the goroutines waiting for a request now and those
// spinning now; live (atomic) is a copy of count, stored under mu
// whenever count changes, for readers that do not take mu.
type ringSet struct {
	spinMax int32 // the spin budget: half of GOMAXPROCS when the server was made, at least one
	mu      sync.Mutex
	conns   map[*ringConn]struct{}
	count   int
	closed  bool
	wg      sync.WaitGroup
	gauge   waitGauge    // waits for a request under way, and spins
	live    atomic.Int32 // count, for readers without mu (copyMessage)
	watch   ringWatch    // for the waits in a crowd (idle: the ring spin)
	watchOK bool         // waits may use watch: the ring spin is on, and GOMAXPROCS > 1
}

func (rs *ringSet) enter(limit int) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.closed || rs.count >= limit {
		return false
	}
	rs.count++
	rs.live.Store(int32(rs.count))
	rs.wg.Add(1)
	return true
}

// publish makes rc visible to the reaper and to Close; false means the
// server is closing.
func (rs *ringSet) publish(rc *ringConn) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.closed {
		return false
	}
	if rs.conns == nil {
		rs.conns = make(map[*ringConn]struct{})
	}
	rs.conns[rc] = struct{}{}
	return true
}

func (rs *ringSet) leave(rc *ringConn) {
	rs.mu.Lock()
	delete(rs.conns, rc)
	rs.count--
	rs.live.Store(int32(rs.count))
	rs.mu.Unlock()
	rs.wg.Done()
}

func (rs *ringSet) open() int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.count
}

// close kills every ring connection and waits for their goroutines.
func (rs *ringSet) close() {
	rs.mu.Lock()
	rs.closed = true
	all := make([]*ringConn, 0, len(rs.conns))
	for rc := range rs.conns {
		all = append(all, rc)
	}
	rs.mu.Unlock()
	for _, rc := range all {
		rc.kill(ErrServerClosed)
	}
	rs.wg.Wait()
	rs.watch.stop()
}

// spin takes a place among the spinning goroutines; false means the
// budget (half of GOMAXPROCS, at least one) is spent, or that so many
// connections wait for requests (ringSpinCrowd per place) that a spin
// would mostly keep the processor from the clients. unspin gives it back.
func (rs *ringSet) spin() bool { return rs.gauge.trySpin(rs.spinMax, ringSpinCrowd*rs.spinMax) }

func (rs *ringSet) unspin() { rs.gauge.unspin() }

// ringExpiry is a ring connection the reaper found past its deadline
// (expired), or idle while the server stops: which deadline ran, and since
// when.
type ringExpiry struct {
	rc *ringConn
	seen
	expired bool
}

// reap closes the ring connections whose deadline passed (idle, a request
// cut between records, a handler, a reply waiting for room), and the idle
// ones while the server stops. On the reaper.
func (s *Server) reapRings(r *reapScratch) {
	now := s.now()
	stopping := s.stopping.Load()
	rs := &s.rings
	r.rings = r.rings[:0]
	rs.mu.Lock()
	for rc := range rs.conns {
		d := rc.dl.load()
		if t := s.timeout(d.why, false); t > 0 && now-d.since >= t {
			r.rings = append(r.rings, ringExpiry{rc, d, true})
		} else if stopping && d.why == whyIdle {
			r.rings = append(r.rings, ringExpiry{rc, d, false})
		}
	}
	rs.mu.Unlock()
	for _, e := range r.rings {
		if e.rc.dl.load() != e.seen {
			continue // it moved on meanwhile: a request came, say
		}
		if e.expired {
			s.stats.timeouts[e.why].Add(1)
		}
		e.rc.kill(fmt.Errorf("engine: %s timeout: %w", e.why, context.DeadlineExceeded))
	}
	clear(r.rings)
}

// peekedRingHello reports whether the whole request in the first end
// bytes of the accept loop's peek buffer is the ring handshake, and what
// it asks for. On the accept loop.
func (s *Server) peekedRingHello(end int) (ringAsk, bool) {
	o := &s.oneshot
	if end < len(ringHelloPrefix) || !bytes.Contains(o.peek[:min(end, 32)], ringHelloPrefix) {
		return ringAsk{}, false
	}
	if o.asm == nil {
		o.asm = frame.NewAssembler(frame.SimpleIPC, s.opts.maxRequest)
	}
	o.asm.Reset()
	msg, _, done, err := o.asm.Next(o.peek[:end])
	if err != nil || !done {
		return ringAsk{}, false
	}
	return parseRingHello(msg)
}

// adoptRing takes a connection that sent the ring handshake (end bytes,
// peeked) before it was accepted. On the accept loop, which it never
// blocks: the rings are set up by the connection's own goroutine.
// It owns fd and reports whether the descriptor table is full.
func (s *Server) adoptRing(fd int, cred uds.Cred, end int, ask ringAsk) (fdErr bool) {
	if !consume(fd, end, &s.oneshot.sink) {
		_ = sysClose(fd)
		return false
	}
	uc, err := fdConn(fd)
	if err != nil {
		return s.connFailed(err)
	}
	s.adoptRingConn(uc, Peer{Cred: cred}, ask)
	return false
}

// adoptRingConn counts uc, whose ring handshake asking for ask was read,
// against the caps and starts its goroutine, or declines. A zero peer.ID
// is given the next. Any goroutine; it never blocks.
func (s *Server) adoptRingConn(uc *net.UnixConn, peer Peer, ask ringAsk) {
	if s.stopping.Load() || !s.rings.enter(s.opts.maxRings) {
		_, _ = writeConn(uc, ringNoWire) // a fresh socket takes a few bytes
		_ = uc.Close()
		return
	}
	if !s.admitNew(uc, peer.Cred) {
		s.rings.leave(nil)
		return
	}
	s.adm.settle()
	if peer.ID == 0 {
		peer.ID = s.stats.accepted.Add(1)
	}
	rc := &ringConn{s: s, uc: uc, peer: peer, inPlace: ask.inPlace}
	go rc.run(grantRing(ask.size, s.opts.ringSize))
}

// ringConn is a connection served through rings, by one goroutine (run).
//
// Invariant: the goroutine owns in, out, reply, gather, spill, bell and
// next, and lends them to the server's watch while it waits there with a
// serve (serveWatched: from the hand-over to the hand-back the watch's
// goroutine acts for it, and the goroutine touches nothing); other
// goroutines (the reaper, Close) only read dl and call kill,
// which closes the socket and both rings at most once: every wait of the
// goroutine then ends, and its next ring or socket call fails. The rings'
// mappings stay until the goroutine has released its lease and
// reservation.
type ringConn struct {
	s    *Server
	uc   *net.UnixConn
	peer Peer // immutable

	ctx    context.Context // &pctx, which carries peer; cancelled by kill
	pctx   peerCtx
	cancel context.CancelCauseFunc

	in      *ring.Reader // requests
	out     *ring.Writer // replies
	watch   ringWait     // in's place in the server's watch
	chunk   int          // the largest record a reply Write makes
	inPlace bool         // the client reads one-record replies in place (ringreply.go)
	reply   ReplyWriter
	gather  []byte // a request that spans records, in a buffer of the memory budget's (take)
	bell    [64]byte
	slices  ringSlices
	start   int64 // when the current handler started

	// next is the request ring's next record, taken when the last request
	// gave its record back (ReleaseNext) or by the spin that waited for it
	// (waitRequest), and not yet served: held, while hasNext, under the
	// lease. served counts requests not yet added to the server's
	// statistics.
	next     []byte
	nextMore bool
	hasNext  bool
	served   uint64

	dl deadlineWord // which deadline runs (whyIdle, whyRequest, whyHandler, whyWrite), since when

	// For a server whose handlers run inline, the watch serves the
	// connection while its goroutine waits in it (serveWatched):
	// serveFn is rc.serveWatched, made once (a method value allocates);
	// onWatch says that a handler runs on the watch (its reply must not
	// wait: ringreply.go); watched, that the watch served requests during
	// the wait, and ended, that one of them ended the connection. Set by
	// whichever goroutine holds the connection (the hand-over orders
	// them).
	serveFn func() bool
	onWatch bool
	watched bool
	ended   bool
	// spill holds what a handler on the watch wrote once the reply ring
	// had no room, and spilling says that the reply goes there
	// (ringreply.go); the connection's goroutine sends it (sendSpill).
	spill    []byte
	spillAt  int // spill[spillAt:] is still to go into the ring
	spilling bool
	// spillSent is when sendSpill began, while it runs (else 0): every
	// wait for room in it runs under the one write deadline from then.
	spillSent int64

	killOnce sync.Once
}

// setWhy starts deadline w at since. On the connection's goroutine, or on
// the watch's for it.
func (rc *ringConn) setWhy(w why, since int64) {
	// Within one tick of the clock since stays, and in a stream of
	// requests both do: only a change is stored.
	if !rc.dl.storeChanged(w, since) {
		return
	}
	if w != whyIdle && w != whyHandler {
		rc.s.hurry() // see conn.setDeadline
	}
}

// kill ends the connection: the handler's context is cancelled with
// cause, the socket and both rings close. Any goroutine; once.
func (rc *ringConn) kill(cause error) {
	rc.killOnce.Do(func() {
		// The rings close before the context is cancelled: a handler
		// that wakes at the cancellation must find its reply refused, or
		// the client could take a reply cut short by the server's end
		// for a whole one.
		_ = rc.uc.Close()
		if rc.in != nil {
			_ = rc.in.Close()
		}
		if rc.out != nil {
			_ = rc.out.Close()
		}
		if rc.cancel != nil {
			rc.cancel(cause)
		}
	})
}

// run sets the rings up and serves requests until the connection ends.
func (rc *ringConn) run(size int) {
	s := rc.s
	defer s.rings.leave(rc)
	defer s.adm.forget(rc.peer.Cred)
	defer rc.kill(net.ErrClosed)
	if err := rc.setup(size); err != nil {
		s.log.Debug("engine: ring set-up failed", "conn", rc.peer.ID, "err", err)
		return
	}
	if !s.rings.publish(rc) {
		return
	}
	for rc.serveOne() {
	}
	// A record taken and not served is dropped, not given back: a client
	// that posted it must not count it as handled (Writer.Taken).
	rc.in.Drop()
	rc.dropGather()
	rc.reply.dropSpill()
	rc.countServed()
}

// growGather returns buf (rc.gather) moved to a buffer of the memory
// budget's with room for need bytes, or false when the budget has no room
// for it. The buffers come from the budget's arena, which charges them
// while they are out and keeps them for the next large request of any
// connection. On the connection's goroutine.
func (rc *ringConn) growGather(buf []byte, need int) ([]byte, bool) {
	nb := rc.s.budget.take(max(need, 2*cap(buf)))
	if nb == nil {
		return buf, false
	}
	nb = append(nb, buf...)
	rc.dropGather()
	rc.gather = nb // given back whatever the request's end
	return nb, true
}

// dropGather gives the gathering buffer back to the memory budget. On the
// connection's goroutine.
func (rc *ringConn) dropGather() {
	if rc.gather != nil {
		rc.s.budget.give(rc.gather)
		rc.gather = nil
	}
}

// countServed adds the requests served since the last call to the
// server's statistics: at once for a request with a reply, and for a
// stream of one-way messages once the ring runs dry (and at the end),
// rather than per message, which would make every ring goroutine update
// one shared word for each.
func (rc *ringConn) countServed() {
	if rc.served > 0 {
		rc.s.stats.requests.Add(rc.served)
		rc.served = 0
	}
}

// setup makes the rings, maps its sides and hands the memfds to the
// client. Before publish, so nothing else touches rc yet.
func (rc *ringConn) setup(size int) error {
	s := rc.s
	ctx, cancel := context.WithCancelCause(s.baseCtx)
	rc.pctx = peerCtx{ctx, &rc.peer}
	rc.ctx = &rc.pctx
	rc.cancel = cancel
	rc.reply.ring = rc
	reqF, err := ring.Create(size)
	if err != nil {
		_, _ = writeConn(rc.uc, ringNoWire)
		return err
	}
	defer reqF.Close()
	repF, err := ring.Create(size)
	if err != nil {
		_, _ = writeConn(rc.uc, ringNoWire)
		return err
	}
	defer repF.Close()
	opts, err := ringOptions(rc.uc, s.opts.ringSpin)
	if err != nil {
		return err
	}
	defer opts.Doorbell.Close()
	// Every request is read, by its handler, after the serving
	// bookkeeping: a wait that ends with one asks for its lines at once.
	// (The Client reads a reply in place only if its caller looks.)
	opts.Prefetch = true
	if rc.in, err = ring.NewReader(reqF, opts); err != nil {
		return err
	}
	rc.watch = newRingWait(rc.in)
	if s.opts.inline {
		// Not for WithInlineFilter: the filter would read the request
		// where the client can still change it before its handler runs.
		rc.serveFn = rc.serveWatched
	}
	if rc.out, err = ring.NewWriter(repF, opts); err != nil {
		return err
	}
	// Deadlines in the past: Next and Reserve never sleep in the ring,
	// where a client could keep this goroutine (and its thread) in a
	// futex; every wait is on the socket.
	rc.in.SetDeadline(time.Unix(1, 0))
	rc.out.SetDeadline(time.Unix(1, 0))
	rc.chunk = max(rc.out.MaxRecord()/2, 1)
	if d := s.opts.writeTimeout; d > 0 {
		_ = rc.uc.SetWriteDeadline(time.Now().Add(d))
	}
	if err := writeWithFiles(rc.uc, ringOKWire, reqF, repF); err != nil {
		return err
	}
	_ = rc.uc.SetWriteDeadline(time.Time{})
	rc.setWhy(whyIdle, s.clock.Load())
	return nil
}

// serveOne serves the next request; false ends the connection.
func (rc *ringConn) serveOne() bool {
	s := rc.s
	if s.stopping.Load() {
		return false // between requests: a graceful stop closes here
	}
	// A record taken when the last request gave its own back, or one
	// there already, is served at once (the ring's deadline lies in the
	// past, so Next does not wait): a busy connection, a stream of one-way
	// messages above all, skips the wait's bookkeeping.
	var p []byte
	var more bool
	var err error
	if rc.hasNext {
		p, more = rc.takeNext()
	} else if p, more, err = rc.in.Next(); err == ring.ErrTimeout {
		rc.countServed()
		rc.setWhy(whyIdle, s.clock.Load())
		if rc.waitRequest(true) != nil {
			return false
		}
		if rc.watched {
			return rc.afterWatch() // then from the top, as after a request
		}
		p, more, err = rc.nextRecord()
	}
	oneWay := err == nil && rc.in.Marked() // the first record says
	req, err := rc.readRequest(p, more, err)
	if err != nil {
		if err == errRingBudget {
			s.stats.budgetClosed.Add(1)
			s.log.Debug("engine: ring request beyond the memory budget; closing connection", "conn", rc.peer.ID)
		}
		if errors.Is(err, ring.ErrTooLarge) || errors.Is(err, ring.ErrCorrupt) {
			s.stats.protocolErrors.Add(1)
			if s.logProto.allow(s.now()) {
				s.log.Warn("engine: bad ring request; closing connection", "conn", rc.peer.ID, "uid", rc.peer.Cred.UID, "err", err)
			}
		}
		return false
	}
	return rc.handle(req, oneWay)
}

// handle runs the handler for req and ends its reply; false ends the
// connection. The request's last record is given back afterwards, and the
// next record, if there, taken (next). On the connection's goroutine, or
// on the watch's for it (serveWatched).
func (rc *ringConn) handle(req []byte, oneWay bool) bool {
	s := rc.s
	if rc.served++; !oneWay {
		rc.countServed() // counted before the client can see a reply
	}
	rc.start = s.clock.Load()
	rc.setWhy(whyHandler, rc.start)
	rc.reply.beginRing(oneWay)
	herr, panicked := s.invoke(rc.ctx, rc.peer.ID, req, &rc.reply)
	rc.dropGather() // for the next request that spans records, of any connection
	if panicked {
		// The reply stops where it was: the rings close first, so that
		// the record the handler held is dropped, not published, and the
		// client sees the reply cut. The request's record is dropped too:
		// its handler did not finish.
		rc.in.Drop()
		rc.kill(errHandlerPanic)
		rc.reply.dropRing()
		return false
	}
	if rc.ctx.Err() != nil {
		// Cancelled while it ran (the connection killed at a deadline,
		// the server stopping): the handler may have stopped half-way.
		// Its record is dropped, not given back, so that a client does
		// not count a one-way message as handled; a reply cannot go out.
		rc.in.Drop()
		rc.reply.dropRing()
		return false
	}
	// The reply goes out before the request's record is given back: the
	// give-back publishes the ring's head behind a fence, and the look at
	// the next record reads a line the client is about to write, a
	// transfer from its processor; neither should delay the reply.
	var ferr error
	if !oneWay {
		ferr = rc.reply.finishRing()
	}
	rc.next, rc.nextMore, rc.hasNext = rc.in.ReleaseNext()
	if ferr != nil {
		return false
	}
	if errors.Is(herr, ErrQuit) {
		s.requestQuit()
	}
	return true
}

// ringWatchServeMax is the largest request the watch serves itself: the
// handler of a larger one (a copy of it at least) would hold every ring of
// the watch for its whole length, where on their connections' goroutines
// the handlers of several large requests run on several processors, and
// the hand-off costs little beside them.
const ringWatchServeMax = 64 << 10

// serveWatched serves the connection on the watch's goroutine while the
// connection's goroutine waits for a request in the watch (ringWait.serve),
// for a server whose handlers all run inline (WithInlineHandlers): the
// watch saw the request ring Ready. A request of one record of at most
// ringWatchServeMax bytes (and within the size cap) is served there, and
// the ring stays in the watch (true); anything else goes back to the
// connection's goroutine (false) as a wait that ended: a record it must
// serve itself (next: a request of several records, or a larger one), an
// error for its Next, a reply that spilled (sendSpill), a request that
// ended the connection (ended), or a server that stops.
func (rc *ringConn) serveWatched() bool {
	s := rc.s
	if s.stopping.Load() {
		return false
	}
	var p []byte
	var more bool
	if rc.hasNext {
		p, more = rc.takeNext()
	} else {
		var err error
		if p, more, err = rc.in.Next(); err != nil {
			return false // the connection's goroutine meets it again
		}
	}
	if more || len(p) > min(s.opts.maxRequest, ringWatchServeMax) {
		rc.next, rc.nextMore, rc.hasNext = p, more, true
		return false
	}
	rc.watched = true
	rc.onWatch = true
	ok := rc.handle(p, rc.in.Marked())
	rc.onWatch = false
	if !ok {
		rc.ended = true
		return false
	}
	if rc.spilling || s.stopping.Load() {
		return false
	}
	if !rc.hasNext {
		rc.countServed() // the ring ran dry, as on the connection's goroutine
	}
	rc.setWhy(whyIdle, s.clock.Load())
	return true
}

// afterWatch is the connection's goroutine's part after a wait in which
// the watch served requests (serveWatched): a reply it spilled goes out
// before anything else. False ends the connection.
func (rc *ringConn) afterWatch() bool {
	rc.watched = false
	if rc.ended {
		return false
	}
	return !rc.spilling || rc.reply.sendSpill() == nil
}

// readRequest takes the request whose first record Next returned (p,
// more, err): a lease on the record itself when the request is one record
// (valid until Release), or the records gathered into rc.gather, whose
// last record stays leased. Either way the request's last record is given
// back only once its handler has returned: a client counts a one-way
// message whose records were all given back as handled (Writer.Taken).
// A request refused is dropped (ring.Reader.Drop), not given back.
func (rc *ringConn) readRequest(p []byte, more bool, err error) ([]byte, error) {
	limit := rc.s.opts.maxRequest
	if err != nil {
		return nil, err
	}
	if !more {
		if len(p) > limit {
			rc.in.Drop()
			return nil, ring.ErrTooLarge
		}
		return p, nil
	}
	buf := rc.gather[:0]
	rc.setWhy(whyRequest, rc.s.now()) // short: the reaper's clock may be a nap old
	for {
		if len(buf)+len(p) > limit {
			rc.in.Drop()
			return nil, ring.ErrTooLarge
		}
		if len(buf)+len(p) > cap(buf) {
			var ok bool
			if buf, ok = rc.growGather(buf, len(buf)+len(p)); !ok {
				rc.in.Drop()
				return nil, errRingBudget
			}
		}
		buf = append(buf, p...)
		if !more {
			break
		}
		rc.in.Release()
		if err := rc.waitRequest(false); err != nil {
			return nil, err
		}
		if p, more, err = rc.nextRecord(); err != nil {
			return nil, err
		}
	}
	rc.gather = buf
	return buf, nil
}

// nextRecord takes the next record of the request ring, which
// waitRequest said is there, or took (next). The ring's deadline lies in
// the past, so Next never sleeps in the ring: when it finds nothing after
// all (a client that changed the ring between Arm and Next), it reports
// ErrTimeout, and the wait goes back to the socket.
func (rc *ringConn) nextRecord() ([]byte, bool, error) {
	for stale := 0; ; stale++ {
		if rc.hasNext {
			p, more := rc.takeNext()
			return p, more, nil
		}
		p, more, err := rc.in.Next()
		if err != ring.ErrTimeout {
			return p, more, err
		}
		if stale == ringStaleLimit {
			return nil, false, errRingStale
		}
		if err := rc.waitRequest(false); err != nil {
			return nil, false, err
		}
	}
}

// takeNext takes the record held in next; hasNext must be set.
func (rc *ringConn) takeNext() ([]byte, bool) {
	p, more := rc.next, rc.nextMore
	rc.next, rc.hasNext = nil, false
	return p, more
}

// waitRequest waits until the request ring has a record (or an error) to
// give: in a crowd of waits (more than ringCrowd), in the server's watch
// (ringWatch); else a short spin and, alone, a short sleep on the ring's
// futex; then the socket. A spin that ends with a record takes it (next,
// for nextRecord): the spin's hold on the mapping becomes the lease. A
// wait between requests (idle) lets the watch serve them (serveWatched),
// which leaves the counts and the idle deadline as a wait's start does:
// a ring it hands back with nothing for it waits on the socket as any
// other, and one that ends with watched set may have nothing to take.
func (rc *ringConn) waitRequest(idle bool) error {
	rs := &rc.s.rings
	w := rs.gauge.enter(rs.watchOK, rs.spinMax) // a spin's place, where it may spin
	defer w.leave()
	if w.crowd && rs.watchOK {
		if rc.in.Ready() { // a record there already (the next of a request, say)
			return nil
		}
		rc.watch.serve = nil
		if idle {
			rc.watch.serve = rc.serveFn
		}
		if rs.watch.wait(&rc.watch, time.Time{}) {
			if rc.watch.ready || rc.in.Ready() {
				return nil
			}
			return rc.waitArmed()
		}
		w.takeSpin(rs.spinMax) // the watch refused: as any wait
	}
	if w.spin {
		p, more, ok := rc.in.SpinNext()
		if ok {
			rc.next, rc.nextMore, rc.hasNext = p, more, true
			return nil
		}
		w.unspin()
	}
	if ringSleepSlot(rs.spinMax, rs.gauge.waits()) {
		ok := rc.in.Sleep(ringSleep)
		ringSleepers.Add(-1)
		if ok {
			return nil
		}
	}
	return rc.waitArmed()
}

// waitArmed waits on the socket until the request ring has a record (or
// an error) to give.
func (rc *ringConn) waitArmed() error {
	for !rc.in.Arm() {
		if err := rc.waitBell(); err != nil {
			return err
		}
	}
	return nil
}

// waitRoom waits until the reply ring has room for a record of n bytes
// (or an error to give), under the deadline roomDeadline gives; the one
// it found runs again after.
func (rc *ringConn) waitRoom(n int) error {
	if rc.out.Ready(n) { // room known, or the ring says why not: no spin, no clock
		return nil
	}
	if rc.s.rings.spin() {
		ok := rc.out.Spin(n)
		rc.s.rings.unspin()
		if ok {
			return nil
		}
	}
	if ringSleepSlot(rc.s.rings.spinMax, rc.s.rings.gauge.waits()+1) {
		ok := rc.out.Sleep(n, ringSleep)
		ringSleepers.Add(-1)
		if ok {
			return nil
		}
	}
	if rc.out.Arm(n) {
		return nil
	}
	prev := rc.dl.load()
	rc.setWhy(rc.roomDeadline(rc.s.now()))
	defer rc.setWhy(prev.why, prev.since)
	for !rc.out.Arm(n) {
		if err := rc.waitBell(); err != nil {
			return err
		}
	}
	return nil
}

// roomDeadline is the deadline a wait for room in the reply ring runs
// under, from now. For a handler's reply, the write deadline from now or
// the handler's own from its start, whichever ends first, as for a pooled
// reply on the socket: a client that takes a record now and then must not
// keep a handler past its deadline (its deadline would otherwise run only
// between the waits). For a spilled reply that the connection's goroutine
// sends after the handler (sendSpill), one write deadline for all of it,
// as an inline reply's tail on the socket has: a client that takes a
// record every few seconds would otherwise keep the spill's memory as
// long as it likes.
func (rc *ringConn) roomDeadline(now int64) (why, int64) {
	if rc.spillSent != 0 {
		return whyWrite, rc.spillSent
	}
	h, wr := int64(rc.s.opts.handlerTimeout), int64(rc.s.opts.writeTimeout)
	if h > 0 && (wr == 0 || rc.start+h <= now+wr) {
		return whyHandler, rc.start
	}
	return whyWrite, now
}

// waitBell waits for a doorbell byte: the client committed or released a
// record. An error (the client closed, kill) ends the connection.
func (rc *ringConn) waitBell() error {
	_ = rc.uc.SetReadDeadline(time.Now().Add(rc.slices.next()))
	_, err := rc.uc.Read(rc.bell[:])
	if err == nil {
		rc.slices.reset()
		return nil
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil // a slice ended: look at the ring again (ringSlices)
	}
	return err
}

// ringSlices bounds a wait on the socket: the waiting side looks at its
// ring again when a slice ends without a doorbell byte, so that a
// wake-up that never comes (a peer that clears the parking word without
// ringing, by malice or by a fault) costs a slice, never the whole
// wait. Slices double from ringSliceMin to ringSliceMax while nothing
// comes, so an idle connection wakes once in ten seconds, and start again
// short after a byte. An honest peer never needs a slice (the parking
// handshake loses no wake-up), so the long ones cost only a peer that
// breaks the protocol; the Client's deadline and the server's reaper end
// a wait on time whatever the slice. The first slice is not short
// either: a slice that ends costs a wake-up and an allocation (net wraps
// the deadline error), and a peer that is merely slow (a large message,
// a busy machine) should not pay them. Owned by the waiting goroutine.
type ringSlices struct{ cur time.Duration }

const (
	ringSliceMin = 20 * time.Millisecond
	ringSliceMax = 10 * time.Second
)

func (s *ringSlices) next() time.Duration {
	if s.cur == 0 {
		s.cur = ringSliceMin
	}
	d := s.cur
	s.cur = min(2*s.cur, ringSliceMax)
	return d
}

func (s *ringSlices) reset() { s.cur = 0 }

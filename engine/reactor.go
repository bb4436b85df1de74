package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// reactor owns gnet: the event loops, what the server knows of each loop
// (loopState), the loops' doorbells, and the enrolment of accepted
// connections. The protocol (serve.go, events.go) sees a loop only through
// a connection's loop field and the reactor's methods; nothing of gnet's
// leaves the package.
//
// Invariant, in the style of a state table:
//
//   - gcli and bells are written once, by Serve's start under startMu,
//     before any connection exists, and read-only after; Close stops gcli
//     after the accept loop has exited (an enrolment during gnet's stop
//     waits forever) and closes the bells after every loop stopped.
//   - loops maps each gnet loop to its state; entries are added under mu
//     by OnOpen on that loop and never removed. A loopState is otherwise
//     its loop's alone, except parked (any goroutine reads it) and the
//     atomic counters.
//   - enrolling counts enrolments in progress. A loop may start a solo wait
//     (park) only while it is zero and the server is not stopping; an
//     enroller raises it and then rings every parked loop, so either the
//     loop sees the count or the enroller sees parked (park and wakeParked).
type reactor struct {
	gcli      *gnet.Client
	bells     []*doorbell
	enrolling atomic.Int32

	mu    sync.Mutex // guards loops
	loops map[gnet.EventLoop]*loopState

	busyPoll int64     // WithBusyPoll, for new loop states
	stats    *counters // the server's
}

// newReactor returns a reactor whose loops will busy-poll up to busyPoll
// where they can: the poll's look needs ppoll (as solo waits do), and with
// a single processor (GOMAXPROCS follows a container's CPU quota too) a
// loop that spins only keeps its peer from running.
func newReactor(busyPoll time.Duration) reactor {
	if !soloSupported || runtime.GOMAXPROCS(0) < 2 {
		busyPoll = 0
	}
	return reactor{loops: make(map[gnet.EventLoop]*loopState), busyPoll: int64(busyPoll)}
}

// startLoops starts n event loops that report to h, and a doorbell for
// each. A loop without a doorbell is told through gnet's task queue
// instead, and never waits on a connection alone. It runs once, in Serve.
func (r *reactor) startLoops(h gnet.EventHandler, n int, lockOSThread bool, log *slog.Logger) error {
	gcli, err := gnet.NewClient(h,
		gnet.WithNumEventLoop(n),
		gnet.WithReadBufferCap(readBufferCap),
		gnet.WithLockOSThread(lockOSThread),
		gnet.WithLogger(gnetLogger{log}),
	)
	if err == nil {
		err = gcli.Start()
	}
	if err != nil {
		return err
	}
	r.gcli = gcli
	for range n { // gnet enrolls round-robin: one bell lands on each loop
		b, err := newDoorbell(gcli)
		if err != nil {
			log.Warn("engine: no doorbell for a loop; pooled replies finish through gnet's task queue", "err", err)
			break
		}
		r.bells = append(r.bells, b)
	}
	return nil
}

// stopLoops stops the loops; gnet closes every connection, running
// OnClose for each. Close calls it once, after the accept loop has exited.
func (r *reactor) stopLoops() error { return r.gcli.Stop() }

// closeBells closes the doorbells. Close calls it once, after the loops
// and the goroutines that ring them (workers, write watches) are gone.
func (r *reactor) closeBells() {
	for _, b := range r.bells {
		b.close()
	}
}

// enroll hands uc to an event loop chosen by gnet, with c as its context;
// gnet closes uc if it fails. Any loop may be in a solo wait, so every
// parked one is rung first. It runs on the accept loop and lobby
// goroutines.
func (r *reactor) enroll(uc *net.UnixConn, c *conn) error {
	if n := c.s.opts.sendBuffer; n > 0 {
		_ = uc.SetWriteBuffer(n) // a hint: the kernel caps it
	}
	r.enrolling.Add(1)
	r.wakeParked()
	_, err := r.gcli.EnrollContext(uc, c)
	r.enrolling.Add(-1)
	if err == nil && c.gc == nil {
		// gnet could not add the descriptor to its poller: it closed it
		// and reports no error, and OnOpen (which sets gc, and which
		// EnrollContext waits for) never ran.
		err = errNotEnrolled
	}
	return err
}

// errNotEnrolled: an event loop could not watch a new connection.
var errNotEnrolled = errors.New("engine: the event loop could not watch the connection")

// loopStateLocked returns el's state, made at its first connection; the
// caller holds mu.
func (r *reactor) loopStateLocked(el gnet.EventLoop) *loopState {
	ls := r.loops[el]
	if ls == nil {
		ls = &loopState{max: r.busyPoll, stats: r.stats}
		r.loops[el] = ls
	}
	return ls
}

// attach counts c on its loop. It runs in OnOpen, on that loop.
func (r *reactor) attach(c *conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ls := r.loopStateLocked(c.link.g.EventLoop())
	c.loop = ls
	ls.conns++
}

// detach uncounts c. It runs in OnClose, on c's loop.
func (r *reactor) detach(c *conn) {
	if c.loop != nil {
		c.loop.conns-- // the loop's own
	}
}

// registerBell runs in OnOpen of a loop's doorbell.
func (r *reactor) registerBell(el gnet.EventLoop, b *doorbell) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ls := r.loopStateLocked(el); ls.bell == nil {
		ls.bell = b
	}
}

// park marks l as waiting on a connection alone, unless an enrolment is in
// progress or the server stops; then it reports false and l must go back
// to gnet. On l's loop; unpark follows every successful park.
func (r *reactor) park(l *loopState, stopping *atomic.Bool) bool {
	l.parked.Store(true)
	if r.enrolling.Load() > 0 || stopping.Load() {
		l.parked.Store(false)
		return false
	}
	return true
}

// unpark ends a solo wait. On l's loop.
func (r *reactor) unpark(l *loopState) { l.parked.Store(false) }

// wakeParked rings the doorbell of every loop in a solo wait, so that it
// returns to gnet and runs what was queued for it. Any goroutine.
// anyParked reports whether a loop is parked in a solo wait.
func (r *reactor) anyParked() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.loops {
		if l.parked.Load() {
			return true
		}
	}
	return false
}

func (r *reactor) wakeParked() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.loops {
		if l.parked.Load() && l.bell != nil {
			l.bell.wake()
		}
	}
}

// gnetLogger routes gnet's log lines to slog; gnet would otherwise print
// INFO lines to stdout.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(f string, a ...any) { g.l.Debug("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Infof(f string, a ...any)  { g.l.Debug("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Warnf(f string, a ...any)  { g.l.Warn("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Errorf(f string, a ...any) { g.l.Error("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Fatalf(f string, a ...any) { g.l.Error("gnet: " + fmt.Sprintf(f, a...)) }

// link is the reactor's handle on a connection: gnet's connection, which
// reaches its loop, and the callbacks of writes handed to the loop. g is
// set in OnOpen; the callbacks are bound once, at the first pooled
// request, since a closure allocates.
type link struct {
	g                gnet.Conn
	chunkCB, finalCB gnet.AsyncCallback
}

// action is what the protocol asks of the reactor after serving an event.
type action uint8

const (
	keepConn action = iota
	closeConn
)

// gnetAction translates a for gnet's callbacks.
func (a action) gnetAction() gnet.Action {
	if a == closeConn {
		return gnet.Close
	}
	return gnet.None
}

// onLoop queues task to run on c's event loop. Any goroutine.
func (c *conn) onLoop(task gnet.Runnable) error {
	return c.link.g.EventLoop().Execute(c.s.baseCtx, task)
}

// writeOnLoop hands b to c's loop, which writes what the socket takes,
// buffers the rest, and then calls onChunkWritten, or onFinalWritten for
// a reply's last bytes. On the worker that owns the reply.
func (c *conn) writeOnLoop(b []byte, final bool) error {
	cb := c.link.chunkCB
	if final {
		cb = c.link.finalCB
	}
	return c.link.g.AsyncWrite(b, cb)
}

// writeCallbacksBound reports whether bindWriteCallbacks ran. On the loop.
func (c *conn) writeCallbacksBound() bool { return c.link.chunkCB != nil }

// bindWriteCallbacks makes writeOnLoop's callbacks. On the loop, before
// the first pooled request of c.
func (c *conn) bindWriteCallbacks() {
	c.link.chunkCB = func(_ gnet.Conn, err error) error { return c.onChunkWritten(err) }
	c.link.finalCB = func(_ gnet.Conn, err error) error { return c.onFinalWritten(err) }
}

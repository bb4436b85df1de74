package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pktipc/pktipc/uds"
)

// Server is a git simple-ipc compatible server on gnet event loops.
type Server struct {
	// Its life, in order; each step runs once (stopOnce, closeOnce), and
	// startMu keeps Close from running between Serve's steps 1 and 3:
	//
	//  1. Serve starts the event loops and a doorbell per loop,
	//  2. then the workers,
	//  3. then the accept loop and the reaper, and waits for ctx to end, a
	//     quit request (a handler returned ErrQuit) or the socket to be stolen
	//     (each a graceful stop: Shutdown bounded by WithShutdownTimeout), or
	//     for Shutdown or Close from another goroutine.
	//  4. beginStop (Shutdown, Close): stopping is set (no new requests),
	//     parked loops are rung, the listener closes and unlinks its path if it
	//     is still ours, lobby waiters are closed.
	//  5. Shutdown waits until no connection is open and no one-shot reply
	//     lingers (the reaper closes idle ones; busy ones close after their
	//     reply), then calls Close.
	//  6. Close runs step 4 if it has not run, and sets closing (a closing
	//     connection no longer gets a rescue socket).
	//  7. It waits for the accept loop to exit (an enrolment during gnet's
	//     stop would wait forever) and closes lingering one-shot replies.
	//  8. It stops the loops: OnClose runs for every connection, cancelling
	//     handlers' contexts.
	//  9. It closes the job queue and waits for the workers, then for the
	//     write watches.
	//  10. It closes the doorbells, stops the reaper, cancels the base
	//     context, and closes done.

	opts  options
	h     Handler
	ln    *uds.Listener
	epoch time.Time
	log   *slog.Logger

	baseCtx    context.Context
	baseCancel context.CancelFunc

	reactor // the event loops (reactor.go)

	jobs chan *conn

	// reaperQuiet: the reaper does not ring parked loops (a test hook,
	// export_test.go).
	reaperQuiet bool

	adm       *admission
	lobby     *lobby
	budget    memBudget
	oneshot   oneShot // the accept loop's
	lingering lingerers
	shots     shotSet   // one-shot connections on the workers (oneshotpool.go)
	rescues   rescueSet // connections closed at a half close whose replies are being finished (rescue.go)
	rings     ringSet   // connections served through shared-memory rings (rings.go)

	serving    atomic.Bool
	stopping   atomic.Bool // no new connections or requests
	closing    atomic.Bool // connections are being closed by force
	stopOnce   sync.Once
	stopCh     chan struct{} // closed when stopping begins
	quitOnce   sync.Once
	quitCh     chan struct{} // closed when a handler asks to quit
	closeOnce  sync.Once
	closeErr   error
	done       chan struct{} // closed when Close has finished
	reaperStop chan struct{}
	acceptExit chan struct{}
	startMu    sync.Mutex     // orders Serve's start against Close
	wg         sync.WaitGroup // accept loop and reaper
	workers    sync.WaitGroup
	watchers   sync.WaitGroup // write watches (drain.go)

	// clock is Server.now as of the reaper's last tick or nap: the time
	// ring connections start their long deadlines (idle, handler) at,
	// without reading the clock per request. It lags by at most a
	// twentieth of the shortest such timeout, as the checks do.
	clock atomic.Int64

	// napping: the reaper sleeps past its tick because only long
	// deadlines run; reaperKick wakes it (reaper.go, napFor and hurry).
	napping    atomic.Bool
	reaperKick chan struct{}

	stats    counters
	ackSeq   atomic.Uint64 // numbers workers' hand-offs to the loops
	logProto rateLimit
	logAcc   rateLimit
}

// NewServer claims the socket at path with uds.Listen (refusing a live
// server, replacing a dead socket) and returns a server that answers with
// h once Serve runs.
func NewServer(path string, h Handler, opts ...Option) (*Server, error) {
	o, err := serverOptions(h, opts)
	if err != nil {
		return nil, err
	}
	lopts := append([]uds.Option{uds.WithLogger(o.logger), uds.WithBacklog(listenBacklog)}, o.listen...)
	ln, err := uds.Listen(path, lopts...)
	if err != nil {
		return nil, err
	}
	return newServer(ln, h, o), nil
}

// NewServerListener returns a server that answers with h on ln, a
// listener made by the caller: one a service manager passed
// (uds.Inherited), say. The server owns ln from then on and closes it when
// it stops; on an error it is still the caller's. WithListenOptions is
// refused: ln's own options apply.
func NewServerListener(ln *uds.Listener, h Handler, opts ...Option) (*Server, error) {
	if ln == nil {
		return nil, &OptionError{"Listener", nil, "must not be nil"}
	}
	o, err := serverOptions(h, opts)
	if err != nil {
		return nil, err
	}
	if len(o.listen) > 0 {
		return nil, &OptionError{"ListenOptions", o.listen, "do not apply to a listener the caller made"}
	}
	return newServer(ln, h, o), nil
}

// serverOptions checks h and applies opts to the defaults.
func serverOptions(h Handler, opts []Option) (options, error) {
	o := defaultOptions()
	if h == nil {
		return o, &OptionError{"Handler", nil, "must not be nil"}
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	return o, nil
}

func newServer(ln *uds.Listener, h Handler, o options) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:       o,
		h:          h,
		ln:         ln,
		epoch:      time.Now(),
		log:        o.logger,
		baseCtx:    ctx,
		baseCancel: cancel,
		adm:        newAdmission(o.maxConns, o.maxConnsPerUID),
		lobby:      newLobby(o.maxConns, o.maxConnsPerUID),
		budget:     memBudget{limit: o.memoryBudget},
		reactor:    newReactor(o.busyPoll),
		stopCh:     make(chan struct{}),
		quitCh:     make(chan struct{}),
		done:       make(chan struct{}),
		reaperStop: make(chan struct{}),
		reaperKick: make(chan struct{}, 1),
		acceptExit: make(chan struct{}),
	}
	s.reactor.stats = &s.stats
	s.rings.spinMax = int32(max(1, runtime.GOMAXPROCS(0)/2))
	s.rings.watch.idle = s.opts.ringSpin
	s.rings.watch.procs = true
	s.rings.watch.prefetch = true
	// With one processor, a watch always ready to run would keep Go's
	// scheduler from polling the sockets of every other wait (the
	// netpoller runs when a processor has nothing else) for up to its
	// monitor's 10ms.
	s.rings.watchOK = s.opts.ringSpin > 0 && runtime.GOMAXPROCS(0) > 1
	return s
}

// Path returns the socket path the server owns.
func (s *Server) Path() string { return s.ln.Path() }

// Addr returns the listener's address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// now is monotonic time in nanoseconds since the server was made.
func (s *Server) now() int64 { return int64(time.Since(s.epoch)) }

// Serve runs the server until ctx ends, Shutdown or Close is called, a
// handler returns ErrQuit, or the socket is stolen. It returns
// ErrServerClosed after Shutdown, Close or a quit request, ctx.Err() when
// ctx ended, and ErrSocketStolen when the path no longer reaches this
// server; in the last three cases it first stops gracefully, bounded by
// WithShutdownTimeout. Serve may be called once.
func (s *Server) Serve(ctx context.Context) error {
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("engine: Serve called twice")
	}
	s.startMu.Lock()
	if s.stopping.Load() {
		s.startMu.Unlock()
		return ErrServerClosed
	}
	if err := s.startLoops(&events{s: s}, s.opts.loops, s.opts.lockOSThread, s.log); err != nil {
		s.startMu.Unlock()
		_ = s.Close()
		return fmt.Errorf("engine: start event loops: %w", err)
	}
	if !s.opts.inline {
		s.jobs = make(chan *conn, max(s.opts.workers*queuePerWorker, s.opts.maxConns))
		for range s.opts.workers {
			s.workers.Add(1)
			go s.worker()
		}
	}
	s.clock.Store(s.now())
	s.wg.Add(2)
	go s.acceptLoop()
	go s.reaper()
	s.startMu.Unlock()

	result := ErrServerClosed
	select {
	case <-ctx.Done():
		result = ctx.Err()
		s.stopGracefully()
	case <-s.quitCh:
		s.stopGracefully()
	case <-s.ln.Stolen():
		s.log.Warn("engine: socket stolen or removed; stopping", "path", s.Path(), "err", s.ln.StolenErr())
		result = ErrSocketStolen
		s.stopGracefully()
	case <-s.stopCh:
	}
	<-s.done
	return result
}

func (s *Server) stopGracefully() {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.shutdownTimeout)
	defer cancel()
	_ = s.Shutdown(ctx)
}

// beginStop stops accepting: the listener closes (and unlinks the socket
// if it is still ours); idle connections are closed by the reaper, busy ones
// when their request is done.
func (s *Server) beginStop() {
	s.stopOnce.Do(func() {
		s.stopping.Store(true)
		s.hurry() // a napping reaper closes the idle connections now, not after its nap
		s.wakeParked()
		close(s.stopCh)
		if err := s.ln.Close(); err != nil {
			s.log.Warn("engine: close listener", "err", err)
		}
		s.lobby.close() // waiters are closed, none is admitted any more
	})
}

// Shutdown stops the server gracefully: it stops accepting at once, lets
// requests in progress finish (git-style replies still being written
// included), closes idle connections and, unserved, git-style connections
// still queued for a worker, and returns when none is left or ctx ends;
// then it closes the server as Close does. It is safe to call from any
// goroutine, also while Serve runs.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginStop()
	s.startMu.Lock()
	started := s.gcli != nil
	s.startMu.Unlock()
	if started {
		// The accept loop may be serving a git-style request itself: it
		// is in progress too, and its reply may go on to linger.
		select {
		case <-s.acceptExit:
		case <-ctx.Done():
			_ = s.Close()
			return ctx.Err()
		case <-s.done:
			return s.closeErr
		}
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	// A one-shot reply still lingering is a request in progress too: its
	// write deadline bounds it.
	for s.openConns()+s.lingering.count() > 0 {
		select {
		case <-ctx.Done():
			_ = s.Close()
			return ctx.Err()
		case <-s.done:
			return s.closeErr
		case <-t.C:
		}
	}
	return s.Close()
}

// Close stops the server at once: the listener, every connection and the
// event loops close (a client whose handler still runs sees its
// connection end too); it waits for running handlers to return (their
// contexts are cancelled), so a handler that ignores its context holds
// Close up. It is idempotent and safe for concurrent use.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.beginStop()
		s.closing.Store(true)
		s.startMu.Lock()
		defer s.startMu.Unlock()
		if s.gcli != nil {
			// The accept loop must be gone before gnet stops: an Enroll
			// during gnet's stop waits forever.
			<-s.acceptExit
			s.lingering.close()
			s.shots.close()
			s.rescues.close()
			s.rings.close() // nothing adopts any more
			if err := s.stopLoops(); err != nil {
				s.closeErr = fmt.Errorf("engine: stop event loops: %w", err)
			}
			if s.jobs != nil {
				close(s.jobs) // no loop runs, so nothing sends any more
			}
			s.workers.Wait()
			s.watchers.Wait() // every connection closed, so every watch stopped
			s.closeBells()    // nobody rings any more
			close(s.reaperStop)
			s.wg.Wait()
		}
		s.baseCancel()
		close(s.done)
	})
	<-s.done
	return s.closeErr
}

func (s *Server) requestQuit() {
	// stopping first, before the quit's reply is queued: the reply must be
	// its connection's last, and Serve's goroutine, which stops the server
	// on quitCh, may run only after the loop has gone on to the requests
	// pipelined behind it.
	s.stopping.Store(true)
	s.quitOnce.Do(func() { close(s.quitCh) })
}

func (s *Server) openConns() int {
	return s.adm.openCount() + s.rings.open() + s.shots.count() + s.rescues.count()
}

func (s *Server) watchDrain(c *conn)   { s.adm.watchDrain(c) }
func (s *Server) unwatchDrain(c *conn) { s.adm.unwatchDrain(c) }

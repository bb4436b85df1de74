package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/pktipc/pktipc/uds"
)

// Accept back-off on EMFILE/ENFILE and other resource errors (faults.md B8,
// the net/http pattern).
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// Server is a git simple-ipc compatible server on gnet event loops.
type Server struct {
	opts  options
	h     Handler
	ln    *uds.Listener
	epoch time.Time
	log   *slog.Logger

	baseCtx    context.Context
	baseCancel context.CancelFunc

	gcli  *gnet.Client
	jobs  chan *conn
	bells []*doorbell

	// reaperQuiet keeps the reaper from ringing loops in solo waits, so
	// that tests see the other wake-ups do their job. Set before Serve.
	reaperQuiet bool

	adm       *admission
	lobby     *lobby
	budget    memBudget
	oneshot   oneShot // the accept loop's
	lingering lingerers

	mu    sync.Mutex // guards loops
	loops map[gnet.EventLoop]*loopState

	serving    atomic.Bool
	stopping   atomic.Bool  // no new connections or requests
	enrolling  atomic.Int32 // connections being enrolled: no loop may start a solo wait
	closing    atomic.Bool  // connections are being closed by force
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

	stats    counters
	ackSeq   atomic.Uint64 // numbers workers' hand-offs to the loops
	logProto rateLimit
	logAcc   rateLimit
}

// NewServer claims the socket at path with uds.Listen (refusing a live
// server, replacing a dead socket) and returns a server that answers with
// h once Serve runs.
func NewServer(path string, h Handler, opts ...Option) (*Server, error) {
	if h == nil {
		return nil, &OptionError{"Handler", nil, "must not be nil"}
	}
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	lopts := append([]uds.Option{uds.WithLogger(o.logger), uds.WithBacklog(listenBacklog)}, o.listen...)
	ln, err := uds.Listen(path, lopts...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
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
		loops:      make(map[gnet.EventLoop]*loopState),
		stopCh:     make(chan struct{}),
		quitCh:     make(chan struct{}),
		done:       make(chan struct{}),
		reaperStop: make(chan struct{}),
		acceptExit: make(chan struct{}),
	}, nil
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
	gcli, err := gnet.NewClient(&events{s: s},
		gnet.WithNumEventLoop(s.opts.loops),
		gnet.WithReadBufferCap(readBufferCap),
		gnet.WithLockOSThread(s.opts.lockOSThread),
		gnet.WithLogger(gnetLogger{s.log}),
	)
	if err == nil {
		err = gcli.Start()
	}
	if err != nil {
		s.startMu.Unlock()
		_ = s.Close()
		return fmt.Errorf("engine: start event loops: %w", err)
	}
	s.gcli = gcli
	{
		// One doorbell per loop (gnet enrolls round-robin); a loop without
		// one is told through gnet's task queue instead, and never waits
		// on a connection alone.
		for range s.opts.loops {
			b, err := newDoorbell(gcli)
			if err != nil {
				s.log.Warn("engine: no doorbell for a loop; pooled replies finish through gnet's task queue", "err", err)
				break
			}
			s.bells = append(s.bells, b)
		}
	}
	if !s.opts.inline {
		s.jobs = make(chan *conn, max(s.opts.workers*queuePerWorker, s.opts.maxConns))
		for range s.opts.workers {
			s.workers.Add(1)
			go s.worker()
		}
	}
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
		s.wakeParked()
		close(s.stopCh)
		if err := s.ln.Close(); err != nil {
			s.log.Warn("engine: close listener", "err", err)
		}
		s.lobby.close() // waiters are closed, none is admitted any more
	})
}

// Shutdown stops the server gracefully: it stops accepting at once, lets
// requests in progress finish, closes idle connections, and returns when
// none is left or ctx ends; then it closes the server as Close does. It is
// safe to call from any goroutine, also while Serve runs.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginStop()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for s.openConns() > 0 {
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
// event loops close; it waits for running handlers to return (their
// contexts are cancelled). It is idempotent and safe for concurrent use.
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
			if err := s.gcli.Stop(); err != nil {
				s.closeErr = fmt.Errorf("engine: stop event loops: %w", err)
			}
			if s.jobs != nil {
				close(s.jobs) // no loop runs, so nothing sends any more
			}
			s.workers.Wait()
			s.watchers.Wait() // every connection closed, so every watch stopped
			for _, b := range s.bells {
				b.close() // nobody rings any more
			}
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
	s.quitOnce.Do(func() { close(s.quitCh) })
}

func (s *Server) openConns() int { return s.adm.openCount() }

// register runs in OnOpen on the connection's loop.
func (s *Server) register(c *conn) {
	s.adm.register(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	ls := s.loopStateLocked(c.gc.EventLoop())
	c.loop = ls
	ls.conns++
}

func (s *Server) loopStateLocked(el gnet.EventLoop) *loopState {
	ls := s.loops[el]
	if ls == nil {
		ls = &loopState{max: int64(s.opts.busyPoll), stats: &s.stats}
		s.loops[el] = ls
	}
	return ls
}

// registerBell runs in OnOpen of a loop's doorbell.
func (s *Server) registerBell(el gnet.EventLoop, b *doorbell) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ls := s.loopStateLocked(el); ls.bell == nil {
		ls.bell = b
	}
}

// unregister runs in OnClose on the connection's loop.
func (s *Server) unregister(c *conn) {
	s.adm.release(c)
	if c.loop != nil {
		c.loop.conns-- // the loop's own
	}
}

func (s *Server) watchDrain(c *conn)   { s.adm.watchDrain(c) }
func (s *Server) unwatchDrain(c *conn) { s.adm.unwatchDrain(c) }

// call runs the handler, containing a panic (faults.md B13).
func (s *Server) call(c *conn, req []byte) (err error, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			panicked = true
			s.stats.panics.Add(1)
			s.log.Error("engine: handler panic", "conn", c.peer.ID, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	err = s.h.ServeIPC(c.ctx, req, &c.reply)
	if err != nil && !errors.Is(err, ErrQuit) {
		s.log.Debug("engine: handler error", "conn", c.peer.ID, "err", err)
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

func (s *Server) worker() {
	defer s.workers.Done()
	// Each worker has its own ack channel, so that an ack meant for the
	// previous worker of a connection can never reach this one.
	ack := make(chan ackMsg, 4)
	for c := range s.jobs {
		c.ack = ack
		c.reply.begin(false)
		herr, panicked := s.call(c, c.reqMsg)
		c.dropRequest()
		c.finishPooled(herr, panicked)
	}
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	defer close(s.acceptExit)
	spare := openSpare()
	defer func() {
		if spare != nil {
			_ = spare.Close()
		}
	}()
	var delay time.Duration
	for {
		uc, cred, err := s.ln.AcceptUnix()
		if err != nil {
			if s.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			if fdExhausted(err) {
				s.stats.acceptExhausted.Add(1)
				spare = s.shed(spare)
			}
			delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
			if s.logAcc.allow(s.now()) {
				s.log.Warn("engine: accept failed; backing off", "err", err, "delay", delay)
			}
			if !s.sleep(delay) {
				return
			}
			continue
		}
		delay = 0
		pressured, full := s.adm.crowded(cred.UID)
		pressured = pressured || s.lobby.waiting(cred.UID)
		if full { // nothing to evict: whatever it sends, it cannot come in
			s.stats.overCap.Add(1)
			_ = uc.Close()
			continue
		}
		verdict, end := s.peekNew(uc)
		pooled := false
		switch {
		case verdict == peekGone: // git's probe: dropped silently
			s.stats.accepted.Add(1)
			_ = uc.Close()
			continue
		case verdict == peekReady && end > 0:
			var served bool
			if served, pooled = s.serveOneShot(uc, cred, end); served {
				continue
			}
		case verdict == peekWait && pressured:
			if !s.enterLobby(uc, cred) {
				_ = uc.Close()
			}
			continue
		}
		if fdErr := s.admitAndEnroll(uc, cred, pooled); fdErr {
			delay = acceptBackoffMin
			if !s.sleep(delay) {
				return
			}
		}
	}
}

// admitAndEnroll counts uc against the caps (evicting a connection without
// a whole request at a cap) and hands it to an event loop, or closes it.
// It reports whether enrolling failed for lack of descriptors. It runs on
// the accept loop and on lobby goroutines.
// pooled says that WithInlineFilter sent its first request to the pool
// already.
func (s *Server) admitAndEnroll(uc *net.UnixConn, cred uds.Cred, pooled bool) (fdErr bool) {
	ok, victim := s.adm.admit(cred)
	if victim != nil {
		s.stats.evicted.Add(1)
		_ = victim.gc.Close()
	}
	if !ok {
		s.stats.overCap.Add(1) // counted before the client can see the close
		_ = uc.Close()
		return false
	}
	c := s.newConn(Peer{ID: s.stats.accepted.Add(1), Cred: cred})
	c.firstPooled = pooled
	// gnet picks the loop; any of them may be in a solo wait.
	s.enrolling.Add(1)
	s.wakeParked()
	_, err := s.gcli.EnrollContext(uc, c)
	s.enrolling.Add(-1)
	if err != nil {
		// EnrollContext closed uc.
		s.adm.unadmit(cred)
		if fdExhausted(err) {
			s.stats.acceptExhausted.Add(1)
			return true
		}
	}
	return false
}

// shed implements the spare-descriptor trick (faults.md B8): with the
// table full, free the spare, accept the waiting client and close it at
// once so it gets a prompt EOF instead of hanging, then re-reserve.
func (s *Server) shed(spare *os.File) *os.File {
	if spare == nil {
		return openSpare()
	}
	_ = spare.Close()
	if s.ln.SetDeadline(time.Now().Add(time.Millisecond)) == nil {
		if uc, _, err := s.ln.AcceptUnix(); err == nil {
			s.stats.shed.Add(1)
			_ = uc.Close()
		}
		_ = s.ln.SetDeadline(time.Time{})
	}
	return openSpare()
}

func openSpare() *os.File {
	f, err := os.Open(os.DevNull)
	if err != nil {
		return nil
	}
	return f
}

// sleep waits d unless the server stops first.
func (s *Server) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.stopCh:
		return false
	case <-t.C:
		return true
	}
}

// rateLimit allows one event per second.
type rateLimit struct{ last atomic.Int64 }

func (r *rateLimit) allow(now int64) bool {
	last := r.last.Load()
	if last != 0 && now-last < int64(time.Second) {
		return false
	}
	return r.last.CompareAndSwap(last, now)
}

// gnetLogger routes gnet's log lines to slog; gnet would otherwise print
// INFO lines to stdout.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(f string, a ...any) { g.l.Debug("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Infof(f string, a ...any)  { g.l.Debug("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Warnf(f string, a ...any)  { g.l.Warn("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Errorf(f string, a ...any) { g.l.Error("gnet: " + fmt.Sprintf(f, a...)) }
func (g gnetLogger) Fatalf(f string, a ...any) { g.l.Error("gnet: " + fmt.Sprintf(f, a...)) }

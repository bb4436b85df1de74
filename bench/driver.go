package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/pktipc/pktipc/perf"
)

// stallTimeout bounds how long clients may take to finish their last
// operation after the measured window closed; beyond it their connections
// are closed and the run fails.
const stallTimeout = 30 * time.Second

// ErrStalled is returned when clients did not finish within stallTimeout of
// the window's end.
var ErrStalled = errors.New("bench: clients stalled after the measured window")

// Load is what a peer's client measured in the window.
type Load struct {
	// Hist holds one latency sample (ns) per operation completed in the
	// window; its count is the run's operation count.
	Hist *hdrhistogram.Histogram
	// Bytes counts payload bytes moved in the window, requests and replies.
	Bytes int64
	// Errors counts failed operations, warm-up included.
	Errors int64
	// Window, when not nil, is the client's own account of the measured
	// window; what it gives replaces the Meter's readings.
	Window *Window
	// Notes are remarks for the record.
	Notes []string
}

// RoundTripper is one client connection of a Go peer. One goroutine calls
// RoundTrip; Close may be called from another goroutine to abort a blocked
// RoundTrip, and more than once.
type RoundTripper interface {
	// RoundTrip sends one request whose payload is req and reads the whole
	// reply, returning the reply's payload length. req is not retained.
	RoundTrip(ctx context.Context, req []byte) (int, error)
	Close() error
}

// Streamer is one one-way stream of a Go peer. One goroutine calls Send and
// Finish; Close may be called from another goroutine to abort them.
type Streamer interface {
	// Send sends one message whose payload is msg; msg is not retained.
	Send(msg []byte) error
	// Finish ends the stream and waits until the server has read every
	// message sent.
	Finish(ctx context.Context) error
	Close() error
}

// GoClient runs the standard closed-loop load of a Go client: Conns
// goroutines, each with its own connection, issuing one operation after
// another, timed with perf.Now into an HDR histogram.
type GoClient struct {
	// Dial opens a connection to the server at socket (pingpong,
	// concurrency, and once per operation for connect).
	Dial func(ctx context.Context, socket string) (RoundTripper, error)
	// OpenStream opens a one-way stream (stream and fdpass scenarios); nil
	// if the peer does not stream.
	// size is the scenario's size: bytes per message, or descriptors per
	// message for fdpass.
	OpenStream func(ctx context.Context, socket string, size int) (Streamer, error)
	// Request builds the request payload for a message of size bytes; nil
	// fills size bytes of a letter pattern.
	Request func(size int) []byte
	// ReplySize is the expected reply payload length for a request of size
	// bytes; nil expects an echo (the same size), and a negative answer
	// accepts any length.
	ReplySize func(size int) int
}

func patternPayload(size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

// Run drives run's scenario and marks the window on m. Call it from the
// peer's Client, on the runner's goroutine; it starts the clients' own.
func (g GoClient) Run(ctx context.Context, run Run, m *Meter) (Load, error) {
	switch run.Scenario {
	case PingPong, Concurrency:
		if g.Dial != nil {
			return g.drive(ctx, run, m, false)
		}
	case Connect:
		if g.Dial != nil {
			return g.drive(ctx, run, m, true)
		}
	case Stream, FDPass:
		if g.OpenStream != nil {
			return g.stream(ctx, run, m)
		}
	}
	return Load{}, fmt.Errorf("bench: scenario %s not supported by this client", run.Scenario)
}

// Phases of a run, shared by the clients through an atomic.
const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

// timeline runs warm-up and window: it marks m, flips phase, and returns
// early when every client has ended (clientsDone) or ctx is cancelled. A
// window in which no operation was measured yet (measured reports it)
// stays open until one is, within stallTimeout: an operation begun in the
// warm-up can outlast a short window (a stream collecting its replies on
// a busy machine), and a run should measure something, over the time it
// took, rather than fail.
func timeline(ctx context.Context, run Run, m *Meter, phase *atomic.Int32, clientsDone <-chan struct{}, measured func() bool) error {
	wait := func(d time.Duration) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-clientsDone:
			return nil
		case <-t.C:
			return nil
		}
	}
	err := wait(run.Warmup)
	m.Start()
	phase.Store(phaseMeasure)
	if err == nil {
		err = wait(run.Duration)
	}
	for late := time.Now().Add(stallTimeout); err == nil && !measured() && time.Now().Before(late); {
		select {
		case <-clientsDone:
			late = time.Time{}
		default:
			err = wait(time.Millisecond)
		}
	}
	phase.Store(phaseStop)
	return err
}

// closeOnDone calls closeAll once ctx is done, from a goroutine that the
// returned function waits for.
func closeOnDone(ctx context.Context, closeAll func()) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		closeAll()
	}()
	return func() { <-done }
}

// slot holds a client's current connection so that an abort can close it.
type slot struct {
	mu sync.Mutex
	rt RoundTripper
}

func (s *slot) set(rt RoundTripper) {
	s.mu.Lock()
	s.rt = rt
	s.mu.Unlock()
}

func (s *slot) close() {
	s.mu.Lock()
	if s.rt != nil {
		s.rt.Close()
	}
	s.mu.Unlock()
}

// clients are the client goroutines of one GoClient run and what they share.
type clients struct {
	g     GoClient // with Request and ReplySize set
	ctx   context.Context
	run   Run
	rec   *Recorder
	phase atomic.Int32
	tally tally
	// measured is set once an operation that began in the window ended.
	measured atomic.Bool
	wg       sync.WaitGroup
}

func (g GoClient) newClients(ctx context.Context, run Run) *clients {
	if g.Request == nil {
		g.Request = patternPayload
	}
	if g.ReplySize == nil {
		g.ReplySize = func(size int) int { return size }
	}
	return &clients{g: g, ctx: ctx, run: run, rec: NewRecorder(run.Conns)}
}

// drive runs persistent (connect == false) or connect-per-request clients.
func (g GoClient) drive(ctx context.Context, run Run, m *Meter, connect bool) (Load, error) {
	slots := make([]slot, run.Conns)
	closeAll := func() {
		for i := range slots {
			slots[i].close()
		}
	}
	if !connect {
		for i := range slots {
			dctx, cancel := context.WithTimeout(ctx, stallTimeout) // a server that never completes the handshake
			rt, err := g.Dial(dctx, run.Socket)
			cancel()
			if err != nil {
				closeAll()
				return Load{}, fmt.Errorf("bench: dial client %d of %d: %w", i+1, run.Conns, err)
			}
			slots[i].set(rt)
		}
	}
	// Every connection is closed when runCtx ends: at the end of the run,
	// or at once when ctx is cancelled, which unblocks the clients.
	runCtx, cancel := context.WithCancel(ctx)
	waitClosed := closeOnDone(runCtx, closeAll)
	defer func() {
		cancel()
		waitClosed()
	}()
	l := g.newClients(runCtx, run)
	for i := range slots {
		l.wg.Go(func() { l.roundTrips(i, &slots[i], connect) })
	}
	return l.finish(cancel, m, false)
}

// roundTrips is client i: one round trip after another on its slot's
// connection, or with connect each on a connection of its own, until the
// run stops or one fails.
func (l *clients) roundTrips(i int, sl *slot, connect bool) {
	req := l.g.Request(l.run.Size)
	want := l.g.ReplySize(l.run.Size)
	l.ops(i, func() (int, error) {
		var n int
		var err error
		if connect {
			n, err = l.connectRoundTrip(sl, req)
		} else {
			n, err = sl.rt.RoundTrip(l.ctx, req)
		}
		if err == nil && want >= 0 && n != want {
			err = fmt.Errorf("reply of %d bytes, want %d", n, want)
		}
		return len(req) + n, err
	}, false)
}

// ops runs op again and again as client i until the run stops, timing
// and counting the bytes of those in the measured phase. op returns the
// payload bytes it moved. After a failure, recorded in the tally, the
// client's connection is in an unknown state: ops returns false.
//
// chained times the ops back to back, each from the end of the one before
// (one clock read per op, and the loop's own few nanoseconds in each): for
// a stream, whose sends take tens of nanoseconds, a second read per send
// would be a good part of what is measured.
func (l *clients) ops(i int, op func() (int, error), chained bool) bool {
	s := l.rec.Sampler(i)
	var moved int64 // added to the tally once: an atomic add per op would cost a stream more than its send
	defer func() {
		s.Flush()
		l.tally.bytes.Add(moved)
	}()
	measured := false
	t1 := perf.Now()
	for {
		p := l.phase.Load()
		if p == phaseStop {
			return true
		}
		t0 := t1
		if !chained {
			t0 = perf.Now()
		}
		n, err := op()
		t1 = perf.Now()
		if err != nil {
			l.tally.fail(l.ctx, err)
			return false
		}
		if p == phaseMeasure {
			if s.Record(t1 - t0) {
				t1 = perf.Now() // the flush is not the next op's
			}
			moved += int64(n)
			if !measured {
				measured = true
				l.measured.Store(true)
			}
		}
	}
}

// connectRoundTrip dials, makes one round trip and closes; the slot holds
// the connection meanwhile, for an abort to close.
func (l *clients) connectRoundTrip(sl *slot, req []byte) (int, error) {
	rt, err := l.g.Dial(l.ctx, l.run.Socket)
	if err != nil {
		return 0, fmt.Errorf("dial: %w", err)
	}
	sl.set(rt)
	if err := l.ctx.Err(); err != nil {
		// Cancelled between the dial and set: the abort may have missed
		// this connection.
		rt.Close()
		return 0, err
	}
	n, err := rt.RoundTrip(l.ctx, req)
	rt.Close()
	return n, err
}

// tally counts a run's client errors and measured bytes. Any goroutine.
type tally struct {
	errors, bytes atomic.Int64
	first         atomic.Pointer[error]
}

// fail records a client's error unless the run is over (ctx done), when
// closed connections are expected.
func (t *tally) fail(ctx context.Context, err error) {
	if ctx.Err() == nil {
		t.errors.Add(1)
		t.first.CompareAndSwap(nil, &err)
	}
}

// load builds the run's Load from the merged samples and the counts.
func (t *tally) load(rec *Recorder) Load {
	load := Load{Hist: rec.Merged(), Bytes: t.bytes.Load(), Errors: t.errors.Load()}
	if e := t.first.Load(); e != nil {
		load.Notes = append(load.Notes, fmt.Sprintf("%d operations failed; the first: %v", load.Errors, *e))
	}
	return load
}

// finish runs the timeline, waits for the clients and builds the Load. The
// window closes at the timeline's end, or with drained once every client
// has ended (a stream's window lasts until the server has read it all).
func (l *clients) finish(cancel context.CancelFunc, m *Meter, drained bool) (Load, error) {
	clientsDone := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(clientsDone)
	}()
	err := timeline(l.ctx, l.run, m, &l.phase, clientsDone, l.measured.Load)
	if !drained {
		m.Stop()
	}
	select {
	case <-clientsDone:
	case <-time.After(stallTimeout):
		cancel()
		<-clientsDone
		if err == nil {
			err = ErrStalled
		}
	}
	m.Stop()
	if err != nil {
		return Load{}, err
	}
	return l.tally.load(l.rec), nil
}

// stream runs one-way streams: each client sends messages back to back and
// the window closes once every stream has been drained by the server.
func (g GoClient) stream(ctx context.Context, run Run, m *Meter) (Load, error) {
	streams := make([]Streamer, run.Conns)
	closeAll := func() {
		for _, s := range streams {
			if s != nil {
				s.Close()
			}
		}
	}
	for i := range streams {
		dctx, cancel := context.WithTimeout(ctx, stallTimeout)
		s, err := g.OpenStream(dctx, run.Socket, run.Size)
		cancel()
		if err != nil {
			closeAll()
			return Load{}, fmt.Errorf("bench: open stream %d of %d: %w", i+1, run.Conns, err)
		}
		streams[i] = s
	}
	runCtx, cancel := context.WithCancel(ctx)
	waitClosed := closeOnDone(runCtx, closeAll)
	defer func() {
		cancel()
		waitClosed()
	}()
	l := g.newClients(runCtx, run)
	for i, st := range streams {
		l.wg.Go(func() { l.sends(i, st) })
	}
	return l.finish(cancel, m, true)
}

// sends is stream i's client: one message after another until the run
// stops or a send fails, then Finish.
func (l *clients) sends(i int, st Streamer) {
	msg := l.g.Request(l.run.Size)
	send := func() (int, error) { return len(msg), st.Send(msg) }
	if !l.ops(i, send, true) {
		return
	}
	if err := st.Finish(l.ctx); err != nil {
		l.tally.fail(l.ctx, fmt.Errorf("finish: %w", err))
	}
}

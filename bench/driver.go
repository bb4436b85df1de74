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
	// Elapsed, when set, is the client's own measurement of the window
	// (a child client's clock); otherwise the Meter's is used.
	Elapsed time.Duration
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

// Run drives run's scenario and marks the window on m.
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
// early when every client has ended (clientsDone) or ctx is cancelled.
func timeline(ctx context.Context, run Run, m *Meter, phase *atomic.Int32, clientsDone <-chan struct{}) error {
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

// drive runs persistent (connect == false) or connect-per-request clients.
func (g GoClient) drive(ctx context.Context, run Run, m *Meter, connect bool) (Load, error) {
	reqFn, replyFn := g.Request, g.ReplySize
	if reqFn == nil {
		reqFn = patternPayload
	}
	want := run.Size
	if replyFn != nil {
		want = replyFn(run.Size)
	}
	slots := make([]slot, run.Conns)
	closeAll := func() {
		for i := range slots {
			slots[i].close()
		}
	}
	if !connect {
		for i := range slots {
			rt, err := g.Dial(ctx, run.Socket)
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

	rec := NewRecorder(run.Conns)
	var phase atomic.Int32
	var t tally
	var wg sync.WaitGroup
	for i := range slots {
		wg.Go(func() {
			s := rec.Sampler(i)
			defer s.Flush()
			req := reqFn(run.Size)
			opBytes := int64(len(req))
			fail := func(err error) { t.fail(runCtx, err) }
			for {
				p := phase.Load()
				if p == phaseStop {
					return
				}
				t0 := perf.Now()
				var rt RoundTripper
				if connect {
					var err error
					rt, err = g.Dial(runCtx, run.Socket)
					if err != nil {
						fail(fmt.Errorf("dial: %w", err))
						return
					}
					slots[i].set(rt)
					if runCtx.Err() != nil {
						// Cancelled between the dial and set: the
						// abort may have missed this connection.
						rt.Close()
						return
					}
				} else {
					rt = slots[i].rt
				}
				n, err := rt.RoundTrip(runCtx, req)
				if connect {
					rt.Close()
				}
				t1 := perf.Now()
				if err == nil && want >= 0 && n != want {
					err = fmt.Errorf("reply of %d bytes, want %d", n, want)
				}
				if err != nil {
					fail(err)
					return // the connection is in an unknown state
				}
				if p == phaseMeasure {
					s.Record(t1 - t0)
					t.bytes.Add(opBytes + int64(n))
				}
			}
		})
	}
	return finish(runCtx, cancel, run, m, rec, &wg, &phase, &t)
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
		load.Notes = append(load.Notes, fmt.Sprintf("first error: %v", *e))
	}
	return load
}

// finish runs the timeline, waits for the clients and builds the Load.
func finish(ctx context.Context, cancel context.CancelFunc, run Run, m *Meter, rec *Recorder,
	wg *sync.WaitGroup, phase *atomic.Int32, t *tally) (Load, error) {
	clientsDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(clientsDone)
	}()
	err := timeline(ctx, run, m, phase, clientsDone)
	m.Stop()
	select {
	case <-clientsDone:
	case <-time.After(stallTimeout):
		cancel()
		<-clientsDone
		if err == nil {
			err = ErrStalled
		}
	}
	if err != nil {
		return Load{}, err
	}
	return t.load(rec), nil
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
		s, err := g.OpenStream(ctx, run.Socket, run.Size)
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

	reqFn := g.Request
	if reqFn == nil {
		reqFn = patternPayload
	}
	rec := NewRecorder(run.Conns)
	var phase atomic.Int32
	var t tally
	var wg sync.WaitGroup
	for i, st := range streams {
		wg.Go(func() {
			s := rec.Sampler(i)
			defer s.Flush()
			msg := reqFn(run.Size)
			fail := func(err error) { t.fail(runCtx, err) }
			for {
				p := phase.Load()
				if p == phaseStop {
					break
				}
				t0 := perf.Now()
				if err := st.Send(msg); err != nil {
					fail(err)
					return
				}
				if p == phaseMeasure {
					s.Record(perf.Now() - t0)
					t.bytes.Add(int64(len(msg)))
				}
			}
			if err := st.Finish(runCtx); err != nil {
				fail(fmt.Errorf("finish: %w", err))
			}
		})
	}
	// The window ends when the server has drained every stream, so Stop
	// waits for the clients (finish would stop at the timeline's end).
	clientsDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(clientsDone)
	}()
	err := timeline(runCtx, run, m, &phase, clientsDone)
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
	return t.load(rec), nil
}

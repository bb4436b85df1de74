package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pktipc/pktipc/engine"
	"github.com/pktipc/pktipc/internal/gitipc"
	"github.com/pktipc/pktipc/perf"
)

// The pktipc peers: the engine under test.
//
//   - pktipc: handlers inline on the gnet event loops, one persistent
//     engine.Client per client (pipelined in the stream scenario).
//   - pktipc-pool: the same with handlers on the engine's worker pool, as a
//     server whose handlers block would run.
//   - pktipc-git: git's shape against the inline server: engine.Send, one
//     connection per request.
//
// With a git test-tool (--test-tool) two more mix the implementations:
// pktipc-vs-git (engine.Send against git's daemon) and git-vs-pktipc (git's
// client against the test daemon of `ipcbench serve`).

const (
	// engineStreamWin is how many replies a stream leaves unread before it
	// collects half of them: a pipelining client's bounded window, which
	// bounds what either side buffers to 256 messages, and to
	// engineStreamBytes (at least 16 messages) for large ones.
	engineStreamWin   = 256
	engineStreamBytes = 4 << 20
	// engineStreamBatch is how many messages a stream queues
	// (engine.Client.Queue) before it flushes them in one write;
	// engineStreamQueueMax is the largest message it queues rather than
	// sends at once (a larger one fills a write by itself).
	engineStreamBatch    = 32
	engineStreamQueueMax = 16 << 10
	// engineCallBound bounds one client call: a server that stops
	// answering fails the call after this long instead of hanging the
	// client, as the driver's stall timeout does for the run.
	engineCallBound = stallTimeout
	// engineDeadlineRefresh is how often a client moves its deadline
	// forward; refreshing on every call would add a clock read and a
	// runtime timer update to each measured round trip.
	engineDeadlineRefresh = int64(time.Second)
	// engineRefreshCalls is how many calls a client makes between looks
	// at the clock for its deadline's refresh.
	engineRefreshCalls = 8

	// engineMaxRings and engineRingMax bound the rings of the pktipc-shm
	// server: room for every client of the largest run, and rings of four
	// times the largest message.
	engineMaxRings = 1024
	engineRingMax  = 4 << 20
	engineRingMin  = 64 << 10
)

// ringSize is the ring a pktipc-shm client asks for: four times the
// message, so that a message and the start of the next fit, within
// engineRingMin and engineRingMax.
func ringSize(msg int) int {
	n := engineRingMin
	for n < 4*msg && n < engineRingMax {
		n *= 2
	}
	return n
}

// engineSettings configure the pktipc server role.
type engineSettings struct {
	// Pool runs the echo handler on the engine's worker pool instead of
	// inline on the event loops.
	Pool bool `json:"pool,omitempty"`
	// Rings lets clients use shared-memory rings of up to
	// engineRingMax bytes (engine.WithRingLimits).
	Rings bool `json:"rings,omitempty"`
	// NoSpin makes both sides park at once instead of spinning
	// (engine.WithRingSpin(0), engine.WithClientSpin(0)).
	NoSpin bool `json:"nospin,omitempty"`
}

// serveEngine is the pktipc server role: echo every request, or in the
// stream scenario answer each message with an empty reply.
func serveEngine(ctx context.Context, cfg serverConfig, settings engineSettings, ready func()) error {
	sink := cfg.Scenario == Stream
	h := engine.HandlerFunc(func(_ context.Context, req []byte, w *engine.ReplyWriter) error {
		if sink {
			return nil
		}
		_, err := w.WriteUncopied(req) // large replies go out with writev
		return err
	})
	var opts []engine.Option
	if !settings.Pool {
		opts = append(opts, engine.WithInlineHandlers(true))
	}
	if settings.Rings {
		opts = append(opts, engine.WithRingLimits(engineMaxRings, engineRingMax))
	}
	if settings.NoSpin {
		opts = append(opts, engine.WithRingSpin(0))
	}
	s, err := engine.NewServer(cfg.Socket, h, opts...)
	if err != nil {
		return err
	}
	ready()
	if err := s.Serve(ctx); !errors.Is(err, ctx.Err()) && !errors.Is(err, engine.ErrServerClosed) {
		return err
	}
	return nil
}

// gitDaemonSettings configure the test daemon of `ipcbench serve` as the
// server of git-vs-pktipc.
type gitDaemonSettings struct {
	Threads int `json:"threads"`
}

func serveGitDaemon(ctx context.Context, cfg serverConfig, settings gitDaemonSettings, ready func()) error {
	if settings.Threads < 1 {
		return fmt.Errorf("bench: git daemon: %d threads", settings.Threads)
	}
	return gitipc.Serve(ctx, cfg.Socket, settings.Threads, ready)
}

type enginePeer struct {
	server  engineSettings
	oneShot bool
}

// dialer returns the client constructors for run: over rings for
// pktipc-shm.
func (p enginePeer) dialer(run Run) (
	func(context.Context, string) (RoundTripper, error),
	func(context.Context, string, int) (Streamer, error),
) {
	var opts []engine.ClientOption
	if p.server.Rings {
		opts = append(opts, engine.WithRings(ringSize(run.Size)), engine.WithRingRepliesInPlace())
	}
	if p.server.NoSpin {
		opts = append(opts, engine.WithClientSpin(0))
	}
	dial := func(ctx context.Context, socket string) (RoundTripper, error) {
		e, err := newEngineClient(ctx, socket, opts...)
		if err != nil {
			return nil, err
		}
		return engineConn{e}, nil
	}
	open := func(ctx context.Context, socket string, _ int) (Streamer, error) {
		e, err := newEngineClient(ctx, socket, opts...)
		if err != nil {
			return nil, err
		}
		return &engineStream{engineClient: e}, nil
	}
	return dial, open
}

func (enginePeer) Prepare(context.Context, *Env) error { return nil }

func (p enginePeer) Server(env *Env, run Run) (*ServerCmd, error) {
	return engineRole.command(env, run, p.server)
}

func (p enginePeer) Client(ctx context.Context, env *Env, run Run, m *Meter) (Load, error) {
	if p.oneShot {
		return GoClient{Dial: dialOneShot}.Run(ctx, run, m)
	}
	dial, open := p.dialer(run)
	return GoClient{Dial: dial, OpenStream: open}.Run(ctx, run, m)
}

// engineClient is a persistent engine.Client shared by the RoundTripper
// and Streamer of the pktipc peers. Its calls come from one goroutine; the
// driver closes it from another to abort a call, which engine.Client
// allows: the call returns engine.ErrClientClosed.
type engineClient struct {
	c          *engine.Client
	deadlineAt int64 // perf.Now of the last deadline refresh
	calls      int   // counts round trips, for tick
}

func newEngineClient(ctx context.Context, socket string, opts ...engine.ClientOption) (*engineClient, error) {
	c, err := engine.Dial(ctx, socket, opts...)
	if err != nil {
		return nil, err
	}
	if !c.Persistent() {
		c.Close()
		return nil, errors.New("bench: pktipc server declined the persistent handshake")
	}
	if len(opts) > 0 && !c.Rings() {
		c.Close()
		return nil, errors.New("bench: pktipc server declined rings")
	}
	e := &engineClient{c: c, deadlineAt: perf.Now()}
	_ = c.SetDeadline(time.Now().Add(engineCallBound))
	return e, nil
}

// tick counts a call and refreshes the deadline once in
// engineRefreshCalls calls: a clock read per round trip is a good part of
// a short one's client CPU. The deadline then runs out only if that many
// calls in a row take most of engineCallBound, which a live server never
// lets happen.
func (e *engineClient) tick() {
	if e.calls++; e.calls%engineRefreshCalls == 0 {
		e.refresh()
	}
}

// refresh moves the deadline forward when the last move is a while ago.
func (e *engineClient) refresh() {
	if now := perf.Now(); now-e.deadlineAt >= engineDeadlineRefresh {
		e.deadlineAt = now
		_ = e.c.SetDeadline(time.Now().Add(engineCallBound))
	}
}

// Close closes the client, interrupting a call in progress. Any goroutine
// may call it, more than once.
func (e *engineClient) Close() error { return e.c.Close() }

// engineConn is the RoundTripper of the persistent pktipc peers.
type engineConn struct{ *engineClient }

func dialEngine(ctx context.Context, socket string) (RoundTripper, error) {
	e, err := newEngineClient(ctx, socket)
	if err != nil {
		return nil, err
	}
	return engineConn{e}, nil
}

// RoundTrip sends req and reads its reply on the persistent connection.
// Call it from the client's goroutine.
func (e engineConn) RoundTrip(_ context.Context, req []byte) (int, error) {
	e.tick()
	if err := e.c.SendUncopied(req); err != nil { // Send, below 32 KiB
		return 0, err
	}
	reply, err := e.c.Recv()
	return len(reply), err
}

// engineStream sends a stream of messages. Over rings they are one-way
// messages (engine.Client.Post), flushed engineStreamBatch at a time. On a
// socket they are pipelined requests: it queues small ones and flushes
// them engineStreamBatch at a time, sends large ones at once, and collects
// the (empty) replies in batches, so that at most engineStreamWin are
// unread.
type engineStream struct {
	*engineClient
	sends  int // counts Send calls, to look at the clock for refresh once in a while
	unread int
	queued int
	win    int // the window for this stream's message size (0: not yet known)
}

func openEngineStream(ctx context.Context, socket string, _ int) (Streamer, error) {
	e, err := newEngineClient(ctx, socket)
	if err != nil {
		return nil, err
	}
	return &engineStream{engineClient: e}, nil
}

// Send sends msg: over rings as a one-way message (engine.Client.Post),
// which gets no reply; on a socket as a request, first collecting half the
// window's replies when it is full. Call it from the stream's goroutine.
func (s *engineStream) Send(msg []byte) error {
	if s.sends++; s.sends%256 == 0 {
		s.refresh()
	}
	if s.c.Rings() {
		if err := s.c.Post(msg); err != nil {
			return err
		}
		if s.queued++; s.queued >= engineStreamBatch {
			s.queued = 0
			return s.c.Flush()
		}
		return nil
	}
	if s.unread == 0 {
		s.win = max(16, min(engineStreamWin, engineStreamBytes/max(len(msg), 1)))
	}
	if s.unread >= s.win {
		if err := s.collect(s.win / 2); err != nil {
			return err
		}
	}
	if len(msg) > engineStreamQueueMax {
		if err := s.c.SendUncopied(msg); err != nil {
			return err
		}
		s.unread++
		return nil
	}
	if err := s.c.Queue(msg); err != nil {
		return err
	}
	s.unread++
	if s.queued++; s.queued >= engineStreamBatch {
		s.queued = 0
		return s.c.Flush()
	}
	return nil
}

// collect reads n replies, each of which must be empty.
func (s *engineStream) collect(n int) error {
	s.queued = 0 // Recv flushes them
	for range n {
		reply, err := s.c.Recv()
		if err != nil {
			return err
		}
		s.unread--
		if len(reply) != 0 {
			return fmt.Errorf("bench: stream reply of %d bytes, want 0", len(reply))
		}
	}
	return nil
}

// Finish sends the closing empty message and collects every reply: the
// last one proves that the server read everything before it. Call it from
// the stream's goroutine.
func (s *engineStream) Finish(context.Context) error {
	s.refresh()
	if err := s.c.Send(nil); err != nil {
		return err
	}
	s.unread++
	return s.collect(s.unread)
}

// oneShot is git's client shape: each RoundTrip is its own connection
// (engine.Send), so there is nothing to close.
type oneShot struct {
	socket string
	check  func(req, reply []byte) error // nil accepts any reply
}

func dialOneShot(_ context.Context, socket string) (RoundTripper, error) {
	return oneShot{socket: socket}, nil
}

// RoundTrip connects, sends req, reads the reply and closes. ctx (the
// run's) aborts it. Any goroutine may call it.
func (o oneShot) RoundTrip(ctx context.Context, req []byte) (int, error) {
	reply, err := engine.Send(ctx, o.socket, req)
	if err == nil && o.check != nil {
		err = o.check(req, reply)
	}
	return len(reply), err
}

// Close does nothing: a RoundTrip's connection ends with it. Any goroutine
// may call it.
func (oneShot) Close() error { return nil }

// pktipcVsGitPeer: engine.Send against git's daemon, which does not echo:
// requests are "sendbytes " and a ballast of one letter, and the reply is
// the daemon's 15-byte receipt, checked byte for byte.
type pktipcVsGitPeer struct{ gitPeer }

// gitBallastRequest builds a sendbytes request of size bytes in all (at
// least one ballast byte).
func gitBallastRequest(size int) []byte {
	return gitipc.SendbytesRequest(max(size-len(gitipc.SendbytesCommand), 1), 'A')
}

// checkReceipt verifies the daemon's answer to a sendbytes request.
func checkReceipt(req, reply []byte) error {
	var buf [32]byte
	want := gitipc.SendbytesReply(buf[:0], req[len(gitipc.SendbytesCommand):])
	if string(reply) != string(want) {
		return fmt.Errorf("bench: git daemon answered %q, want %q", reply, want)
	}
	return nil
}

func (p *pktipcVsGitPeer) Client(ctx context.Context, env *Env, run Run, m *Meter) (Load, error) {
	dial := func(_ context.Context, socket string) (RoundTripper, error) {
		return oneShot{socket: socket, check: checkReceipt}, nil
	}
	return GoClient{
		Dial:      dial,
		Request:   gitBallastRequest,
		ReplySize: func(int) int { return gitReplySize },
	}.Run(ctx, run, m)
}

// gitVsPktipcPeer: git's client (test-tool simple-ipc multiple, measured
// as the git peer measures it) against the test daemon of `ipcbench serve`.
type gitVsPktipcPeer struct{ gitPeer }

func (p *gitVsPktipcPeer) Server(env *Env, run Run) (*ServerCmd, error) {
	return gitDaemonRole.command(env, run, gitDaemonSettings{Threads: gitDaemonThreads})
}

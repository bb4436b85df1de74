package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/pktipc/pktipc/engine"
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
func init() {
	Register(PeerInfo{
		Name:      "pktipc",
		Doc:       "pktipc engine: gnet loops, echo handler inline on the loop; persistent engine.Client (stream: pipelined, every message answered by an empty reply)",
		Order:     20,
		Scenarios: []Kind{PingPong, Concurrency, Stream},
		Quick:     true,
		New:       func() Peer { return enginePeer{handlers: engineInline} },
	})
	Register(PeerInfo{
		Name:      "pktipc-pool",
		Doc:       "pktipc engine with the echo handler on the worker pool (engine.DefaultWorkers); persistent engine.Client",
		Order:     21,
		Scenarios: []Kind{PingPong, Concurrency, Stream},
		Quick:     true,
		New:       func() Peer { return enginePeer{handlers: enginePool} },
	})
	Register(PeerInfo{
		Name:      "pktipc-git",
		Doc:       "pktipc engine (inline echo) with git's client shape: engine.Send, one connection per request",
		Order:     22,
		Scenarios: []Kind{Connect},
		Quick:     true,
		New:       func() Peer { return enginePeer{handlers: engineInline, oneShot: true} },
	})
	Register(PeerInfo{
		Name:          "pktipc-vs-git",
		Doc:           "engine.Send (one connection per request, \"sendbytes\" requests) against git's test-tool simple-ipc run-daemon (8 threads)",
		Order:         91,
		Scenarios:     []Kind{Connect},
		NeedsTestTool: true,
		New:           func() Peer { return &pktipcVsGitPeer{} },
	})
	Register(PeerInfo{
		Name:          "git-vs-pktipc",
		Doc:           "git's test-tool simple-ipc multiple against the test daemon of ipcbench serve (pktipc engine, 8 workers)",
		Order:         92,
		Scenarios:     []Kind{Connect},
		NeedsTestTool: true,
		New:           func() Peer { return &gitVsPktipcPeer{} },
	})
	RegisterServer(engineRole, serveEngine)
	RegisterServer(gitDaemonRole, serveGitDaemonRole)
}

// Server roles and their options.
const (
	engineRole    = "pktipc"
	gitDaemonRole = "pktipc-gitd"
	optHandlers   = "handlers"
	optThreads    = "threads"
	engineInline  = "inline"
	enginePool    = "pool"
	// engineStreamWin is how many replies a stream leaves unread before it
	// collects half of them: a pipelining client's bounded window, which
	// bounds what either side buffers to 16 messages.
	engineStreamWin = 16
	// engineCallBound bounds one client call: a server that stops
	// answering fails the call after this long instead of hanging the
	// client, as the driver's stall timeout does for the run.
	engineCallBound = stallTimeout
	// engineDeadlineRefresh is how often a client moves its deadline
	// forward; refreshing on every call would add a clock read and a
	// runtime timer update to each measured round trip.
	engineDeadlineRefresh = int64(time.Second)
)

// serveEngine is the pktipc server role: echo every request, or in the
// stream scenario answer each message with an empty reply.
func serveEngine(ctx context.Context, cfg ServerConfig, ready func()) error {
	sink := cfg.Scenario == Stream
	h := engine.HandlerFunc(func(_ context.Context, req []byte, w *engine.ReplyWriter) error {
		if sink {
			return nil
		}
		_, err := w.Write(req)
		return err
	})
	var opts []engine.Option
	switch cfg.Options[optHandlers] {
	case engineInline:
		opts = append(opts, engine.WithInlineHandlers(true))
	case enginePool:
	default:
		return fmt.Errorf("bench: pktipc server: bad %s option %q", optHandlers, cfg.Options[optHandlers])
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

// serveGitDaemonRole runs the test daemon of `ipcbench serve` for
// git-vs-pktipc.
func serveGitDaemonRole(ctx context.Context, cfg ServerConfig, ready func()) error {
	threads, err := strconv.Atoi(cfg.Options[optThreads])
	if err != nil || threads < 1 {
		return fmt.Errorf("bench: git daemon: bad %s option %q", optThreads, cfg.Options[optThreads])
	}
	return serveGitDaemon(ctx, cfg.Socket, threads, ready)
}

type enginePeer struct {
	handlers string
	oneShot  bool
}

func (enginePeer) Prepare(context.Context, *Env) error { return nil }

func (p enginePeer) Server(env *Env, run Run) (*ServerCmd, error) {
	return env.GoServer(engineRole, run, map[string]string{optHandlers: p.handlers})
}

func (p enginePeer) Client(ctx context.Context, env *Env, run Run, m *Meter) (Load, error) {
	if p.oneShot {
		return GoClient{Dial: dialOneShot}.Run(ctx, run, m)
	}
	return GoClient{Dial: dialEngine, OpenStream: openEngineStream}.Run(ctx, run, m)
}

// States of an engineClient. engine.Client belongs to one goroutine, but
// the driver may close a client from another to abort it: the closer then
// only marks a busy client, and its owner closes it when its call returns
// (at the latest when the call's deadline passes).
const (
	ecIdle int32 = iota
	ecBusy
	ecCloseAsked
	ecClosed
)

// engineClient is a persistent engine.Client shared by the RoundTripper
// and Streamer of the pktipc peers.
type engineClient struct {
	c          *engine.Client
	state      atomic.Int32
	deadlineAt int64 // perf.Now of the last deadline refresh; owner only
}

func newEngineClient(ctx context.Context, socket string) (*engineClient, error) {
	c, err := engine.Dial(ctx, socket)
	if err != nil {
		return nil, err
	}
	if !c.Persistent() {
		c.Close()
		return nil, errors.New("bench: pktipc server declined the persistent handshake")
	}
	e := &engineClient{c: c, deadlineAt: perf.Now()}
	_ = c.SetDeadline(time.Now().Add(engineCallBound))
	return e, nil
}

// enter marks the client busy before a call; it fails once Close ran.
func (e *engineClient) enter() error {
	if !e.state.CompareAndSwap(ecIdle, ecBusy) {
		return net.ErrClosed
	}
	if now := perf.Now(); now-e.deadlineAt >= engineDeadlineRefresh {
		e.deadlineAt = now
		_ = e.c.SetDeadline(time.Now().Add(engineCallBound))
	}
	return nil
}

// exit marks the client idle after a call, or closes it if Close was asked
// meanwhile, in which case the call's outcome no longer matters.
func (e *engineClient) exit(err error) error {
	if e.state.CompareAndSwap(ecBusy, ecIdle) {
		return err
	}
	e.c.Close()
	e.state.Store(ecClosed)
	return net.ErrClosed
}

// Close closes the client, or asks its owner to when a call is running.
// Safe to call from any goroutine, more than once.
func (e *engineClient) Close() error {
	for {
		switch e.state.Load() {
		case ecIdle:
			if e.state.CompareAndSwap(ecIdle, ecClosed) {
				return e.c.Close()
			}
		case ecBusy:
			if e.state.CompareAndSwap(ecBusy, ecCloseAsked) {
				return nil
			}
		default:
			return nil
		}
	}
}

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
func (e engineConn) RoundTrip(_ context.Context, req []byte) (int, error) {
	if err := e.enter(); err != nil {
		return 0, err
	}
	reply, err := e.c.Call(req)
	return len(reply), e.exit(err)
}

// engineStream pipelines one-way messages: it sends without waiting and
// collects the (empty) replies in batches, so that at most engineStreamWin
// are unread.
type engineStream struct {
	*engineClient
	unread int
}

func openEngineStream(ctx context.Context, socket string, _ int) (Streamer, error) {
	e, err := newEngineClient(ctx, socket)
	if err != nil {
		return nil, err
	}
	return &engineStream{engineClient: e}, nil
}

// Send sends msg, first collecting half the window's replies when it is
// full.
func (s *engineStream) Send(msg []byte) error {
	if err := s.enter(); err != nil {
		return err
	}
	var err error
	if s.unread >= engineStreamWin {
		err = s.collect(engineStreamWin / 2)
	}
	if err == nil {
		if err = s.c.Send(msg); err == nil {
			s.unread++
		}
	}
	return s.exit(err)
}

// collect reads n replies, each of which must be empty.
func (s *engineStream) collect(n int) error {
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
// last one proves that the server read everything before it.
func (s *engineStream) Finish(context.Context) error {
	if err := s.enter(); err != nil {
		return err
	}
	err := s.c.Send(nil)
	if err == nil {
		s.unread++
		err = s.collect(s.unread)
	}
	return s.exit(err)
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
// run's) aborts it.
func (o oneShot) RoundTrip(ctx context.Context, req []byte) (int, error) {
	reply, err := engine.Send(ctx, o.socket, req)
	if err == nil && o.check != nil {
		err = o.check(req, reply)
	}
	return len(reply), err
}

func (oneShot) Close() error { return nil }

// pktipcVsGitPeer: engine.Send against git's daemon, which does not echo:
// requests are "sendbytes " and a ballast of one letter, and the reply is
// the daemon's 15-byte receipt, checked byte for byte.
type pktipcVsGitPeer struct{ gitPeer }

// gitBallastRequest builds a sendbytes request of size bytes in all (at
// least one ballast byte).
func gitBallastRequest(size int) []byte {
	n := max(size-len(gitSendbytesCmd), 1)
	req := make([]byte, len(gitSendbytesCmd)+n)
	copy(req, gitSendbytesCmd)
	for i := len(gitSendbytesCmd); i < len(req); i++ {
		req[i] = 'A'
	}
	return req
}

// checkReceipt verifies the daemon's answer to a sendbytes request.
func checkReceipt(req, reply []byte) error {
	var buf [32]byte
	want := gitSendbytesReply(buf[:0], req[len(gitSendbytesCmd):])
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
	return env.GoServer(gitDaemonRole, run, map[string]string{optThreads: strconv.Itoa(gitDaemonThreads)})
}

package gitipc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/pktipc/pktipc/engine"
	"github.com/pktipc/pktipc/uds"
)

// Defaults of git's test tool.
const (
	// DefaultName is git's default socket path, relative to the current
	// directory.
	DefaultName = "ipc-test"
	// DefaultThreads is the test daemon's worker count and the client
	// thread count of `multiple`.
	DefaultThreads = 5
	// DefaultMaxWait is how long start-daemon and stop-daemon wait.
	DefaultMaxWait = 60 * time.Second
	// DefaultBytecount is the ballast size of sendbytes and multiple.
	DefaultBytecount = 1024
	// DefaultBatchsize is the number of requests per thread of multiple.
	DefaultBatchsize = 10
	// DefaultByte is the ballast character.
	DefaultByte = 'x'
)

const (
	// noCommand is what send sends without a token.
	noCommand = "(no-command)"
	// probeInterval is how often stop-daemon probes the dying daemon (git
	// sleeps 100 ms between probes).
	probeInterval = 100 * time.Millisecond
	// startPoll is how often start-daemon probes the starting daemon. git
	// probes in a tight loop; a short sleep costs nothing in start-up time
	// and spares a CPU.
	startPoll = 5 * time.Millisecond
)

// Options are the options of git's `test-tool simple-ipc`, with its names:
// --name, --threads, --max-wait, --bytecount, --batchsize, --byte and
// --token. DefaultOptions gives git's defaults; out-of-range values are
// clamped as git clamps them when a command runs.
type Options struct {
	Name      string        // socket path (--name)
	Threads   int           // daemon workers, or client threads of multiple (--threads; below 1 means 1)
	MaxWait   time.Duration // start-daemon and stop-daemon (--max-wait, whole seconds in git; below 0 means 0)
	Bytecount int           // ballast size (--bytecount; below 1 means 1)
	Batchsize int           // requests per thread of multiple (--batchsize; below 1 means 1)
	Byte      byte          // ballast character (--byte: its first byte)
	Token     string        // command of send (--token; empty sends "(no-command)")
}

// DefaultOptions returns git's defaults.
func DefaultOptions() Options {
	return Options{
		Name:      DefaultName,
		Threads:   DefaultThreads,
		MaxWait:   DefaultMaxWait,
		Bytecount: DefaultBytecount,
		Batchsize: DefaultBatchsize,
		Byte:      DefaultByte,
	}
}

func (o Options) clamped() Options {
	o.Threads = max(o.Threads, 1)
	o.MaxWait = max(o.MaxWait, 0)
	o.Bytecount = max(o.Bytecount, 1)
	o.Batchsize = max(o.Batchsize, 1)
	return o
}

// Tool runs the commands of git's `test-tool simple-ipc` against the socket
// at Options.Name, writing what git's tool writes: answers on Stdout,
// "error: ..." lines on Stderr. Each command returns git's exit status, 0 or
// 1. A Tool runs one command at a time: call its methods from one goroutine
// at a time. Multiple's own threads share its writers under a lock.
type Tool struct {
	Options Options
	Stdout  io.Writer
	Stderr  io.Writer

	mu sync.Mutex // serialises writes to Stdout and Stderr
}

func (g *Tool) opts() Options { return g.Options.clamped() }

// printf writes one formatted line to w as a single Write, under the lock.
func (g *Tool) printf(w io.Writer, format string, args ...any) {
	g.write(w, fmt.Appendf(nil, format, args...))
}

func (g *Tool) write(w io.Writer, b []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, _ = w.Write(b)
}

// errorf prints like git's error(): "error: " + message + "\n" on Stderr.
func (g *Tool) errorf(format string, args ...any) {
	g.printf(g.Stderr, "error: "+format+"\n", args...)
}

// probe is git's client__probe_server: the state of the socket, with git's
// message when no server listens. It reports whether one does.
func (g *Tool) probe() bool {
	name := g.opts().Name
	switch uds.State(name) {
	case uds.Listening:
		return true
	case uds.NotListening:
		g.errorf("no server listening at '%s'", name)
	case uds.PathNotFound:
		g.errorf("path not found '%s'", name)
	case uds.InvalidPath:
		g.errorf("invalid pipe/socket name '%s'", name)
	default:
		g.errorf("other error for '%s'", name)
	}
	return false
}

// exitStatus maps success to git's 0 and failure to 1.
func exitStatus(ok bool) int {
	if ok {
		return 0
	}
	return 1
}

// IsActive is `is-active`: 0 when a server listens at the path, else a
// message and 1. Call it from one goroutine at a time.
func (g *Tool) IsActive() int { return exitStatus(g.probe()) }

// RunDaemon is `run-daemon`: git's test daemon in the foreground, with
// Options.Threads workers, until a client sends quit or ctx ends (git's
// daemon has no signal handling; this one stops cleanly and removes its
// socket). A live server at the path gives "socket/pipe already in use",
// any other start-up failure "could not start server on"; both exit 1. A
// socket path removed or taken over while it runs stops it with a message
// and status 1 (git's daemon stops silently, with 0). Call it from one
// goroutine at a time.
func (g *Tool) RunDaemon(ctx context.Context) int {
	o := g.opts()
	err := Serve(ctx, o.Name, o.Threads, nil)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, uds.ErrInUse):
		g.errorf("socket/pipe already in use: '%s'", o.Name)
	case errors.Is(err, engine.ErrSocketStolen):
		// git stops silently in this case; say why the daemon left.
		g.errorf("socket '%s' was removed or replaced; daemon stopped", o.Name)
	default:
		g.errorf("could not start server on: '%s': %s", o.Name, strerror(err))
	}
	return 1
}

// strerror renders err the way git's error_errno renders errno: the C
// library's message ("File exists") where err carries an errno.
func strerror(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		s := errno.Error()
		if s != "" && 'a' <= s[0] && s[0] <= 'z' {
			s = string(s[0]-'a'+'A') + s[1:]
		}
		return s
	}
	return err.Error()
}

// StartDaemon is `start-daemon`: it starts daemon (a command that runs
// RunDaemon for the same path, such as `ipcbench serve --name=...`) in the
// background with its standard streams on /dev/null, then probes the path
// until a server listens ("daemon not online yet" after Options.MaxWait,
// "daemon terminated" if it exits first, "daemon failed to start" if the
// path is unusable). The daemon is left running. Call it from one goroutine
// at a time.
func (g *Tool) StartDaemon(ctx context.Context, daemon *exec.Cmd) int {
	o := g.opts()
	daemon.Stdin, daemon.Stdout, daemon.Stderr = nil, nil, nil
	if err := daemon.Start(); err != nil {
		g.errorf("daemon failed to start")
		return 1
	}
	deadline := time.Now().Add(o.MaxWait)
	for {
		if processExited(daemon.Process) {
			g.errorf("daemon terminated")
			return 1
		}
		switch uds.State(o.Name) {
		case uds.Listening:
			_ = daemon.Process.Release()
			return 0
		case uds.NotListening, uds.PathNotFound:
			// Give it more time.
		default:
			_ = daemon.Process.Release()
			g.errorf("daemon failed to start")
			return 1
		}
		if !time.Now().Before(deadline) {
			_ = daemon.Process.Release()
			g.errorf("daemon not online yet")
			return 1
		}
		if !sleepCtx(ctx, startPoll) {
			_ = daemon.Process.Release()
			return 1
		}
	}
}

// sleepCtx sleeps d unless ctx ends first; it reports whether it slept.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// StopDaemon is `stop-daemon`: probe, send quit, then probe every 100 ms
// until nobody listens ("daemon has not shutdown yet" after
// Options.MaxWait). Call it from one goroutine at a time.
func (g *Tool) StopDaemon(ctx context.Context) int {
	if !g.probe() {
		return 1
	}
	o := g.opts()
	if !g.send(ctx, "quit") {
		return 1
	}
	deadline := time.Now().Add(o.MaxWait)
	for {
		if !sleepCtx(ctx, probeInterval) {
			return 1
		}
		if uds.State(o.Name) != uds.Listening {
			return 0
		}
		if time.Now().After(deadline) {
			g.errorf("daemon has not shutdown yet")
			return 1
		}
	}
}

// Subcommands lists the subcommands of git's `test-tool simple-ipc` that
// Run runs, in git's usage order.
var Subcommands = []string{"is-active", "run-daemon", "start-daemon", "stop-daemon", "send", "sendbytes", "multiple"}

// Run runs one of Subcommands and returns its exit status. daemon builds
// the command that start-daemon runs in the background; it is called only
// for start-daemon. Call it from one goroutine at a time.
func (g *Tool) Run(ctx context.Context, sub string, daemon func(Options) *exec.Cmd) (int, error) {
	switch sub {
	case "is-active":
		return g.IsActive(), nil
	case "run-daemon":
		return g.RunDaemon(ctx), nil
	case "start-daemon":
		if daemon == nil {
			return 0, fmt.Errorf("%w: start-daemon needs a daemon command", ErrUnknownSubcommand)
		}
		return g.StartDaemon(ctx, daemon(g.opts())), nil
	case "stop-daemon":
		return g.StopDaemon(ctx), nil
	case "send":
		return g.Send(ctx), nil
	case "sendbytes":
		return g.Sendbytes(ctx), nil
	case "multiple":
		return g.Multiple(ctx), nil
	}
	return 0, fmt.Errorf("%w: %q", ErrUnknownSubcommand, sub)
}

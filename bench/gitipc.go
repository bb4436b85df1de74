package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/pktipc/pktipc/engine"
	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/uds"
)

// git's test daemon and test client (t/helper/test-simple-ipc.c, described
// in simple-ipc.md §9) on pktipc's engine: the daemon answers the same
// commands with the same bytes, and the client commands take the same
// options and print the same lines, so that either client can drive either
// server. cmd/ipcbench exposes them as subcommands.

// Defaults and limits of git's test tool.
const (
	// GitDefaultName is git's default socket path, relative to the current
	// directory.
	GitDefaultName = "ipc-test"
	// GitDefaultThreads is the test daemon's worker count and the client
	// thread count of `multiple`.
	GitDefaultThreads = 5
	// GitDefaultMaxWait is how long start-daemon and stop-daemon wait.
	GitDefaultMaxWait = 60 * time.Second
	// GitDefaultBytecount is the ballast size of sendbytes and multiple.
	GitDefaultBytecount = 1024
	// GitDefaultBatchsize is the number of requests per thread of multiple.
	GitDefaultBatchsize = 10
	// GitDefaultByte is the ballast character.
	GitDefaultByte = 'x'
	// gitNoCommand is what send sends without a token.
	gitNoCommand = "(no-command)"
)

// The daemon's canned replies.
const (
	// gitBigRows is the line count of big and chunk (git's BIG_ROWS and
	// CHUNK_ROWS).
	gitBigRows = 10000
	// gitSlowRows and gitSlowDelay: slow writes 1,000 lines, sleeping 10 ms
	// after each (git's SLOW_ROWS and SLOW_DELAY_MS).
	gitSlowRows  = 1000
	gitSlowDelay = 10 * time.Millisecond
	// gitRowLen is one line, "big: " + 75 digits + "\n".
	gitRowLen = 81
	// gitProbeInterval is how often stop-daemon probes the dying daemon
	// (git sleeps 100 ms between probes).
	gitProbeInterval = 100 * time.Millisecond
	// gitStartPoll is how often start-daemon probes the starting daemon.
	// git probes in a tight loop; a short sleep costs nothing in start-up
	// time and spares a CPU.
	gitStartPoll = 5 * time.Millisecond
)

// gitSendbytesCmd starts a sendbytes request.
const gitSendbytesCmd = "sendbytes "

// gitBig holds the 10,000 lines of big and chunk, built once.
var gitBig = sync.OnceValue(func() []byte {
	b := make([]byte, 0, gitBigRows*gitRowLen)
	for row := range gitBigRows {
		b = fmt.Appendf(b, "big: %075d\n", row)
	}
	return b
})

// gitDaemon is the application of git's test daemon (test_app_cb). git
// hands its application a NUL-terminated copy of the request and reads it
// partly as a C string; cString reproduces that.
type gitDaemon struct{}

// ServeIPC answers one request. "slow" sleeps and runs on a worker; the
// others run on the event loop (gitDaemonOptions).
func (gitDaemon) ServeIPC(ctx context.Context, req []byte, w *engine.ReplyWriter) error {
	switch {
	case string(req) == "quit":
		// No reply: the client gets the terminator alone.
		return engine.ErrQuit
	case string(req) == "ping":
		_, err := w.WriteString("pong")
		return err
	case string(req) == "big":
		_, err := w.Write(gitBig())
		return err
	case string(req) == "chunk":
		return gitWriteRows(ctx, w, gitBigRows, 0)
	case string(req) == "slow":
		return gitWriteRows(ctx, w, gitSlowRows, gitSlowDelay)
	case len(req) >= len(gitSendbytesCmd) && bytes.HasPrefix(req, []byte(gitSendbytesCmd)):
		var buf [32]byte // "rcvd:" + byte + up to 19 digits + "\n"
		_, err := w.Write(gitSendbytesReply(buf[:0], req[len(gitSendbytesCmd):]))
		return err
	}
	reply := append([]byte("unhandled command: "), cString(req)...)
	_, err := w.Write(reply)
	return err
}

// gitWriteRows writes rows lines of big one write each, sleeping delay
// after each; it stops early when ctx ends (the client went away).
func gitWriteRows(ctx context.Context, w *engine.ReplyWriter, rows int, delay time.Duration) error {
	big := gitBig()
	var t *time.Timer
	if delay > 0 {
		t = time.NewTimer(delay)
		defer t.Stop()
	}
	for row := range rows {
		if _, err := w.Write(big[row*gitRowLen : (row+1)*gitRowLen]); err != nil {
			return err
		}
		if t == nil {
			continue
		}
		t.Reset(delay)
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-t.C:
		}
	}
	return nil
}

// gitSendbytesReply appends the daemon's answer to "sendbytes <ballast>":
// the ballast is read as a C string (it ends at the first NUL, and its first
// byte is then NUL when it is empty); "rcvd:<c><%08d len>\n" when every byte
// equals the first, else "errs:<count of other bytes>\n".
func gitSendbytesReply(dst, ballast []byte) []byte {
	p := cString(ballast)
	errs := 0
	for _, c := range p[min(1, len(p)):] {
		if c != p[0] {
			errs++
		}
	}
	if errs > 0 {
		dst = append(dst, "errs:"...)
		dst = strconv.AppendInt(dst, int64(errs), 10)
		return append(dst, '\n')
	}
	first := byte(0)
	if len(p) > 0 {
		first = p[0]
	}
	dst = append(dst, "rcvd:"...)
	dst = append(dst, first)
	dst = appendZeroPadded(dst, len(p), 8)
	return append(dst, '\n')
}

// appendZeroPadded appends n in decimal, zero-padded to width (C's %0*d for
// n >= 0).
func appendZeroPadded(dst []byte, n, width int) []byte {
	var digits [20]byte
	d := strconv.AppendInt(digits[:0], int64(n), 10)
	for range width - len(d) {
		dst = append(dst, '0')
	}
	return append(dst, d...)
}

// cString returns b up to its first NUL: what C's %s and strlen see. The
// result aliases b.
func cString(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

// gitDaemonOptions are the engine options of the test daemon. Like git's
// daemon it checks nothing about the socket's directory (git's tests run in
// an ordinary 0755 directory); the socket itself stays private to its user,
// which git's clients of the same user never notice. Only "slow" blocks, so
// only it goes to the worker pool; the rest is answered on the event loop.
func gitDaemonOptions(threads int) []engine.Option {
	return []engine.Option{
		engine.WithWorkers(max(threads, 1)),
		engine.WithInlineFilter(func(req []byte) bool { return string(req) != "slow" }),
		engine.WithListenOptions(uds.WithInsecureDir()),
	}
}

// serveGitDaemon runs git's test daemon on path until a client sends quit
// (nil), ctx ends (nil), or the socket is stolen (ErrSocketStolen). ready
// is called once the socket accepts connections. A live server at path
// gives an error matching uds.ErrInUse.
func serveGitDaemon(ctx context.Context, path string, threads int, ready func()) error {
	s, err := engine.NewServer(path, gitDaemon{}, gitDaemonOptions(threads)...)
	if err != nil {
		return err
	}
	if ready != nil {
		ready()
	}
	err = s.Serve(ctx)
	if errors.Is(err, engine.ErrServerClosed) || (ctx.Err() != nil && errors.Is(err, ctx.Err())) {
		return nil
	}
	return err
}

// GitToolOptions are the options of git's `test-tool simple-ipc`, with its
// names: --name, --threads, --max-wait, --bytecount, --batchsize, --byte
// and --token. DefaultGitToolOptions gives git's defaults; out-of-range
// values are clamped as git clamps them when a command runs.
type GitToolOptions struct {
	Name      string        // socket path (--name)
	Threads   int           // daemon workers, or client threads of multiple (--threads; below 1 means 1)
	MaxWait   time.Duration // start-daemon and stop-daemon (--max-wait, whole seconds in git; below 0 means 0)
	Bytecount int           // ballast size (--bytecount; below 1 means 1)
	Batchsize int           // requests per thread of multiple (--batchsize; below 1 means 1)
	Byte      byte          // ballast character (--byte: its first byte)
	Token     string        // command of send (--token; empty sends "(no-command)")
}

// DefaultGitToolOptions returns git's defaults.
func DefaultGitToolOptions() GitToolOptions {
	return GitToolOptions{
		Name:      GitDefaultName,
		Threads:   GitDefaultThreads,
		MaxWait:   GitDefaultMaxWait,
		Bytecount: GitDefaultBytecount,
		Batchsize: GitDefaultBatchsize,
		Byte:      GitDefaultByte,
	}
}

func (o GitToolOptions) clamped() GitToolOptions {
	o.Threads = max(o.Threads, 1)
	o.MaxWait = max(o.MaxWait, 0)
	o.Bytecount = max(o.Bytecount, 1)
	o.Batchsize = max(o.Batchsize, 1)
	return o
}

// GitTool runs the commands of git's `test-tool simple-ipc` against the
// socket at Options.Name, writing what git's tool writes: answers on
// Stdout, "error: ..." lines on Stderr. Each command returns git's exit
// status, 0 or 1. A GitTool may run one command at a time; Multiple's
// threads share its writers under a lock.
type GitTool struct {
	Options GitToolOptions
	Stdout  io.Writer
	Stderr  io.Writer

	mu sync.Mutex // serialises writes to Stdout and Stderr
}

func (g *GitTool) opts() GitToolOptions { return g.Options.clamped() }

// printf writes one formatted line to w as a single Write, under the lock.
func (g *GitTool) printf(w io.Writer, format string, args ...any) {
	g.write(w, fmt.Appendf(nil, format, args...))
}

func (g *GitTool) write(w io.Writer, b []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, _ = w.Write(b)
}

// errorf prints like git's error(): "error: " + message + "\n" on Stderr.
func (g *GitTool) errorf(format string, args ...any) {
	g.printf(g.Stderr, "error: "+format+"\n", args...)
}

// probe is git's client__probe_server: the state of the socket, with git's
// message when no server listens. It reports whether one does.
func (g *GitTool) probe() bool {
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
// message and 1.
func (g *GitTool) IsActive() int { return exitStatus(g.probe()) }

// RunDaemon is `run-daemon`: git's test daemon in the foreground, with
// Options.Threads workers, until a client sends quit or ctx ends (git's
// daemon has no signal handling; this one stops cleanly and removes its
// socket). A live server at the path gives "socket/pipe already in use",
// any other start-up failure "could not start server on"; both exit 1. A
// socket path removed or taken over while it runs stops it with a message
// and status 1 (git's daemon stops silently, with 0).
func (g *GitTool) RunDaemon(ctx context.Context) int {
	o := g.opts()
	err := serveGitDaemon(ctx, o.Name, o.Threads, nil)
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
// path is unusable). The daemon is left running.
func (g *GitTool) StartDaemon(ctx context.Context, daemon *exec.Cmd) int {
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
		if !sleepCtx(ctx, gitStartPoll) {
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
// Options.MaxWait).
func (g *GitTool) StopDaemon(ctx context.Context) int {
	if !g.probe() {
		return 1
	}
	o := g.opts()
	if !g.send(ctx, "quit") {
		return 1
	}
	deadline := time.Now().Add(o.MaxWait)
	for {
		if !sleepCtx(ctx, gitProbeInterval) {
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

// Send is `send`: probe, then send Options.Token (or "(no-command)") once,
// retrying a busy server for about a second like git; print the answer
// and a newline if the answer is not empty.
func (g *GitTool) Send(ctx context.Context) int {
	if !g.probe() {
		return 1
	}
	token := g.opts().Token
	if token == "" {
		token = gitNoCommand
	}
	return exitStatus(g.send(ctx, token))
}

func (g *GitTool) send(ctx context.Context, token string) bool {
	name := g.opts().Name
	reply, err := engine.Send(ctx, name, []byte(token), engine.WithDialOptions(uds.WaitIfBusy()))
	if err != nil {
		g.clientError(err)
		g.errorf("failed to send '%s' to '%s'", token, name)
		return false
	}
	if len(reply) > 0 {
		// printf("%s\n"): the answer as a C string.
		g.write(g.Stdout, append(cString(reply), '\n'))
	}
	return true
}

// clientError prints what git's ipc_client_send_command prints for a
// failure: nothing when the connection failed, the pkt-line reader's
// complaint for a malformed reply, then "could not read IPC response".
// engine reports a failed write and a failed read alike, so a failed write
// also reads "could not read IPC response" (git: "could not send IPC
// command"); git's client usually dies of SIGPIPE there instead.
func (g *GitTool) clientError(err error) {
	var de *uds.DialError
	if errors.As(err, &de) || errors.Is(err, context.Canceled) {
		return
	}
	var fe *frame.Error
	if errors.As(err, &fe) {
		switch {
		case errors.Is(fe, frame.ErrBadHeader):
			g.errorf("protocol error: bad line length character: %s", cString(fe.Header[:]))
		case errors.Is(fe, frame.ErrBadLength):
			g.errorf("protocol error: bad line length %d", fe.Length)
		case errors.Is(fe, frame.ErrTooLong):
			g.errorf("protocol error: bad line length %d", fe.Length-frame.HeaderSize)
		}
	}
	g.errorf("could not read IPC response")
}

// Sendbytes is `sendbytes`: probe, then send "sendbytes " and
// Options.Bytecount copies of Options.Byte, and print
// "sent:<c><%08d count> <answer without trailing whitespace>".
func (g *GitTool) Sendbytes(ctx context.Context) int {
	if !g.probe() {
		return 1
	}
	o := g.opts()
	return exitStatus(g.sendbytes(ctx, o.Bytecount, o.Byte))
}

// sendbytes is git's do_sendbytes: one request on its own connection.
func (g *GitTool) sendbytes(ctx context.Context, count int, c byte) bool {
	name := g.opts().Name
	req := make([]byte, len(gitSendbytesCmd)+count)
	copy(req, gitSendbytesCmd)
	for i := len(gitSendbytesCmd); i < len(req); i++ {
		req[i] = c
	}
	reply, err := engine.Send(ctx, name, req, engine.WithDialOptions(uds.WaitIfBusy()))
	if err != nil {
		g.clientError(err)
		// %c writes the byte itself, as C does, not its UTF-8 form.
		msg := fmt.Appendf(nil, "error: client failed to sendbytes(%d, '", count)
		msg = append(msg, c)
		g.write(g.Stderr, fmt.Appendf(msg, "') to '%s'\n", name))
		return false
	}
	line := append([]byte("sent:"), c)
	line = appendZeroPadded(line, count, 8)
	line = append(line, ' ')
	line = append(line, cString(bytes.TrimRight(reply, " \t\n\v\f\r"))...)
	g.write(g.Stdout, append(line, '\n'))
	return true
}

// Multiple is `multiple`: probe, then Options.Threads client threads; thread
// k sends Options.Batchsize requests of letter 'A'+k%26 and sizes
// Bytecount+Batchsize*(k/26)+i, each on a new connection, printing a sent
// line for each; then "client (good N) (join 0), (errors E)". It exits 1 if
// any request failed.
func (g *GitTool) Multiple(ctx context.Context) int {
	if !g.probe() {
		return 1
	}
	o := g.opts()
	var (
		mu           sync.Mutex // guards good and failed
		good, failed int
	)
	var wg sync.WaitGroup
	for k := range o.Threads {
		wg.Go(func() {
			letter := byte('A' + k%26)
			base := o.Bytecount + o.Batchsize*(k/26)
			var ok, bad int
			for i := range o.Batchsize {
				if g.sendbytes(ctx, base+i, letter) {
					ok++
				} else {
					bad++
				}
			}
			mu.Lock()
			good += ok
			failed += bad
			mu.Unlock()
		})
	}
	wg.Wait()
	// Goroutines cannot fail to join: git's join count is always 0 here.
	g.printf(g.Stdout, "client (good %d) (join %d), (errors %d)\n", good, 0, failed)
	return exitStatus(failed == 0)
}

// GitSubcommands lists the subcommands of git's `test-tool simple-ipc` that
// RunGitSubcommand runs, in git's usage order.
var GitSubcommands = []string{"is-active", "run-daemon", "start-daemon", "stop-daemon", "send", "sendbytes", "multiple"}

// RunGitSubcommand runs one of GitSubcommands and returns its exit status.
// daemon builds the command that start-daemon runs in the background; it
// is called only for start-daemon.
func (g *GitTool) RunGitSubcommand(ctx context.Context, sub string, daemon func(GitToolOptions) *exec.Cmd) (int, error) {
	switch sub {
	case "is-active":
		return g.IsActive(), nil
	case "run-daemon":
		return g.RunDaemon(ctx), nil
	case "start-daemon":
		if daemon == nil {
			return 0, fmt.Errorf("%w: start-daemon needs a daemon command", ErrUnknownGitSubcommand)
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
	return 0, fmt.Errorf("%w: %q", ErrUnknownGitSubcommand, sub)
}

//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pktipc/pktipc/fsmonitor"
	"github.com/pktipc/pktipc/internal/leakcheck"
	"github.com/pktipc/pktipc/uds"
)

var (
	flagFiles  = flag.Int("fsmonitor.files", 2000, "files in the random-operations repository")
	flagRounds = flag.Int("fsmonitor.rounds", 40, "rounds of random operations")
	flagSeed   = flag.Uint64("fsmonitor.seed", 0, "seed of the random operations (0: from the clock)")
	flagHook   = flag.String("fsmonitor.hook", "c", "the hook of the random-operations test: c (build-hook's, when a C compiler is there) or go")
)

// binary is the command built for the tests; empty when git is missing.
var binary string

// cHook is the hook's C fast path built by build-hook, "" when no C
// compiler is available.
var cHook string

func TestMain(m *testing.M) {
	flag.Parse()
	code := testMain(m)
	if code == 0 {
		// The tests run the command in this process too: nothing it
		// started may outlive them.
		if err := leakcheck.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left after the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func testMain(m *testing.M) int {
	if _, err := exec.LookPath("git"); err != nil {
		return m.Run() // every test skips
	}
	dir, err := os.MkdirTemp("", "pktipc-fsmonitor-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "pktipc-fsmonitor")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		return 1
	}
	cHook = filepath.Join(dir, "pktipc-fsmonitor-hook")
	if out, err := exec.Command(binary, "build-hook", cHook).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build-hook: %v\n%s(the tests use the Go hook)\n", err, out)
		cHook = ""
	}
	// Keep the user's and the system's git configuration, and any
	// repository the tests run under, out of the tests' repositories.
	global := filepath.Join(dir, "gitconfig")
	config := "[user]\n\tname = test\n\temail = test@example.com\n[init]\n\tdefaultBranch = main\n"
	if err := os.WriteFile(global, []byte(config), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, v := range []string{"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_CEILING_DIRECTORIES"} {
		os.Unsetenv(v)
	}
	os.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	os.Setenv("GIT_CONFIG_GLOBAL", global)
	os.Setenv("HOME", dir)
	return m.Run()
}

// worktree is a test repository and the daemon the test started in it.
type worktree struct {
	t     *testing.T
	dir   string // as git reports it
	trace string // GIT_TRACE_FSMONITOR's file
	pids  []int  // daemons seen, for the final check
}

// newWorktree makes a repository; useHook configures the monitor.
func newWorktree(t *testing.T) *worktree {
	t.Helper()
	if binary == "" {
		t.Skip("git is not installed")
	}
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := &worktree{t: t, dir: dir, trace: filepath.Join(t.TempDir(), "trace")}
	w.git("init", "-q")
	t.Cleanup(w.cleanup)
	return w
}

// useHook configures the monitor as git's hook. From then on, every git
// command that looks at the worktree asks it, starting a daemon if none
// runs.
func (w *worktree) useHook() {
	w.t.Helper()
	w.useHookCommand("'" + binary + "' hook")
}

// useHookCommand configures cmd as git's fsmonitor hook, with the
// settings the command's documentation recommends beside it.
func (w *worktree) useHookCommand(cmd string) {
	w.t.Helper()
	w.git("config", "core.fsmonitor", cmd)
	w.git("config", "core.fsmonitorHookVersion", "2")
	w.git("config", "core.untrackedCache", "true")
	w.git("config", "core.splitIndex", "true")
	w.git("config", "core.preloadIndex", "false")
}

// git runs git in the worktree and returns its output; failing is fatal.
func (w *worktree) git(args ...string) string {
	w.t.Helper()
	out, err := w.gitEnv(nil, args...)
	if err != nil {
		w.t.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (w *worktree) gitEnv(env []string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("git", args...)
	cmd.Dir = w.dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%w: %s", err, stderr.Bytes())
	}
	return stdout.String(), nil
}

// fsm runs the command in dir.
func fsm(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s %s: %v", binary, strings.Join(args, " "), err)
	}
	return o.String(), e.String(), code
}

// fsmWant runs the command in the worktree and fails the test unless it
// exits with want.
func (w *worktree) fsmWant(want int, args ...string) (stdout, stderr string) {
	w.t.Helper()
	stdout, stderr, code := fsm(w.t, w.dir, args...)
	if code != want {
		w.t.Fatalf("pktipc-fsmonitor %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, stdout, stderr)
	}
	return stdout, stderr
}

func (w *worktree) socket() string {
	s, err := fsmonitor.SocketPath(filepath.Join(w.dir, ".git"), w.dir, "")
	if err != nil {
		w.t.Fatal(err)
	}
	return s
}

// start starts the daemon and records its pid.
func (w *worktree) start() {
	w.t.Helper()
	w.fsmWant(0, "start")
	w.track()
}

// track records the pid of the daemon listening now, as the kernel
// reports the socket's peer.
func (w *worktree) track() {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := uds.Dial(ctx, w.socket())
	if err != nil {
		w.t.Fatalf("no daemon listens: %v", err)
	}
	defer c.Close()
	cred, err := uds.PeerCred(c)
	if err != nil {
		w.t.Fatal(err)
	}
	if !slices.Contains(w.pids, int(cred.PID)) {
		w.pids = append(w.pids, int(cred.PID))
	}
}

// stop stops the daemon and checks that it stopped: nothing listens and
// its process is gone.
func (w *worktree) stop() {
	w.t.Helper()
	w.fsmWant(0, "stop")
	if out, _ := w.fsmWant(1, "status"); !strings.Contains(out, "is not watching") {
		w.t.Errorf("status after stop: %q", out)
	}
	w.checkGone()
}

// checkGone fails the test for each daemon still alive a few seconds
// after it was told to stop, and kills it.
func (w *worktree) checkGone() {
	w.t.Helper()
	for _, pid := range w.pids {
		deadline := time.Now().Add(5 * time.Second)
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) {
			w.t.Errorf("daemon %d still running; killing it", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	w.pids = w.pids[:0]
}

// cleanup stops a daemon left running and makes sure none survives.
func (w *worktree) cleanup() {
	if uds.State(w.socket()) == uds.Listening {
		if _, stderr, code := fsm(w.t, w.dir, "stop"); code != 0 {
			w.t.Errorf("stop at cleanup: exit %d: %s", code, stderr)
		}
	}
	w.checkGone()
}

// alive reports whether pid is a process that has not exited; an exited
// child of a parent that does not reap (the daemon's parent is init or a
// container's first process) lingers as a zombie.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

// statusOf is one `git status` run.
type statusOf struct {
	out   string
	took  time.Duration
	trace string // GIT_TRACE_FSMONITOR's output, for monitored runs
}

// monitored runs git status as a user would, with the monitor, with
// extra arguments (-uall lists untracked files one by one; git 2.39 then
// skips its untracked cache, so the timed runs use git's default).
func (w *worktree) monitored(extra ...string) statusOf {
	w.t.Helper()
	begin := time.Now()
	out, err := w.gitEnv([]string{"GIT_TRACE_FSMONITOR=" + w.trace}, append([]string{"status", "--porcelain=v1"}, extra...)...)
	took := time.Since(begin)
	if err != nil {
		w.t.Fatalf("git status: %v", err)
	}
	tr, _ := os.ReadFile(w.trace)
	os.Remove(w.trace)
	return statusOf{out: out, took: took, trace: string(tr)}
}

// reference runs git status as git's defaults would, without the monitor
// or the untracked cache and with the index preloaded by threads, and
// without writing the index: a plain status would drop the monitor's
// token from the index, and the next monitored status would scan
// everything instead of asking the monitor what changed.
func (w *worktree) reference(extra ...string) statusOf {
	w.t.Helper()
	begin := time.Now()
	out := w.git(append([]string{"--no-optional-locks", "-c", "core.fsmonitor=", "-c", "core.untrackedCache=false",
		"-c", "core.preloadIndex=true", "status", "--porcelain=v1"}, extra...)...)
	return statusOf{out: out, took: time.Since(begin)}
}

// incremental reports whether git used a list of changed paths from the
// monitor rather than a trivial reply.
func (s statusOf) incremental() bool {
	return strings.Contains(s.trace, "fsmonitor_refresh_callback")
}

// hookTime is how long git waited for the hook, from the trace's
// timestamps (wall clock, to the microsecond); 0 if it is not there.
func (s statusOf) hookTime() time.Duration {
	var begin, end time.Time
	for _, line := range strings.Split(s.trace, "\n") {
		stamp, _, _ := strings.Cut(line, " ")
		at, err := time.Parse("15:04:05.000000", stamp)
		switch {
		case err != nil:
		case strings.HasSuffix(line, "refresh fsmonitor"):
			begin = at
		case strings.Contains(line, "fsmonitor process") && !begin.IsZero():
			end = at
		}
	}
	if begin.IsZero() || end.IsZero() || end.Before(begin) {
		return 0
	}
	return end.Sub(begin)
}

// reported lists the paths git was told had changed.
func (s statusOf) reported() []string {
	var paths []string
	for _, line := range strings.Split(s.trace, "\n") {
		if _, rest, ok := strings.Cut(line, "fsmonitor_refresh_callback '"); ok {
			if p, _, ok := strings.Cut(rest, "'"); ok {
				paths = append(paths, p)
			}
		}
	}
	return paths
}

// compare fails the test if the monitored status differs from the
// reference.
func (w *worktree) compare(what string, mon, ref statusOf, ops []string) {
	w.t.Helper()
	if mon.out == ref.out {
		return
	}
	if log, err := os.ReadFile(filepath.Join(w.dir, ".git", "fsmonitor--daemon", "log")); err == nil {
		w.t.Logf("daemon log:\n%s", tail(string(log), 4000))
	}
	w.t.Fatalf("%s: git status with the monitor differs from git status without it\n"+
		"only with the monitor:\n%s\nonly without it:\n%s\noperations:\n%s\npaths the monitor reported: %s",
		what, lineDiff(mon.out, ref.out), lineDiff(ref.out, mon.out),
		strings.Join(ops, "\n"), limit(strings.Join(mon.reported(), " "), 4000))
}

// lineDiff returns the lines of a that b lacks.
func lineDiff(a, b string) string {
	have := make(map[string]bool)
	for _, l := range strings.Split(b, "\n") {
		have[l] = true
	}
	var d []string
	for _, l := range strings.Split(a, "\n") {
		if !have[l] {
			d = append(d, "  "+l)
		}
	}
	return limit(strings.Join(d, "\n"), 8000)
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// limit returns the first n bytes of s.
func limit(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func TestUsage(t *testing.T) {
	if binary == "" {
		t.Skip("git is not installed")
	}
	dir := t.TempDir()
	out, _, code := fsm(t, dir, "-h")
	if code != 0 {
		t.Errorf("-h: exit %d, want 0", code)
	}
	for _, verb := range []string{"run", "start", "stop", "status", "hook"} {
		if !strings.Contains(out, "\n  "+verb) {
			t.Errorf("-h does not list %s:\n%s", verb, out)
		}
	}
	for _, args := range [][]string{{}, {"frobnicate"}, {"status", "extra"}, {"hook", "2"}, {"hook", "2", "t", "x"}} {
		if _, stderr, code := fsm(t, dir, args...); code != 2 || !strings.Contains(stderr, "usage:") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and the usage", args, code, stderr)
		}
	}
	// git passes the version it was configured with: only 2 is spoken.
	if _, stderr, code := fsm(t, dir, "hook", "1", "1795422795148292482"); code != 1 || !strings.Contains(stderr, "version") {
		t.Errorf("hook version 1: exit %d, stderr %q; want 1 and a message", code, stderr)
	}
	// Outside a repository there is no worktree to watch.
	if _, stderr, code := fsm(t, dir, "status"); code != 1 || !strings.Contains(stderr, "error:") {
		t.Errorf("status outside a repository: exit %d, stderr %q; want 1 and an error", code, stderr)
	}
}

func TestNotRunning(t *testing.T) {
	w := newWorktree(t)
	out, _ := w.fsmWant(1, "status")
	if want := "fsmonitor-daemon is not watching '" + w.dir + "'\n"; out != want {
		t.Errorf("status: %q, want %q", out, want)
	}
	if _, stderr := w.fsmWant(1, "stop"); !strings.Contains(stderr, "not running") {
		t.Errorf("stop: stderr %q, want it to say the daemon is not running", stderr)
	}
	w.start()
	out, _ = w.fsmWant(0, "status")
	if want := "fsmonitor-daemon is watching '" + w.dir + "'\n"; out != want {
		t.Errorf("status: %q, want %q", out, want)
	}
	// A second start leaves the running daemon alone.
	if out, _ = w.fsmWant(0, "start"); !strings.Contains(out, "already running") {
		t.Errorf("second start: %q, want it to say a daemon is running", out)
	}
	before := slices.Clone(w.pids)
	w.track()
	if !slices.Equal(w.pids, before) {
		t.Errorf("second start replaced the daemon: pids %v, then %v", before, w.pids)
	}
	// So does a daemon in the foreground.
	if _, stderr := w.fsmWant(1, "run"); !strings.Contains(stderr, "already running") {
		t.Errorf("run beside a daemon: stderr %q, want it to say a daemon is running", stderr)
	}
	w.stop()
}

func TestRunSignal(t *testing.T) {
	w := newWorktree(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd := exec.Command(binary, "run")
		cmd.Dir = w.dir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w.pids = append(w.pids, cmd.Process.Pid)
		deadline := time.Now().Add(10 * time.Second)
		for uds.State(w.socket()) != uds.Listening && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if _, _, code := fsm(t, w.dir, "status"); code != 0 {
			t.Fatalf("run: not watching after 10 s; stderr: %s", stderr.Bytes())
		}
		cmd.Process.Signal(sig)
		if err := cmd.Wait(); err != nil {
			t.Errorf("run after %v: %v, want exit 0; stderr: %s", sig, err, stderr.Bytes())
		}
		if uds.State(w.socket()) == uds.Listening {
			t.Errorf("a daemon still listens after run ended on %v", sig)
		}
	}
}

// splitReply cuts a hook's output into its token and paths; trivial
// means "/", everything changed.
func splitReply(t *testing.T, out string) (token string, paths []string, trivial bool) {
	t.Helper()
	token, rest, ok := strings.Cut(out, "\x00")
	if !ok || !strings.HasPrefix(token, "builtin:") {
		t.Fatalf("hook output %q: want builtin:<token>, NUL, ...", out)
	}
	if rest == "/\x00" {
		return token, nil, true
	}
	if rest != "" && !strings.HasSuffix(rest, "\x00") {
		t.Fatalf("hook output %q: paths not NUL-terminated", out)
	}
	if rest != "" {
		paths = strings.Split(strings.TrimSuffix(rest, "\x00"), "\x00")
	}
	return token, paths, false
}

func TestHook(t *testing.T) {
	w := newWorktree(t)
	writeFile(t, filepath.Join(w.dir, "a.txt"), "a\n")
	w.git("add", "a.txt")
	w.git("commit", "-q", "-m", "a")
	w.useHook()

	// No daemon: the hook starts one, whose first answer is trivial
	// (git's first token is a V1 timestamp it cannot know). The hook
	// inherits a pipe, as it may from git: the daemon must not keep it.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(binary, "hook", "2", strconv.FormatInt(time.Now().UnixNano(), 10))
	cmd.Dir, cmd.Stdout, cmd.Stderr = w.dir, &stdout, &stderr
	cmd.ExtraFiles = []*os.File{pw}
	err = cmd.Run()
	pw.Close()
	if err != nil {
		t.Fatalf("hook: %v; stderr: %s", err, stderr.Bytes())
	}
	out := stdout.String()
	token, _, trivial := splitReply(t, out)
	if !trivial {
		t.Fatalf("first reply %q: want trivial", out)
	}
	w.fsmWant(0, "status")
	w.track()
	pr.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := pr.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("reading a pipe the hook inherited: %v, want EOF: the daemon holds it", err)
	}

	// Nothing changed since: no paths, and no "/".
	out, _ = w.fsmWant(0, "hook", "2", token)
	token, paths, trivial := splitReply(t, out)
	if trivial || len(paths) != 0 {
		t.Fatalf("reply after no change %q: want a token alone", out)
	}

	writeFile(t, filepath.Join(w.dir, "a.txt"), "changed\n")
	if err := os.Mkdir(filepath.Join(w.dir, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(w.dir, "dir", "new.txt"), "new\n")
	out, _ = w.fsmWant(0, "hook", "2", token)
	if _, paths, trivial = splitReply(t, out); trivial {
		t.Fatalf("reply after changes %q: want paths", out)
	}
	slices.Sort(paths)
	if want := []string{"a.txt", "dir/", "dir/.pktipc-fsmonitor-cone", "dir/new.txt"}; !slices.Equal(paths, want) {
		t.Errorf("changed paths %q, want %q", paths, want)
	}

	// A daemon that cannot start (a file holds its socket's place):
	// still a trivial reply, so that git scans, and a warning.
	w.stop()
	if err := os.WriteFile(w.socket(), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out, warning := w.fsmWant(0, "hook", "2", token)
	if out != "builtin:fake\x00/\x00" {
		t.Errorf("reply without a daemon %q, want %q", out, "builtin:fake\x00/\x00")
	}
	if !strings.Contains(warning, "warning:") {
		t.Errorf("no warning on stderr without a daemon: %q", warning)
	}
	if err := os.Remove(w.socket()); err != nil {
		t.Fatal(err)
	}
}

func TestRestart(t *testing.T) {
	w := newWorktree(t)
	tr := newTree(w.dir, rand.New(rand.NewPCG(1, 2)))
	tr.populate(t, 300)
	w.git("add", "-A")
	w.git("commit", "-q", "-m", "initial")
	w.useHook()
	w.start()
	check := func(what string) statusOf {
		t.Helper()
		mon := w.monitored()
		w.compare(what, mon, w.reference(), tr.ops)
		tr.ops = tr.ops[:0]
		return mon
	}
	check("first status")
	tr.round(t, 10)
	if !check("after changes").incremental() {
		t.Error("status after changes did not use the monitor's list of paths")
	}

	// Changes made while no daemon runs, then a new daemon: it does not
	// know git's token, so git scans, and is right.
	w.stop()
	tr.round(t, 10)
	w.start()
	check("after a restart")
	tr.round(t, 10)
	if !check("after a restart and changes").incremental() {
		t.Error("status after a restart and changes did not use the monitor's list of paths")
	}
	w.stop()
}

func TestRandomOperations(t *testing.T) {
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (-fsmonitor.seed=%d reproduces), %d files, %d rounds", seed, seed, *flagFiles, *flagRounds)
	w := newWorktree(t)
	tr := newTree(w.dir, rand.New(rand.NewPCG(seed, seed>>32)))
	begin := time.Now()
	tr.populate(t, *flagFiles)
	w.git("add", "-A")
	w.git("commit", "-q", "-m", "initial")
	if *flagHook == "c" && cHook != "" {
		// Unquoted, as a user would write a plain path: git runs a
		// command without shell metacharacters itself, not through sh.
		w.useHookCommand(cHook)
		t.Log("hook: build-hook's C fast path")
	} else {
		w.useHook()
		t.Log("hook: pktipc-fsmonitor hook")
	}
	t.Logf("made and committed %d files in %d directories in %v", len(tr.files.list), len(tr.dirs.list), time.Since(begin).Round(time.Millisecond))
	w.start()

	var monTotal, refTotal, hookTotal time.Duration
	var trivial []int // rounds whose monitored status got a trivial reply
	commits := 0
	for r := range *flagRounds {
		if tr.rng.IntN(10) == 0 {
			// Move git's own idea of clean along, through the monitor.
			w.git("add", "-A")
			w.git("commit", "-q", "--allow-empty", "-m", "round "+strconv.Itoa(r))
			tr.ops = append(tr.ops, "git add -A && git commit")
			commits++
		}
		tr.round(t, 1+tr.rng.IntN(16))
		mon := w.monitored()
		ref := w.reference()
		w.compare(fmt.Sprintf("round %d", r), mon, ref, tr.ops)
		// Every untracked file, too (untimed).
		w.compare(fmt.Sprintf("round %d, -uall", r), w.monitored("-uall"), w.reference("-uall"), tr.ops)
		tr.ops = tr.ops[:0]
		monTotal += mon.took
		refTotal += ref.took
		hookTotal += mon.hookTime()
		if !mon.incremental() {
			trivial = append(trivial, r)
		}
	}
	n := time.Duration(*flagRounds)
	t.Logf("%d rounds (%d commits) in %v; %d files, %d directories at the end", *flagRounds, commits,
		time.Since(begin).Round(time.Millisecond), len(tr.files.list), len(tr.dirs.list))
	t.Logf("git status with the monitor: total %v, mean %v; without: total %v, mean %v; ratio %.3f",
		monTotal.Round(time.Millisecond), (monTotal / n).Round(time.Microsecond),
		refTotal.Round(time.Millisecond), (refTotal / n).Round(time.Microsecond),
		float64(monTotal)/float64(refTotal))
	t.Logf("the hook took %v of it, mean %v", hookTotal.Round(time.Millisecond), (hookTotal / n).Round(time.Microsecond))
	t.Logf("%d of %d monitored runs got a trivial reply: rounds %v", len(trivial), *flagRounds, trivial)
	// Every round changes something, so a reply with paths shows in the
	// trace. Only the first query (git's V1 timestamp) must be trivial;
	// a kernel queue overflow or a cookie late on a loaded machine may
	// make a few more.
	if len(trivial) > 1+*flagRounds/20 {
		t.Errorf("%d of %d monitored runs got a trivial reply (rounds %v): the test hardly exercised the monitor",
			len(trivial), *flagRounds, trivial)
		if log, err := os.ReadFile(filepath.Join(w.dir, ".git", "fsmonitor--daemon", "log")); err == nil {
			t.Logf("daemon log:\n%s", tail(string(log), 4000))
		}
	}
	w.stop()
}

// tree is a model of the worktree's files and directories, for choosing
// operations that apply, and a log of the operations of the current round.
type tree struct {
	root  string
	rng   *rand.Rand
	files set // relative paths of the files
	dirs  set // relative paths of the directories, but the root
	gone  set // some paths of files removed, to make again
	next  int // for fresh names
	ops   []string
}

func newTree(root string, rng *rand.Rand) *tree {
	return &tree{root: root, rng: rng, files: newSet(), dirs: newSet(), gone: newSet()}
}

// set is a set of strings that can give a random member.
type set struct {
	list []string
	at   map[string]int
}

func newSet() set { return set{at: make(map[string]int)} }

func (s *set) add(p string) {
	if _, ok := s.at[p]; !ok {
		s.at[p] = len(s.list)
		s.list = append(s.list, p)
	}
}

func (s *set) remove(p string) {
	i, ok := s.at[p]
	if !ok {
		return
	}
	last := s.list[len(s.list)-1]
	s.list[i], s.at[last] = last, i
	s.list = s.list[:len(s.list)-1]
	delete(s.at, p)
}

func (s *set) has(p string) bool {
	_, ok := s.at[p]
	return ok
}

func (s *set) random(rng *rand.Rand) (string, bool) {
	if len(s.list) == 0 {
		return "", false
	}
	return s.list[rng.IntN(len(s.list))], true
}

// under returns the members equal to dir or below it.
func (s *set) under(dir string) []string {
	var in []string
	for _, p := range s.list {
		if p == dir || strings.HasPrefix(p, dir+"/") {
			in = append(in, p)
		}
	}
	return in
}

// removeFile drops a file from the model and remembers its path.
func (tr *tree) removeFile(rel string) {
	tr.files.remove(rel)
	tr.gone.add(rel)
	if len(tr.gone.list) > 1000 {
		p, _ := tr.gone.random(tr.rng)
		tr.gone.remove(p)
	}
}

func (tr *tree) abs(rel string) string { return filepath.Join(tr.root, filepath.FromSlash(rel)) }

func (tr *tree) fresh(prefix string) string {
	tr.next++
	return prefix + strconv.Itoa(tr.next)
}

// randomDir returns a directory, the root ("") included.
func (tr *tree) randomDir() string {
	if d, ok := tr.dirs.random(tr.rng); ok && tr.rng.IntN(8) != 0 {
		return d
	}
	return ""
}

func (tr *tree) content() string {
	n := 1 + tr.rng.IntN(300)
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(tr.rng.IntN(26))
	}
	b[n-1] = '\n'
	return string(b)
}

// populate makes n files spread over nested directories.
func (tr *tree) populate(t *testing.T, n int) {
	t.Helper()
	for len(tr.dirs.list) < n/16 {
		parent := tr.randomDir()
		if strings.Count(parent, "/") < 4 {
			tr.mkdir(t, path.Join(parent, tr.fresh("d")))
		}
	}
	for range n {
		tr.create(t, path.Join(tr.randomDir(), tr.fresh("f")+".txt"))
	}
	tr.ops = tr.ops[:0]
}

func (tr *tree) logf(format string, args ...any) {
	tr.ops = append(tr.ops, fmt.Sprintf(format, args...))
}

func (tr *tree) mkdir(t *testing.T, rel string) {
	t.Helper()
	if err := os.Mkdir(tr.abs(rel), 0o755); err != nil {
		t.Fatal(err)
	}
	tr.dirs.add(rel)
}

func (tr *tree) create(t *testing.T, rel string) {
	t.Helper()
	writeFile(t, tr.abs(rel), tr.content())
	tr.files.add(rel)
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// round applies n random operations.
func (tr *tree) round(t *testing.T, n int) {
	t.Helper()
	for want := len(tr.ops) + n; len(tr.ops) < want; {
		tr.op(t)
	}
}

// op applies one random operation and logs it; one that finds nothing to
// act on does nothing and logs nothing.
func (tr *tree) op(t *testing.T) {
	t.Helper()
	switch k := tr.rng.IntN(100); {
	case k < 15:
		rel := path.Join(tr.randomDir(), tr.fresh("n")+".txt")
		tr.create(t, rel)
		tr.logf("create %s", rel)
	case k < 20:
		tr.recreate(t)
	case k < 32:
		if rel, ok := tr.files.random(tr.rng); ok {
			f, err := os.OpenFile(tr.abs(rel), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.WriteString(tr.content())
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
			tr.logf("append to %s", rel)
		}
	case k < 44:
		// Same size, different bytes: only the mtime (and git's racy
		// checks) can tell.
		if rel, ok := tr.files.random(tr.rng); ok {
			old, err := os.ReadFile(tr.abs(rel))
			if err != nil {
				t.Fatal(err)
			}
			b := []byte(tr.content())
			for len(b) < len(old) {
				b = append(b, b...)
			}
			b = b[:len(old)]
			if bytes.Equal(b, old) && len(b) > 0 {
				b[0] ^= 1
			}
			if err := os.WriteFile(tr.abs(rel), b, 0o644); err != nil {
				t.Fatal(err)
			}
			tr.logf("rewrite %s, same size", rel)
		}
	case k < 54:
		if rel, ok := tr.files.random(tr.rng); ok {
			if err := os.Remove(tr.abs(rel)); err != nil {
				t.Fatal(err)
			}
			tr.removeFile(rel)
			tr.logf("delete %s", rel)
		}
	case k < 64:
		if rel, ok := tr.files.random(tr.rng); ok {
			to := path.Join(tr.randomDir(), tr.fresh("r")+".txt")
			if tr.rng.IntN(4) == 0 {
				// Over another file.
				if other, ok := tr.files.random(tr.rng); ok && other != rel {
					to = other
				}
			}
			if err := os.Rename(tr.abs(rel), tr.abs(to)); err != nil {
				t.Fatal(err)
			}
			tr.removeFile(rel)
			tr.files.add(to)
			tr.logf("rename %s to %s", rel, to)
		}
	case k < 69:
		if rel, ok := tr.files.random(tr.rng); ok {
			fi, err := os.Stat(tr.abs(rel))
			if err != nil {
				t.Fatal(err)
			}
			mode := fi.Mode() ^ 0o111
			if err := os.Chmod(tr.abs(rel), mode); err != nil {
				t.Fatal(err)
			}
			tr.logf("chmod %v %s", mode, rel)
		}
	case k < 81:
		top := path.Join(tr.randomDir(), tr.fresh("m"))
		tr.mkdir(t, top)
		dirs := []string{top}
		for range tr.rng.IntN(3) {
			d := path.Join(dirs[tr.rng.IntN(len(dirs))], tr.fresh("s"))
			tr.mkdir(t, d)
			dirs = append(dirs, d)
		}
		for range 1 + tr.rng.IntN(8) {
			tr.create(t, path.Join(dirs[tr.rng.IntN(len(dirs))], tr.fresh("f")+".txt"))
		}
		tr.logf("make directory %s with %d files", top, len(tr.files.under(top)))
	case k < 92:
		tr.moveDir(t)
	case k < 96:
		if dir, ok := tr.smallDir(); ok {
			n := len(tr.files.under(dir))
			if err := os.RemoveAll(tr.abs(dir)); err != nil {
				t.Fatal(err)
			}
			tr.forget(dir)
			tr.logf("delete directory %s with %d files", dir, n)
		}
	case k < 98:
		// A file becomes a directory of the same name.
		if rel, ok := tr.files.random(tr.rng); ok {
			if err := os.Remove(tr.abs(rel)); err != nil {
				t.Fatal(err)
			}
			tr.removeFile(rel)
			tr.mkdir(t, rel)
			tr.create(t, path.Join(rel, tr.fresh("f")+".txt"))
			tr.logf("replace file %s with a directory", rel)
		}
	default:
		// A directory becomes a file of the same name.
		if dir, ok := tr.smallDir(); ok {
			if err := os.RemoveAll(tr.abs(dir)); err != nil {
				t.Fatal(err)
			}
			tr.forget(dir)
			tr.create(t, dir)
			tr.logf("replace directory %s with a file", dir)
		}
	}
}

// smallDir picks the directory holding the fewest files of a few chosen
// at random, so that deleting directories does not empty the tree.
func (tr *tree) smallDir() (string, bool) {
	best, fewest := "", -1
	for range 4 {
		d, ok := tr.dirs.random(tr.rng)
		if !ok {
			break
		}
		if n := len(tr.files.under(d)); fewest < 0 || n < fewest {
			best, fewest = d, n
		}
	}
	return best, fewest >= 0
}

// forget drops dir and everything under it from the model.
func (tr *tree) forget(dir string) {
	for _, p := range tr.files.under(dir) {
		tr.removeFile(p)
	}
	for _, p := range tr.dirs.under(dir) {
		tr.dirs.remove(p)
	}
}

// moveDir moves a directory, with all it holds, somewhere outside itself
// under a new name.
func (tr *tree) moveDir(t *testing.T) {
	t.Helper()
	dir, ok := tr.dirs.random(tr.rng)
	if !ok {
		return
	}
	parent := tr.randomDir()
	if parent == dir || strings.HasPrefix(parent, dir+"/") {
		parent = path.Dir(dir)
		if parent == "." {
			parent = ""
		}
	}
	to := path.Join(parent, tr.fresh("v"))
	if err := os.Rename(tr.abs(dir), tr.abs(to)); err != nil {
		t.Fatal(err)
	}
	files, dirs := tr.files.under(dir), tr.dirs.under(dir)
	n := len(files)
	for _, p := range files {
		tr.removeFile(p)
		tr.files.add(to + strings.TrimPrefix(p, dir))
	}
	for _, p := range dirs {
		tr.dirs.remove(p)
		tr.dirs.add(to + strings.TrimPrefix(p, dir))
	}
	tr.logf("move directory %s to %s with %d files", dir, to, n)
	if tr.rng.IntN(3) == 0 {
		// A new directory where the old one was, with some of its
		// names: nothing cached about the old one may show through.
		tr.mkdir(t, dir)
		k := 0
		for _, p := range files {
			if k < 2 && path.Dir(p) == dir && tr.rng.IntN(2) == 0 {
				tr.create(t, p)
				tr.gone.remove(p)
				k++
			}
		}
		tr.logf("make directory %s again with %d of its files", dir, k)
	}
}

// recreate makes a file again where one was removed, with new content,
// and the directories it needs.
func (tr *tree) recreate(t *testing.T) {
	t.Helper()
	rel, ok := tr.gone.random(tr.rng)
	if !ok || tr.files.has(rel) || tr.dirs.has(rel) {
		return
	}
	var missing []string
	for d := path.Dir(rel); d != "."; d = path.Dir(d) {
		if tr.files.has(d) {
			return // a file took a parent directory's name
		}
		if !tr.dirs.has(d) {
			missing = append(missing, d)
		}
	}
	for _, d := range slices.Backward(missing) {
		tr.mkdir(t, d)
	}
	tr.create(t, rel)
	tr.gone.remove(rel)
	tr.logf("make %s again", rel)
}

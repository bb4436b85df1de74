package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/pktipc/pktipc/engine"
	"github.com/pktipc/pktipc/fsmonitor"
	"github.com/pktipc/pktipc/uds"
)

// Timings, git's where git has them.
const (
	// pollInterval is how often start and stop look at the daemon.
	pollInterval = 50 * time.Millisecond
	// stopTimeout bounds stop's wait for the daemon to go.
	stopTimeout = 30 * time.Second
	// queryTimeout bounds one request, so that a wedged daemon cannot
	// hang git.
	queryTimeout = 10 * time.Second
)

// fakeQuery is what git sends when it has no token yet; a daemon answers
// it trivially, which makes it a cheap "are you there?".
const fakeQuery = "builtin:fake"

var (
	// errRunning is start's answer when a daemon already answers.
	errRunning = errors.New("already running")
	// errNotRunning is send's answer when nothing listens.
	errNotRunning = errors.New("fsmonitor--daemon is not running")
)

// send sends one request, as git's client does (retrying a busy server
// for about a second), and returns the reply. It probes first, so that a
// socket left by a dead daemon fails at once instead of after the retries.
func send(ctx context.Context, socket, req string) ([]byte, error) {
	if uds.State(socket) != uds.Listening {
		return nil, errNotRunning
	}
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	return engine.Send(ctx, socket, []byte(req), engine.WithDialOptions(uds.WaitIfBusy()))
}

// answers reports whether a daemon answers a query at socket.
func answers(ctx context.Context, socket string) bool {
	_, err := send(ctx, socket, fakeQuery)
	return err == nil
}

// run serves in the foreground until a quit request or a signal.
func run(ctx context.Context, r *repo, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	allow, err := gitConfig(ctx, "--type=bool", "fsmonitor.allowRemote")
	if err != nil {
		fmt.Fprintf(stderr, "error: fsmonitor--daemon: %v\n", err)
		return exitFail
	}
	opts := fsmonitor.Options{Worktree: r.worktree, GitDir: r.gitDir, AllowRemote: allow == "true"}
	err = fsmonitor.Serve(ctx, opts, r.socket)
	switch {
	case err == nil, ctx.Err() != nil:
		return exitOK
	case errors.Is(err, fsmonitor.ErrGone):
		// Nothing left to watch: the end of the daemon's job, as for git's.
		fmt.Fprintf(stderr, "fsmonitor--daemon: %v; stopped\n", err)
		return exitOK
	case errors.Is(err, uds.ErrInUse):
		fmt.Fprintf(stderr, "error: fsmonitor--daemon is already running '%s'\n", r.worktree)
	default:
		fmt.Fprintf(stderr, "error: fsmonitor--daemon: %v\n", err)
	}
	return exitFail
}

// start is the start verb.
func start(ctx context.Context, r *repo, stdout, stderr io.Writer) int {
	err := startDaemon(ctx, r)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errRunning):
		fmt.Fprintf(stdout, "fsmonitor--daemon is already running '%s'\n", r.worktree)
		return exitOK
	}
	fmt.Fprintf(stderr, "error: %v\n", err)
	return exitFail
}

// startDaemon starts `run` in the background and waits until it answers,
// or returns errRunning if a daemon answers already.
func startDaemon(ctx context.Context, r *repo) error {
	if answers(ctx, r.socket) {
		return errRunning
	}
	timeout, err := r.startTimeout(ctx)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("daemon failed to start: %w", err)
	}
	logDir := filepath.Join(r.gitDir, "fsmonitor--daemon")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return fmt.Errorf("daemon failed to start: %w", err)
	}
	logPath := filepath.Join(logDir, "log")
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("daemon failed to start: %w", err)
	}
	defer logFile.Close()

	cmd := exec.Command(self, "run")
	cmd.Dir = r.worktree
	// Name the repository outright: the daemon must find the one found
	// here, whatever a relative GIT_DIR or the directory meant.
	cmd.Env = append(os.Environ(), "GIT_DIR="+r.gitDir, "GIT_WORK_TREE="+r.worktree)
	cmd.Stdout, cmd.Stderr = logFile, logFile // Stdin nil is /dev/null
	detach(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("daemon failed to start: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	deadline := time.Now().Add(timeout)
	for {
		if answers(ctx, r.socket) {
			return nil
		}
		select {
		case err := <-exited:
			// Another start may have won the race for the socket.
			if answers(ctx, r.socket) {
				return nil
			}
			return fmt.Errorf("daemon terminated (%v); see %s", err, logPath)
		default:
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("daemon not online yet after %v; see %s", timeout, logPath)
		}
		if !sleep(ctx, pollInterval) {
			return context.Cause(ctx)
		}
	}
}

// stop sends quit and waits until nothing listens.
func stop(ctx context.Context, r *repo, stderr io.Writer) int {
	if _, err := send(ctx, r.socket, "quit"); errors.Is(err, errNotRunning) {
		fmt.Fprintf(stderr, "error: %v '%s'\n", err, r.worktree)
		return exitFail
	} else if err != nil {
		fmt.Fprintf(stderr, "error: could not send 'quit' command to fsmonitor--daemon: %v\n", err)
		return exitFail
	}
	deadline := time.Now().Add(stopTimeout)
	for uds.State(r.socket) == uds.Listening {
		if !time.Now().Before(deadline) {
			fmt.Fprintf(stderr, "error: fsmonitor--daemon has not stopped after %v '%s'\n", stopTimeout, r.worktree)
			return exitFail
		}
		if !sleep(ctx, pollInterval) {
			return exitFail
		}
	}
	return exitOK
}

// status prints git's answer to `git fsmonitor--daemon status`.
func status(r *repo, stdout io.Writer) int {
	if uds.State(r.socket) == uds.Listening {
		fmt.Fprintf(stdout, "fsmonitor-daemon is watching '%s'\n", r.worktree)
		return exitOK
	}
	fmt.Fprintf(stdout, "fsmonitor-daemon is not watching '%s'\n", r.worktree)
	return exitFail
}

// sleep sleeps d unless ctx ends first; it reports whether it slept.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

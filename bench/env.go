package bench

import (
	"context"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strconv"
)

// Env is what a peer may use during one Runner.Run: a private directory,
// the options the user gave, and helpers to start child processes the way
// the runner can clean up. Its methods are called from the runner's
// goroutine.
type Env struct {
	// Dir is a private directory (mode 0700) for sockets and built
	// binaries, removed when the run ends.
	Dir string
	// TestTool is the path of git's test-tool, or "".
	TestTool string
	// Logger receives diagnostics; never nil.
	Logger *slog.Logger

	exe string // this binary, re-executed for server roles
	seq int    // names files in Dir
}

// TempPath returns a fresh path in Dir whose name starts with prefix.
// Names are short, so that socket paths stay far below sun_path's 108 bytes.
// Call it from the runner's goroutine.
func (e *Env) TempPath(prefix string) string {
	e.seq++
	return filepath.Join(e.Dir, prefix+strconv.Itoa(e.seq))
}

// ReadyMode says how the runner learns that a server accepts connections.
type ReadyMode int

const (
	// ReadyLine: the server writes "ready\n" on its standard output.
	ReadyLine ReadyMode = iota
	// ReadyDial: the runner connects to the socket until it is accepted
	// (for servers that are not ours, such as git's test-tool).
	ReadyDial
)

// ServerCmd is a server child that the runner will start, wait for and
// stop. The runner sets the command's standard streams and process
// attributes; the peer sets Path, Args, Env and Dir.
type ServerCmd struct {
	Cmd   *exec.Cmd
	Ready ReadyMode
}

// Command returns a command for a client child process (the C client,
// git's test-tool): it runs in its own process group, which is killed when
// ctx is cancelled or when this process dies, so no client outlives a run.
// Call it from the runner's goroutine.
func (e *Env) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	setChildAttrs(cmd)
	cmd.Cancel = func() error { return killGroup(cmd, true) }
	cmd.WaitDelay = stopTimeout
	return cmd
}

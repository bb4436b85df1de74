package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pktipc/pktipc/fsmonitor"
)

// repo is the worktree the command acts on, as git sees it from the
// current directory and environment.
type repo struct {
	worktree string // absolute root of the worktree
	gitDir   string // absolute git directory
	socket   string // where the daemon listens
}

// findRepo asks git for the worktree and git directory, and works out the
// daemon's socket as git does.
func findRepo(ctx context.Context) (*repo, error) {
	out, err := gitOutput(ctx, "rev-parse", "--show-toplevel", "--absolute-git-dir")
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 || lines[0] == "" || lines[1] == "" {
		return nil, fmt.Errorf("git rev-parse: unexpected output %q", out)
	}
	r := &repo{worktree: lines[0], gitDir: lines[1]}
	// fsmonitor.socketDir matters only when the git directory cannot
	// hold the socket; skip running git config when it can.
	r.socket, err = fsmonitor.SocketPath(r.gitDir, r.worktree, "")
	if err != nil || r.socket != filepath.Join(r.gitDir, fsmonitor.SocketName) {
		dir, cerr := gitConfig(ctx, "--type=path", "fsmonitor.socketDir")
		if cerr != nil {
			return nil, cerr
		}
		if r.socket, err = fsmonitor.SocketPath(r.gitDir, r.worktree, dir); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// findHookRepo is findRepo for the hook, which git runs at the top of the
// worktree on every status: when the current directory holds a .git
// directory and nothing in the environment says otherwise, that is the
// repository, and the hook saves running git (a process start, a tenth or
// more of what the hook costs). Anything else asks git.
func findHookRepo(ctx context.Context) (*repo, error) {
	if os.Getenv("GIT_DIR") != "" || os.Getenv("GIT_WORK_TREE") != "" {
		return findRepo(ctx)
	}
	wd, err := os.Getwd()
	if err != nil {
		return findRepo(ctx)
	}
	if wd, err = filepath.EvalSymlinks(wd); err != nil {
		return findRepo(ctx)
	}
	gitDir := filepath.Join(wd, ".git")
	if st, err := os.Lstat(gitDir); err != nil || !st.IsDir() {
		return findRepo(ctx) // a linked worktree's .git file, or a subdirectory
	}
	socket, err := fsmonitor.SocketPath(gitDir, wd, "")
	if err != nil || socket != filepath.Join(gitDir, fsmonitor.SocketName) {
		return findRepo(ctx) // fsmonitor.socketDir may apply
	}
	return &repo{worktree: wd, gitDir: gitDir, socket: socket}, nil
}

// startTimeout is git's fsmonitor.startTimeout, in seconds, default 60.
func (r *repo) startTimeout(ctx context.Context) (time.Duration, error) {
	s, err := gitConfig(ctx, "--type=int", "fsmonitor.startTimeout")
	if err != nil || s == "" {
		return 60 * time.Second, err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("fsmonitor.startTimeout: bad value %q", s)
	}
	return time.Duration(n) * time.Second, nil
}

// gitOutput runs git with args and returns its standard output; a failure
// carries git's own complaint.
func gitOutput(ctx context.Context, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return "", fmt.Errorf("git %s: %w: %s", args[0], err, msg)
		}
		return "", fmt.Errorf("git %s: %w", args[0], err)
	}
	return stdout.String(), nil
}

// gitConfig returns a setting's value (args end with its name), or ""
// when it is not set: `git config --get` exits with 1 then.
func gitConfig(ctx context.Context, args ...string) (string, error) {
	out, err := gitOutput(ctx, append([]string{"config", "--get"}, args...)...)
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		return "", nil
	}
	return strings.TrimSuffix(out, "\n"), err
}

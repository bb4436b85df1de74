// Command pktipc-fsmonitor is a filesystem monitor daemon for git, on
// pktipc's engine: the package fsmonitor behind a command line that acts
// like `git fsmonitor--daemon` on the worktree it is run in.
//
//	pktipc-fsmonitor run                     the daemon, in the foreground
//	pktipc-fsmonitor start                   the daemon, in the background
//	pktipc-fsmonitor stop                    ask the daemon to quit and wait
//	pktipc-fsmonitor status                  is a daemon watching this worktree?
//	pktipc-fsmonitor hook <version> <token>  git's fsmonitor hook (version 2)
//	pktipc-fsmonitor build-hook <path>       compile the hook's fast path in C
//
// The daemon listens where git looks for it (.git/fsmonitor--daemon.ipc,
// or under fsmonitor.socketDir when the git directory is on a remote
// filesystem), so git built with the builtin monitor can use it with
// core.fsmonitor=true. Any git can use it through the hook:
//
//	git config core.fsmonitor "/path/to/pktipc-fsmonitor hook"
//	git config core.fsmonitorHookVersion 2
//
// git appends the version and its last token to that command. The hook
// asks the daemon, starting it first if none answers, and prints the
// reply; it prints a trivial reply ("everything changed") when no daemon
// can be reached, so git scans instead of failing.
//
// git runs the hook on every status, and most of what the hook costs is
// starting a Go process. build-hook compiles (with $CC, default cc) a
// small C program that asks a running daemon itself and runs this
// command's hook for everything else (no daemon yet, a linked worktree,
// GIT_DIR, a remote filesystem):
//
//	pktipc-fsmonitor build-hook ~/.local/bin/pktipc-fsmonitor-hook
//	git config core.fsmonitor ~/.local/bin/pktipc-fsmonitor-hook
//
// With a monitor, what is left of a status in a large worktree is git's
// own work on the index; three settings cut it:
//
//	git config core.untrackedCache true   # read only the directories that changed
//	git config core.splitIndex true       # write only the entries that changed
//	git config core.preloadIndex false    # no threads to lstat what the monitor vouches for
//
// A monitored status writes the index every time, to keep the monitor's
// token, so a split index saves most of that write; preloading starts up
// to 20 threads to lstat entries, and with a monitor nearly every entry
// is already known to be clean.
//
// start runs `pktipc-fsmonitor run` in a new session, appending its output
// to .git/fsmonitor--daemon/log, and waits until it answers, at most
// fsmonitor.startTimeout seconds (default 60); a daemon that already
// answers is left alone. stop sends "quit" and waits at most 30 seconds.
// run stops cleanly on SIGINT and SIGTERM.
//
// Exit status: 0 on success, 1 on failure (status: 1 when no daemon
// watches the worktree), 2 for a usage error.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
)

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

const usageText = `usage: pktipc-fsmonitor <verb>

Verbs:
  run                     run the daemon in the foreground
  start                   start the daemon in the background
  stop                    stop the daemon
  status                  report whether the daemon watches this worktree
  hook <version> <token>  answer git's fsmonitor hook (version 2)
  build-hook <path>       compile the hook's fast path, in C, into <path>
`

func main() {
	os.Exit(realMain(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// realMain runs one verb and returns the exit status.
func realMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return usage(stderr, "no verb")
	}
	verb, args := args[0], args[1:]
	switch verb {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usageText)
		return exitOK
	case "hook":
		// The hook checks its own arguments: git passes exactly two.
		return hook(ctx, args, stdout, stderr)
	case "build-hook":
		return buildHook(ctx, args, stdout, stderr)
	case "run", "start", "stop", "status":
	default:
		return usage(stderr, fmt.Sprintf("unknown verb %q", verb))
	}
	if len(args) > 0 {
		return usage(stderr, verb+" takes no arguments")
	}
	r, err := findRepo(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return exitFail
	}
	switch verb {
	case "run":
		return run(ctx, r, stderr)
	case "start":
		return start(ctx, r, stdout, stderr)
	case "stop":
		return stop(ctx, r, stderr)
	default:
		return status(r, stdout)
	}
}

func usage(w io.Writer, why string) int {
	fmt.Fprintf(w, "pktipc-fsmonitor: %s\n\n%s", why, usageText)
	return exitUsage
}

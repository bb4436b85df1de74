package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/pktipc/pktipc/internal/gitipc"
)

// git's test commands (`test-tool simple-ipc`, git's t/helper), so that git
// and ipcbench can drive each other: `ipcbench serve` is git's run-daemon on
// pktipc's engine, and send, sendbytes, multiple, is-active, start-daemon
// and stop-daemon are git's client commands with git's options and outputs.
// `ipcbench simple-ipc SUBCOMMAND` takes git's own syntax, so the ipcbench
// binary can stand in for test-tool (ipcbench run --test-tool=ipcbench).
// The work is in internal/gitipc; this file only parses options.

// exitGitDie is git's status when it dies (an unknown subcommand);
// exitGitUsage its status after a usage message (a bad option, -h).
const (
	exitGitDie   = 128
	exitGitUsage = 129
)

// gitCommands maps ipcbench's command names to git's subcommands.
var gitCommands = []struct{ name, sub, summary string }{
	{"serve", "run-daemon", "git's test daemon on pktipc (test-tool simple-ipc run-daemon) until quit or Ctrl-C"},
	{"is-active", "is-active", "exit 0 if a simple-ipc server listens at --name (git's is-active)"},
	{"send", "send", "send --token to the server and print the answer (git's send)"},
	{"sendbytes", "sendbytes", "send \"sendbytes \" and --bytecount copies of --byte (git's sendbytes)"},
	{"multiple", "multiple", "--threads clients of --batchsize sendbytes requests each (git's multiple)"},
	{"start-daemon", "start-daemon", "start `ipcbench serve` in the background and wait until it listens"},
	{"stop-daemon", "stop-daemon", "send quit and wait until the server is gone"},
}

func init() {
	for _, gc := range gitCommands {
		register(command{name: gc.name, summary: gc.summary, run: func(ctx context.Context, cio *cmdIO, args []string) int {
			return runGitCommand(ctx, cio, gc.name, gc.sub, args, false)
		}})
	}
	register(command{name: "simple-ipc", summary: "git's `test-tool simple-ipc SUBCOMMAND [options]` syntax (ipcbench can stand in for test-tool)", run: simpleIPCCommand})
}

// gitFlags defines git's options on fs; every subcommand takes all of them,
// as in git.
func gitFlags(fs *flag.FlagSet) func() gitipc.Options {
	def := gitipc.DefaultOptions()
	name := fs.String("name", def.Name, "socket path")
	threads := fs.Int("threads", def.Threads, "server workers, or client threads of multiple (below 1: 1)")
	maxWait := fs.Int("max-wait", int(def.MaxWait/time.Second), "seconds start-daemon and stop-daemon wait")
	bytecount := fs.Int("bytecount", def.Bytecount, "ballast bytes of sendbytes and multiple")
	batchsize := fs.Int("batchsize", def.Batchsize, "requests per thread of multiple")
	byteVal := fs.String("byte", string(rune(def.Byte)), "ballast character (the first byte of the value)")
	token := fs.String("token", "", "command for send (default \"(no-command)\")")
	return func() gitipc.Options {
		o := gitipc.Options{
			Name: *name, Threads: *threads, MaxWait: time.Duration(*maxWait) * time.Second,
			Bytecount: *bytecount, Batchsize: *batchsize, Byte: def.Byte, Token: *token,
		}
		if *byteVal != "" {
			o.Byte = (*byteVal)[0]
		}
		return o
	}
}

// parseGitArgs parses args like git's parse_options: options may come
// before or after other arguments, which are ignored (git's usage text
// names positional arguments that its tool never reads); "--" ends the
// options.
func parseGitArgs(fs *flag.FlagSet, args []string) error {
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return nil
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return nil
		}
		args = rest[1:]
	}
}

// runGitCommand parses git's options and runs sub. name is the command
// as the user typed it, for messages. asGit: usage errors and -h exit as
// git's parse_options does (129), for the simple-ipc syntax that stands in
// for test-tool; otherwise as ipcbench's other commands.
func runGitCommand(ctx context.Context, cio *cmdIO, name, sub string, args []string, asGit bool) int {
	fs := newFlagSet(name, name+" [--name=PATH] [options]", cio)
	opts := gitFlags(fs)
	if err := parseGitArgs(fs, args); err != nil {
		switch {
		case asGit:
			return exitGitUsage
		case errors.Is(err, flag.ErrHelp):
			return exitOK
		}
		return exitUsage
	}
	g := &gitipc.Tool{Options: opts(), Stdout: cio.stdout, Stderr: cio.stderr}
	code, err := g.Run(ctx, sub, daemonCommand)
	if err != nil {
		fmt.Fprintf(cio.stderr, "fatal: Unhandled subcommand: '%s'\n", sub)
		return exitGitDie
	}
	return code
}

// daemonCommand is what start-daemon runs in the background: this binary
// as `ipcbench serve` for the same path and thread count. git runs the
// test-tool it finds in $PATH; the running binary is the one the user
// meant.
func daemonCommand(o gitipc.Options) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	return exec.Command(exe, "serve", "--name="+o.Name, "--threads="+strconv.Itoa(o.Threads))
}

// simpleIPCCommand is `ipcbench simple-ipc SUBCOMMAND [options]`, git's
// `test-tool simple-ipc` syntax.
func simpleIPCCommand(ctx context.Context, cio *cmdIO, args []string) int {
	if len(args) == 0 || isHelp(args[0]) {
		fmt.Fprintf(cio.stderr, "usage: ipcbench simple-ipc SUBCOMMAND [options]\n\nSubcommands: SUPPORTS_SIMPLE_IPC")
		for _, s := range gitipc.Subcommands {
			fmt.Fprintf(cio.stderr, ", %s", s)
		}
		fmt.Fprintf(cio.stderr, "\nOptions: see 'ipcbench help send'.\n")
		return exitGitUsage // as git's usage_with_options, -h included
	}
	if len(args) == 1 && args[0] == "SUPPORTS_SIMPLE_IPC" {
		return exitOK
	}
	return runGitCommand(ctx, cio, "simple-ipc "+args[0], args[0], args[1:], true)
}

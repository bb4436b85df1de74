package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/pktipc/pktipc/bench"
)

// Exit statuses.
const (
	exitOK          = 0
	exitFail        = 1
	exitUsage       = 2
	exitInterrupted = 130 // as a shell reports a command ended by SIGINT
)

// cmdIO is where a command writes. terminal says whether stderr is an
// interactive terminal (progress bar) or not (plain progress lines).
type cmdIO struct {
	stdout   io.Writer
	stderr   io.Writer
	terminal bool
}

// command is one subcommand. run gets the arguments after the command name
// and returns the exit status.
type command struct {
	name    string
	summary string // one line for `ipcbench help`
	run     func(ctx context.Context, cio *cmdIO, args []string) int
}

var commands []command

// register adds a subcommand; each file of this package registers its own
// from an init function. A duplicate name is a programming error.
func register(c command) {
	if slices.ContainsFunc(commands, func(o command) bool { return o.name == c.name }) {
		panic("ipcbench: command " + c.name + " registered twice")
	}
	commands = append(commands, c)
	slices.SortFunc(commands, func(a, b command) int { return strings.Compare(a.name, b.name) })
}

func lookup(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func main() {
	bench.RunChildIfRequested()
	cio := &cmdIO{stdout: os.Stdout, stderr: os.Stderr, terminal: progressTerminal(os.Stderr)}
	os.Exit(realMain(os.Args[1:], cio))
}

// realMain dispatches to a subcommand. With no arguments, or with flags
// only, it runs the quick suite.
func realMain(args []string, cio *cmdIO) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal asks for a clean stop; a second one, should the
	// clean-up hang, kills as it would without ipcbench's handler.
	context.AfterFunc(ctx, stop)
	if len(args) == 0 || (strings.HasPrefix(args[0], "-") && !isHelp(args[0])) {
		return runCommand(ctx, cio, args)
	}
	if isHelp(args[0]) {
		return help(cio, args[1:])
	}
	c, ok := lookup(args[0])
	if !ok {
		fmt.Fprintf(cio.stderr, "ipcbench: unknown command %q\n\n", args[0])
		usage(cio.stderr)
		return exitUsage
	}
	return c.run(ctx, cio, args[1:])
}

func isHelp(a string) bool { return a == "help" || a == "-h" || a == "-help" || a == "--help" }

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: ipcbench [command] [flags]\n\nWith no command, ipcbench runs the quick suite and prints a table.\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'ipcbench help COMMAND' or 'ipcbench COMMAND -h' for a command's flags.\n")
}

func help(cio *cmdIO, args []string) int {
	if len(args) == 0 {
		usage(cio.stdout)
		return exitOK
	}
	if args[0] == "help" {
		fmt.Fprintln(cio.stdout, "usage: ipcbench help [command]\n\nWith a command, shows its flags; without, lists the commands.")
		return exitOK
	}
	c, ok := lookup(args[0])
	if !ok {
		fmt.Fprintf(cio.stderr, "ipcbench help: unknown command %q\n", args[0])
		return exitUsage
	}
	return c.run(context.Background(), &cmdIO{stdout: cio.stdout, stderr: cio.stdout}, []string{"-h"})
}

func init() {
	register(command{name: "help", summary: "show usage of ipcbench or of one command", run: func(_ context.Context, cio *cmdIO, args []string) int {
		return help(cio, args)
	}})
}

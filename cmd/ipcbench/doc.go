// Command ipcbench measures pktipc against the IPC a Go user would pick
// instead, in the same run on the same machine.
//
//	ipcbench                      the quick suite: a table in under a minute
//	ipcbench run [flags]          choose suite, scenarios, peers, sizes, clients, durations;
//	                              --json for records, --plot DIR for SVG charts, --rounds N
//	                              to run each case N times, its peers taking turns, and keep
//	                              each peer's median run
//	ipcbench report [flags]       run the full suite and regenerate BENCHMARKS.md and its charts
//	ipcbench help [command]       usage
//
// git's simple-ipc test commands, with git's options (--name, --threads,
// --bytecount, --batchsize, --byte, --token, --max-wait) and outputs, so that
// ipcbench and git's test-tool can drive each other:
//
//	ipcbench serve --name=PATH [--threads=N]   git's test daemon (run-daemon) on pktipc
//	ipcbench send --token=ping                 send, sendbytes, multiple, is-active,
//	                                           start-daemon, stop-daemon: git's client
//	ipcbench simple-ipc SUBCOMMAND [options]   git's own syntax: ipcbench can stand in
//	                                           for test-tool (run --test-tool=PATH-OF-IPCBENCH)
//
// Like git's, these exit with status 0 or 1; the simple-ipc form exits as
// test-tool does on usage errors and -h (129) and on an unknown subcommand
// (128). serve also stops cleanly, removing its socket, on SIGINT or
// SIGTERM.
//
// LibIPC's pong example on package events, in any of its wire formats
// (pktline, libipc, libipc-c), finding services where LibIPC does ($RUNDIR,
// default /tmp/.libipc-run, for libipc; $IPC_RUNDIR, default /run/ipc, for
// libipc-c; --rundir overrides):
//
//	ipcbench pongd --service NAME [--format F] [--rundir DIR]
//	        echo every message (libipc-c: with its user type) until SIGINT or
//	        SIGTERM, then exit 0 with the socket removed
//	ipcbench pong --service NAME [--format F] [--rundir DIR] [--count N] [--size B] [--message TEXT]
//	        send N messages of B bytes (or TEXT once), check every echo byte
//	        for byte, print round-trip p50 and p99; exit 1 on a mismatch or
//	        an error
//
// Results go to standard output; progress goes to standard error, as a bar
// with an ETA on a terminal and as plain lines otherwise (or when CI is set).
// Ctrl-C stops the servers, removes the sockets and exits with status 130.
// Exit status 2 means a usage error: a bad flag, an unknown scenario or
// peer, a --test-tool path that is missing or not executable.
//
// Subcommands live in a registry: each file of this package adds its own
// with register from an init function.
package main

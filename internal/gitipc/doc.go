// Package gitipc is git's `test-tool simple-ipc` (t/helper/test-simple-ipc.c
// in git's tree) on pktipc's engine: the test daemon answers ping, big,
// chunk, slow, sendbytes and quit with the bytes git's daemon sends, and the
// client commands (Tool.Send, Sendbytes, Multiple, IsActive, StartDaemon,
// StopDaemon) take git's options and print git's lines, so that git's client
// and this one can each drive either daemon.
//
// cmd/ipcbench exposes the commands (`ipcbench serve`, `send`, ...,
// `ipcbench simple-ipc SUBCOMMAND`); bench runs the daemon as a server of
// its git-vs-pktipc peer and under its torture scenarios.
package gitipc

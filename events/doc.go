// Package events is LibIPC's programming model on pktipc: a program names
// services under a run directory, connects to others by name, and asks
// one Loop for the next thing that happened.
//
// WaitEvent returns exactly one Event per call: a Connection, a
// Disconnection, a message in (MessageRx) or out (MessageTx), a Timer, an
// External descriptor ready, or traffic across a switch (SwitchRx,
// SwitchTx). Run is the same as a callback. A connection speaks one of
// three wire formats: pkt-line (pktipc's own), LibIPC's current 4-byte
// length prefix, or the old C LibIPC's 6-byte header, so a program can
// talk to LibIPC peers of either generation.
//
// # What it keeps of LibIPC, and what it fixes
//
// The kinds, their codes, the idle timer's meaning, switches with
// transforms that answer Forward, Ignore, FDClosing or SwitchError, and the
// run directory layouts ($RUNDIR, /tmp/.libipc-run and its <name>.lock
// flock; $IPC_RUNDIR, /run/ipc) are LibIPC's. Its bugs are not:
//
//   - input is reassembled: any number of frames per read, a frame over
//     any number of reads, an empty message is a message; a declared
//     length over the cap ends the connection with a *SizeError before the
//     payload is read;
//   - events leave one queue in the order they happened and connections
//     take turns, so neither the oldest connection nor the busiest one
//     starves another; reads and writes progress independently;
//   - outbound messages are FIFO per connection, never lost to a short
//     write (the rest is written when the socket has room), and bounded:
//     Schedule fails with ErrQueueFull when a peer stops reading;
//   - ConnIDs are never reused while the Loop lives; Connection names both
//     the new connection and its service;
//   - switch transforms apply, per direction; when one side ends, both are
//     closed and each is reported once;
//   - socket errors are reported with their cause, spurious wake-ups are
//     invisible, names are validated, and the socket and its directory are
//     created as strictly as package uds creates them;
//   - every method is safe for concurrent use (WaitEvent callers are
//     serialised).
//
// # Threads and cost
//
// The Loop starts no goroutines. WaitEvent does the I/O in its caller's
// goroutine, sleeping in epoll_wait(2) (its thread blocks, as a C loop's
// does) only when nothing is ready; Write and Schedule write in their
// caller's goroutine and leave what the socket cannot take to the Loop.
// An event costs no allocation in steady state: buffers, the ready queue
// and outbound frames are reused.
//
// Descriptors never travel on a Loop connection, whose reads would drop
// them: Detach hands a connection to fdpass (with SO_PASSRIGHTS allowed
// on the service through WithListenOptions(uds.WithPassRights(true))).
//
// Linux only; elsewhere New returns errors.ErrUnsupported.
package events

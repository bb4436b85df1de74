// Package bench measures pktipc against what a user would pick instead: it
// defines the scenarios, the peers that run them, the measurement of one run
// and the reports (tables, JSON, BENCHMARKS.md). cmd/ipcbench is its thin
// front end; the SVG charts live in bench/plot so that this package does not
// pull in gonum.
//
// # Scenarios
//
// Every scenario moves pkt-line messages, or each peer's own framing of the
// same payload, between a client and a server in another process:
//
//   - pingpong: one persistent connection per client, a request of Size
//     payload bytes answered by a reply of the same size, closed loop.
//   - connect: git's shape, one connection per request (dial, request,
//     reply, close).
//   - concurrency: Conns persistent clients at once, 64-byte ping-pong.
//   - stream: one-way messages of Size bytes; the server only reads, and
//     answers an empty message at the end so that the client knows all
//     bytes arrived. Throughput is payload bytes per second.
//   - fdpass: one-way messages each carrying Size descriptors (Size counts
//     descriptors here, not bytes); the server closes what it receives.
//     The "unix" peer uses WriteMsgUnix/ReadMsgUnix, the "fdpass" peer
//     pktipc's fdpass package.
//
// A peer declares which scenarios it supports (PeerInfo.Scenarios).
//
// # Peers and the process model
//
// A peer is one implementation under test: a server and a client that do the
// same work. The peers are one ordered list, in peers.go, which is also the
// order of every table; adding a peer is a file with its implementation and
// a line there whose New returns a fresh Peer for each Runner.Run:
//
//	type Peer interface {
//		Prepare(ctx context.Context, env *Env) error
//		Server(env *Env, run Run) (*ServerCmd, error)
//		Client(ctx context.Context, env *Env, run Run, m *Meter) (Load, error)
//	}
//
// Prepare runs once per Runner.Run (compile a C file, check a binary) and
// returns an *UnavailableError when the peer cannot run here; the runner then
// skips it and says why. Server describes the child process that serves one
// run on run.Socket. Client drives the load from the benchmark process (or
// from a child of its own, as the C, git and shmipc clients do), calls
// m.Start when the warm-up is over and m.Stop when the measured window ends,
// and returns the latencies it recorded. A client that times the window
// itself (a child process with its own clock, processes whose start-up does
// not count) returns its account in Load.Window, which replaces the Meter's
// readings it gives.
//
// Servers always run in a child process, so that client and server CPU time,
// memory and counters are measured apart. A Go server is a server role of
// this binary, run in a re-executed copy of it: every main function and
// every TestMain that uses this package must call RunChildIfRequested first.
// The child learns its role by name, so the roles are a table from names to
// functions (roles.go), and each role has a settings type that its peer
// fills and its function receives, sent as JSON. A child server prints
// "ready" on its standard output once it accepts connections (or, for
// foreign servers such as git's test-tool, the runner dials the socket until
// it answers), and stops on SIGTERM or when its standard input reaches EOF,
// which happens when the benchmark process dies. The runner kills each
// server's process group after a timeout, keeps sockets in a private 0700
// directory that it removes at the end, and cleans up the same way when its
// context is cancelled (Ctrl-C).
//
// Go clients need not write the measuring loop: GoClient drives a dial
// function (pingpong, connect, concurrency) or a stream opener (stream,
// fdpass) with warm-up, closed-loop clients, HDR histograms and the measured
// window. A peer file is then about a hundred lines: a server role, its
// settings, a RoundTripper. The peers here: c and unix (the baselines);
// c-shm (C with the messages in rings in shared memory: the floor without
// a kernel in the path); pktipc (the engine with inline handlers and a
// persistent engine.Client), pktipc-pool (handlers on the worker pool),
// pktipc-git (engine.Send, one connection per request) and pktipc-events
// (package events, LibIPC's event model: one server Loop answering with
// Write, a Loop per client doing Write then WaitEvent); fdpass, grpc,
// ttrpc, mangos (NNG's protocols in Go) and shmipc (CloudWeGo's
// shared-memory IPC); and, with a test-tool, git (git against git),
// pktipc-vs-git (engine.Send against git's daemon) and git-vs-pktipc (git's
// client against the daemon of `ipcbench serve`, which is internal/gitipc).
//
// # Torture
//
// Torture runs pktipc's server in a child process and abuses it from this
// one and from an attacking child, each scenario reporting measurements
// beside the targets they must meet; `ipcbench torture` prints them.
//
// # Measurements
//
// Latencies go into HDR histograms (1 ns to 60 s, 3 significant digits);
// records carry p50, p90, p99, p99.9 and max, operations and payload bytes
// per second, CPU time per operation of the client and of the server process
// (the server's read from its process CPU clock around the measured window),
// context switches, cycles and instructions per operation where the kernel
// allows perf_event_open ("n/a" otherwise), and the ratios to the "unix" and
// "c" baselines measured in the same run, because absolute times drift on
// shared machines.
package bench

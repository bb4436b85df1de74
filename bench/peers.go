package bench

// peers is every peer, in table order: the baselines and C over shared
// memory, pktipc's own peers, the libraries a Go user would pick instead,
// and last the peers that run git's test-tool. Plans, tables and --peer
// list them in this order.
var peers = []PeerInfo{
	{
		Name:      BaselineC,
		Doc:       "blocking C over a Unix socket, thread per connection, pkt-line messages (cpeer/pingpong.c, built with cc -O2)",
		Scenarios: []Kind{PingPong, Connect, Concurrency, Stream},
		Quick:     true,
		New:       func() Peer { return &cPeer{name: BaselineC, prog: "pingpong"} },
	},
	{
		Name:      BaselineUnix,
		Doc:       "net.UnixConn, goroutine per connection, pkt-line messages via frame.Reader/Writer; fds with WriteMsgUnix/ReadMsgUnix (baseline)",
		Scenarios: []Kind{PingPong, Connect, Concurrency, Stream, FDPass},
		Quick:     true,
		New:       func() Peer { return unixPeer{} },
	},
	{
		Name:      "c-shm",
		Doc:       "C over shared memory: per connection a sealed memfd (passed over a Unix socket) with request and reply SPSC rings of length-prefixed messages, spinning waiters, thread per connection (cpeer/shm.c, built with cc -O2; Linux)",
		Scenarios: []Kind{PingPong, Connect, Concurrency, Stream},
		New:       func() Peer { return &cPeer{name: "c-shm", prog: "shm", memfd: true} },
	},
	{
		Name:      "pktipc",
		Doc:       "pktipc engine: gnet loops, echo handler inline on the loop (ReplyWriter.WriteUncopied); persistent engine.Client (Client.SendUncopied; stream: pipelined, messages up to 16 KiB queued and flushed 32 to a write (Client.Queue, Flush), every message answered by an empty reply, replies to requests read together written together)",
		Scenarios: []Kind{PingPong, Concurrency, Stream},
		Quick:     true,
		New:       func() Peer { return enginePeer{} },
	},
	{
		Name:      "pktipc-events",
		Doc:       "pktipc events (LibIPC's event model), pkt-line: the server is one events.Loop whose goroutine answers each MessageRx with Write, for every connection; each client has a Loop of its own and does Write, then WaitEvent for the reply; the client spins up to 50 µs before sleeping (events.WithSpin), as the engine's client does",
		Scenarios: []Kind{PingPong, Concurrency, Stream},
		Quick:     true,
		New:       func() Peer { return eventsPeer{} },
	},
	{
		Name:      "pktipc-pool",
		Doc:       "pktipc engine with the echo handler on the worker pool (engine.DefaultWorkers); persistent engine.Client",
		Scenarios: []Kind{PingPong, Concurrency, Stream},
		Quick:     true,
		New:       func() Peer { return enginePeer{server: engineSettings{Pool: true}} },
	},
	{
		Name:      "pktipc-shm",
		Doc:       "pktipc engine over shared-memory rings: engine.WithRings (request and reply rings of four times the message, 64 KiB to 4 MiB, sealed memfds passed at the handshake), inline echo handler (engine.WithInlineHandlers), which the server's ring watch runs itself for a request it finds (with more than two processors, for one request per look at the rings, the others going to their connections' goroutines), and the connection's goroutine otherwise; a lone wait spins and then sleeps on the ring's futex (up to 2 ms), waits in a crowd (more than two at once) are watched by one goroutine per process, which sleeps on all its rings at once (futex_waitv) once they are quiet for 50µs, and a wait that finds nothing parks on the connection's socket; persistent engine.Client that takes a reply of one record where it lies in the ring (engine.WithRingRepliesInPlace); stream: one-way messages (engine.Client.Post, no reply), laid out in the client's batch and flushed into the ring 32 at a time",
		Scenarios: []Kind{PingPong, Concurrency, Stream},
		Quick:     true,
		New:       func() Peer { return enginePeer{server: engineSettings{Rings: true}} },
	},
	{
		Name:      "pktipc-shm-park",
		Doc:       "pktipc-shm with spinning off on both sides (engine.WithRingSpin(0), engine.WithClientSpin(0)): every wait sleeps on the ring's futex (up to 2 ms, when it is its process's only wait) and then parks on the connection's socket",
		Scenarios: []Kind{PingPong, Concurrency, Stream},
		New:       func() Peer { return enginePeer{server: engineSettings{Rings: true, NoSpin: true}} },
	},
	{
		Name:      "pktipc-git",
		Doc:       "pktipc engine (inline echo) with git's client shape: engine.Send, one connection per request",
		Scenarios: []Kind{Connect},
		Quick:     true,
		New:       func() Peer { return enginePeer{oneShot: true} },
	},
	{
		Name:      "fdpass",
		Doc:       "pktipc fdpass: batched SCM_RIGHTS over a Unix socket (Passer, sendmmsg), descriptors closed on receipt",
		Scenarios: []Kind{FDPass},
		New:       func() Peer { return fdpassPeer{} },
	},
	{
		Name:      "grpc",
		Doc:       "gRPC over unix:, hand-written ServiceDesc, raw-bytes codec, one ClientConn per client",
		Scenarios: []Kind{PingPong, Connect, Concurrency, Stream},
		New:       func() Peer { return grpcPeer{} },
	},
	{
		Name:      "ttrpc",
		Doc:       "containerd ttrpc over a Unix socket, service map without codegen, wrapperspb.BytesValue payloads",
		Scenarios: []Kind{PingPong, Connect, Concurrency, Stream},
		MaxSize:   ttrpcMaxSize,
		New:       func() Peer { return ttrpcPeer{} },
	},
	{
		Name:      "mangos",
		Doc:       "mangos v3 (NNG's protocols in pure Go): req/rep over ipc://, echo on GOMAXPROCS*4 rep contexts, OptionMaxRecvSize 16 MiB + 64 KiB, a req socket per client; stream: push/pull with a send queue of 16 messages, the server counting each pipe's messages up to an end marker that a req/rep round trip then confirms",
		Scenarios: []Kind{PingPong, Concurrency, Stream},
		New:       func() Peer { return mangosPeer{} },
	},
	{
		Name:      "shmipc",
		Doc:       "CloudWeGo shmipc-go v0.2.0 configured as its own benchmark (memfd buffer of 256 MiB, 70% in slices of the message size), buffer faulted in and written before the run; one session, a stream per client, length-prefixed messages; client and server in child processes (Linux, amd64 and arm64)",
		Scenarios: []Kind{PingPong, Concurrency, Stream},
		New:       func() Peer { return shmipcPeer{} },
	},
	{
		Name:          "git",
		Doc:           "git's simple-ipc: test-tool simple-ipc run-daemon (8 threads) and test-tool simple-ipc multiple",
		Scenarios:     []Kind{Connect},
		NeedsTestTool: true,
		New:           func() Peer { return &gitPeer{} },
	},
	{
		Name:          "pktipc-vs-git",
		Doc:           "engine.Send (one connection per request, \"sendbytes\" requests) against git's test-tool simple-ipc run-daemon (8 threads)",
		Scenarios:     []Kind{Connect},
		NeedsTestTool: true,
		New:           func() Peer { return &pktipcVsGitPeer{} },
	},
	{
		Name:          "git-vs-pktipc",
		Doc:           "git's test-tool simple-ipc multiple against the test daemon of ipcbench serve (pktipc engine, 8 workers)",
		Scenarios:     []Kind{Connect},
		NeedsTestTool: true,
		New:           func() Peer { return &gitVsPktipcPeer{} },
	},
}

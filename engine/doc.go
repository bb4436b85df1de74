// Package engine is pktipc's public API: a server and clients that speak
// git's simple-ipc protocol over Unix sockets, plus pktipc's persistent,
// pipelined connections.
//
// # Server
//
// NewServer claims a socket path with uds.Listen (refusing a live server,
// replacing a dead socket, never touching a non-socket) and Serve runs it on
// gnet event loops. The server accepts connections itself, with back-off when
// the descriptor table is full, applies the peer-credential policy before
// reading a byte, and hands each connection to a loop, which decodes requests
// in place from its read buffer with package frame. gnet never sees the path:
// its own listener would delete whatever is there and stops on EMFILE.
//
// A connection whose whole request came with it (git's client writes its
// request as soon as it connects) is served as a blocking C server would:
// read, handle, write, close, on its bare descriptor, by the accept loop
// itself when its handler runs inline, and otherwise by a worker, to
// which the accept loop hands the request and the descriptor. Other
// connections join an event loop. The loops number one
// less than GOMAXPROCS by default, so that a processor stays free for the
// accept loop and the workers.
//
// A git client cannot tell the server from git's: one request per
// connection, the reply split into packets exactly as the handler wrote it,
// a terminating flush, close. Requests with a bad header, a bad length or
// over the size cap are dropped without a reply, as git does; silent,
// partial and trickling clients, and clients that stop reading, are closed
// at deadlines that git does not have. Every limit is an option with a named
// default.
//
// # Crowds and memory
//
// Connections are capped in total and per peer uid (WithMaxConns). At a
// cap, a new connection that brings a whole request evicts the oldest
// connection that has not completed one, so silent, partial and trickling
// clients never keep a real client out. A connection admitted with its
// whole request already in its input counts as one that completed it,
// though its event loop has yet to read it. From three quarters of a cap on,
// first-byte and request deadlines tighten, and a new connection waits for
// its request in a lobby, parked in Go's netpoller, before it may join an
// event loop. A memory budget (WithMemoryBudget) bounds the bytes buffered
// for all connections together; past it the connection holding the most is
// closed. Large request buffers are mapped outside the Go heap and reused
// across connections, and returned to the system after load. A connection
// whose replies wait for its peer to read costs nothing while it waits: a
// goroutine parked on the socket's writability tells its loop when the peer
// reads.
//
// Handlers run on a bounded worker pool (git's nr_threads), or inline on the
// event loop for handlers that never block (WithInlineHandlers): then a
// request is served without a goroutine hand-off, a copy or an allocation.
// WithInlineFilter chooses per request. A pooled handler writes its reply
// itself, on the server's duplicate of the connection's socket, while the
// socket takes it; only what the kernel does not take, and the end of the
// reply, go back through the event loop.
//
// Replies to requests that arrived together leave together: an inline
// reply with another request waiting behind it is held in the loop's
// buffer, and the replies go out in one write once the loop has served what
// it read (Stats.Batched). Pooled requests that arrived together on a
// persistent connection go to one worker as a batch (up to 64 requests or
// 64 KiB), which runs their handlers in turn, each with its own handler
// deadline (Stats.PoolBatched): a pipelining client costs one hand-off
// each way per batch, not per request. Each reply of a batch still leaves
// before the next handler starts, since a pooled handler may block.
// A large part of a reply written with
// ReplyWriter.WriteUncopied (32 KiB or more) goes from the handler's bytes
// to the socket with writev, its packet headers beside it; and every
// connection a loop serves asks the kernel for a send buffer that takes a
// 1 MiB message at once (WithSendBuffer). A large request read while a loop
// waits on its connection alone goes straight into its final buffer.
//
// A loop that serves a single persistent connection waits on that socket
// itself after a reply (WithSoloWait, on by default) and serves the next
// request without going back to gnet's poller, whose idle path costs a
// futex and two more system calls per round trip: ppoll, read and write
// remain, as in a blocking C server. After a reply from an inline handler,
// it polls the socket for a moment before it sleeps there (WithBusyPoll):
// a client that sends its next request at once finds the loop awake, and
// the round trip pays no wake-up on the server's side. The poll learns the
// client's pace and switches itself off for clients too slow for it to
// pay.
//
// # Clients
//
// Send is git's client: a connection per request, all-or-nothing replies.
// Dial returns a Client that offers pktipc's persistent handshake; a pktipc
// server keeps the connection and serves pipelined requests in order, and a
// git server declines by closing after its reply, after which the Client
// uses a connection per request. The Client waits for replies by spinning
// briefly on its socket before parking in the netpoller, which saves the
// wake-up that dominates a local round trip.
//
// Queue, Flush and SendBatch batch without waiting: queued requests leave
// in one write when the caller flushes (or a batch fills), and a lone Send
// is written at once, never held for company. On rings, queued requests
// are written into the ring and published together, with one store and
// at most one wake-up. SendUncopied sends a large
// request from the caller's bytes with writev, and a large reply is read
// straight into its final buffer, with readv, its packets laid out as they
// will lie there.
//
// Post sends a one-way message: its handler runs as any request's, in
// order with the Client's requests, and nothing comes back. On rings the
// message is a marked record the server answers with nothing, and posts
// are laid out in the Client's memory and copied into the ring a batch
// at a time; on a socket, a post travels as a request whose reply the
// Client reads and drops. A later request's reply says every message
// posted before it was handled.
//
// A Client matches replies to requests by construction: each request
// records the connection it went out on, and when a connection ends every
// request still waiting on it fails at once, so a reply that comes later,
// on a new connection, can only be its own request's. Every failed request
// says what may have happened to it: ErrNotProcessed (it never reached the
// server whole; sending it again is safe) or ErrIncompleteReply (it was
// sent, and the server may have processed it), wrapping the cause
// (ErrPeerClosed, ErrPeerReset, a deadline, a malformed reply). The
// persistent handshake is offered on every new connection.
//
// # Shared memory
//
// A Client dialled WithRings asks for shared-memory rings, and a server
// that allows them (WithRingLimits; none by default) makes two sealed
// memfds (package ring), one for requests and one for replies, and hands
// them over on a connection that never joins an event loop (gnet's
// read(2) would drop the descriptors). From then on a request is written
// straight into memory the server reads, the handler gets it as a slice
// of that memory (valid until it returns), and ReplyWriter writes the
// reply into the client's ring; Reserve and Commit let a handler build it
// there with no copy at all. The client copies each reply out of its
// ring, so a reply it returns cannot change under it, unless it was
// dialled WithRingRepliesInPlace: then a reply that came as one record is
// returned where it lies, valid until the Client's next call, and a large
// reply costs the client no copy either. The socket stays open for
// wake-ups only. A wait spins for a moment (WithRingSpin on the
// server, WithClientSpin on the client; half of GOMAXPROCS of them at
// once), and one that is the only one of its process then sleeps on the
// ring's futex for up to 2ms, which the peer's publish ends with one
// futex call. Waits in a crowd (more than two at once) hand their rings
// to one watching goroutine instead (the server's, or the process's for
// Clients), which looks at each ring in turn and wakes its owner when a
// record comes: a crowd of connections costs one spinning goroutine and
// no system call per message (with WithInlineHandlers, the server's watch
// runs the handler of a small request itself, instead of waking the
// connection's goroutine; with more than two processors, a round of the
// watch that finds more requests serves one and wakes the goroutines of
// the others, which run beside it). A watch whose rings brought nothing
// for 50µs sleeps on all of them at once (on Linux 5.16 and later), and
// the first record, on any, wakes it with one futex call: a peer that
// waits, or that the machine does not run (more threads than
// processors), costs no spinning beyond those 50µs. A wait that found
// nothing (for the spin, or in a watch whose rings were all quiet for
// 10ms, or for the spin where it cannot sleep) arms the ring and waits
// on the socket in Go's netpoller, and the peer writes a byte when it
// publishes. One goroutine
// per ring connection serves it, parked in the netpoller while idle, so
// one epoll watches every idle ring and an idle ring costs nothing. The
// peer's death ends the socket, and with it any wait, at once (within the
// 2ms of a sleep, or the 20ms of a watch).
// Ring connections obey the same handlers, request size cap, deadlines
// (idle, a request cut between records, handler, write; the handler
// deadline there bounds inline handlers too), connection caps,
// ring caps (WithRingLimits) and Shutdown as any other; a server that
// declines (no rings left, or git's) leaves the Client on the socket. A
// ring's memory is shared with the peer: a hostile client can change a
// request while its handler reads it, so a handler that validates a
// request and then acts on it copies it first.
//
// # Wire extension
//
// The handshake is an ordinary simple-ipc request, "\x01pktipc/persistent/1",
// answered with "\x01pktipc/persistent/1 ok". The ring handshake,
// "\x01pktipc/rings/1 <size>" ("... <size> inplace" from a client that
// reads replies in place), is a connection's first request, answered with
// "\x01pktipc/rings/1 ok oneway" and the two memfds (SCM_RIGHTS), or with
// "\x01pktipc/rings/1 no" and a close. On rings, a request whose first
// record carries the ring's mark is one-way (Client.Post). After the
// persistent handshake, requests end only at a flush packet (0000), 0004
// is an empty data packet, and 0001/0002 are protocol errors; replies are
// unchanged. A git client never sends the handshake, so it never sees the
// difference.
//
// # Inside
//
// DESIGN.md, beside this package's sources, maps the engine for a reader:
// its layers (admission policy, the simple-ipc protocol, the reactor that
// owns gnet, the client) and, for each mechanism, its file, its owner and
// the invariant that keeps it correct.
//
// # Goroutines and lifetimes
//
// Server and the package functions are safe for concurrent use; a Client is
// used by one goroutine at a time (Close and SetDeadline excepted). Request
// bytes passed to a handler are valid until it returns; a reply from
// Client.Call or Client.Recv is valid until the next call on that Client.
//
// Importing the package on Linux stops the timers of the goroutine pool
// that gnet makes when it is imported (gnet.pkg/pool/goroutine's
// DefaultWorkerPool), which the engine does not use: they would wake an
// idle process twice a second. A program that uses gnet's
// EventLoop.Register or Enroll itself finds that pool closed.
package engine

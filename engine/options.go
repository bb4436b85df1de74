package engine

import (
	"log/slog"
	"runtime"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/ring"
	"github.com/pktipc/pktipc/uds"
)

// Server defaults. Each has an option; none changes what a git client sees.
const (
	// DefaultWorkers is the size of the pool for blocking handlers: git's
	// fsmonitor daemon runs 8 IPC threads.
	DefaultWorkers = 8

	// DefaultMaxRequestSize caps one request. git has no cap: its daemon
	// holds any request whole, however large.
	DefaultMaxRequestSize = frame.DefaultMaxMessageSize

	// DefaultFirstByteTimeout closes a connection that sends nothing.
	// git waits forever and holds a worker.
	DefaultFirstByteTimeout = 5 * time.Second

	// DefaultRequestTimeout bounds a whole request from its first byte,
	// so a partial or trickling request cannot hold a connection. It is not an idle timer: trickling cannot extend it.
	DefaultRequestTimeout = 5 * time.Second

	// DefaultIdleTimeout closes a persistent connection idle between
	// requests for this long.
	DefaultIdleTimeout = 2 * time.Minute

	// DefaultHandlerTimeout cancels a handler's context after this long and
	// closes its connection: a handler stuck for good frees its worker,
	// and a slow one has ample time.
	DefaultHandlerTimeout = 2 * time.Minute

	// DefaultWriteTimeout closes a connection whose reply has not drained
	// into the kernel within this long: a client that stops reading
	// cannot hold its reply's memory.
	DefaultWriteTimeout = 10 * time.Second

	// DefaultOutboundHighWater bounds the reply bytes buffered for one
	// connection on top of the kernel's socket buffer: gnet
	// itself buffers without limit.
	DefaultOutboundHighWater = 4 << 20

	// DefaultSendBuffer is the kernel send buffer (SO_SNDBUF) asked for
	// each connection an event loop serves and each Client's connection:
	// room for a 1 MiB message, so that it goes out in one write instead
	// of a wait for the peer to read after every 200 KiB or so. The kernel
	// caps it at net.core.wmem_max. The bytes it holds count against
	// nothing of ours, as the kernel's default buffer's do not.
	DefaultSendBuffer = 1 << 20

	// DefaultMaxConns and DefaultMaxConnsPerUID cap connections, so a
	// crowd cannot take every descriptor.
	DefaultMaxConns       = 4096
	DefaultMaxConnsPerUID = 1024

	// DefaultBusyPoll is the longest an event loop polls its only
	// persistent connection after answering a request inline on the loop
	// (WithInlineHandlers, WithInlineFilter), for the next one, before it
	// sleeps. A local client that sends its next request at once then finds
	// the loop awake, and neither side pays a wake-up. The poll ends as soon
	// as the request is there, adapts to the client's pace and switches
	// itself off when it does not pay; it needs Linux and GOMAXPROCS of two
	// or more (the client cannot run on the processor the loop spins on).
	DefaultBusyPoll = 50 * time.Microsecond

	// DefaultSoloWait: an event loop that serves a single persistent
	// connection waits on it for the next request after a reply, and reads
	// and serves it without going back to gnet's poller: three system calls
	// per round trip instead of five, and no futex (solo.go). The wait costs
	// no CPU and arms no timer; it ends when the connection or the loop's
	// doorbell becomes readable, and everything else that needs the loop
	// rings the doorbell (an enrolling connection, the reaper, a stop). A
	// loop with two or more connections never waits.
	DefaultSoloWait = true

	// DefaultShutdownTimeout bounds the graceful stop that follows a quit
	// request, a stolen socket or the cancellation of Serve's context.
	DefaultShutdownTimeout = 5 * time.Second

	// readBufferCap is gnet's per-loop read buffer. 256 KiB keeps frames near
	// the 65520-byte maximum from straddling reads, which gnet
	// would copy to join them.
	readBufferCap = 256 << 10

	// listenBacklog is the socket's listen backlog unless WithListenOptions
	// sets one: a crowd that reconnects whenever it is closed comes back in
	// bursts, and a client that finds the backlog full fails at once
	// (EAGAIN) unless it waits as git's does. The kernel caps it at
	// net.core.somaxconn; each queued connection costs about 1 KiB there.
	listenBacklog = 4096

	// queuePerWorker sizes the queue of requests waiting for a worker, as git
	// does (nr_threads x 100), but never below the connection cap: a
	// connection has at most one request queued or in a handler, so a burst
	// of clients waits for a worker instead of being closed unanswered as
	// git's are when its queue is full.
	queuePerWorker = 100
)

// Option configures a Server.
type Option func(*options) error

type options struct {
	loops            int
	workers          int
	inline           bool
	inlineFilter     func(req []byte) bool // nil: inline decides for every request
	maxRequest       int
	firstByteTimeout time.Duration
	requestTimeout   time.Duration
	idleTimeout      time.Duration
	handlerTimeout   time.Duration
	writeTimeout     time.Duration
	highWater        int
	sendBuffer       int
	maxConns         int
	maxConnsPerUID   int
	memoryBudget     int64
	busyPoll         time.Duration
	soloWait         bool // and supported here
	shutdownTimeout  time.Duration
	persistent       bool
	maxRings         int // ring connections at once; 0 refuses them
	ringSize         int // the largest data area of one ring
	ringSpin         time.Duration
	logger           *slog.Logger
	listen           []uds.Option
	lockOSThread     bool
}

func defaultOptions() options {
	return options{
		loops:            defaultLoops(),
		workers:          DefaultWorkers,
		maxRequest:       DefaultMaxRequestSize,
		firstByteTimeout: DefaultFirstByteTimeout,
		requestTimeout:   DefaultRequestTimeout,
		idleTimeout:      DefaultIdleTimeout,
		handlerTimeout:   DefaultHandlerTimeout,
		writeTimeout:     DefaultWriteTimeout,
		highWater:        DefaultOutboundHighWater,
		sendBuffer:       DefaultSendBuffer,
		maxConns:         DefaultMaxConns,
		maxConnsPerUID:   DefaultMaxConnsPerUID,
		memoryBudget:     DefaultMemoryBudget,
		busyPoll:         DefaultBusyPoll,
		soloWait:         DefaultSoloWait && soloSupported,
		shutdownTimeout:  DefaultShutdownTimeout,
		persistent:       true,
		maxRings:         DefaultMaxRings,
		ringSize:         DefaultRingSize,
		ringSpin:         DefaultRingSpin,
		logger:           slog.New(slog.DiscardHandler),
	}
}

func positive(name string, v int) error {
	if v < 1 {
		return &OptionError{name, v, "must be at least 1"}
	}
	return nil
}

func nonNegative(name string, d time.Duration) error {
	if d < 0 {
		return &OptionError{name, d, "must not be negative"}
	}
	return nil
}

// defaultLoops leaves one of the runtime's processors (GOMAXPROCS) to
// everything that is not an event loop. A loop waits for its connections
// in a system call that keeps its processor; when every processor is held
// so, a goroutine that becomes ready (the accept loop with a git-style
// client, a worker, a lobby waiter) waits until the runtime's monitor takes
// a processor back, which takes up to 10 ms when the process is otherwise
// idle. With one processor there is nothing to leave.
func defaultLoops() int { return max(1, runtime.GOMAXPROCS(0)-1) }

// WithEventLoops sets the number of gnet event loops (default GOMAXPROCS
// less one, at least one). More loops than that leave goroutines outside
// the loops waiting for a processor now and then.
func WithEventLoops(n int) Option {
	return func(o *options) error { o.loops = n; return positive("EventLoops", n) }
}

// WithWorkers sets the size of the worker pool that runs handlers (git's
// nr_threads; default DefaultWorkers). Values below 1 are an error.
func WithWorkers(n int) Option {
	return func(o *options) error { o.workers = n; return positive("Workers", n) }
}

// WithInlineHandlers runs handlers on the event loop instead of the worker
// pool. Inline handlers must not block: while one runs, no other connection
// on its loop is served. In exchange a request costs no goroutine hand-off,
// no allocation and no futex, and its bytes are not copied. On
// shared-memory rings (WithRingLimits), where a connection's goroutine
// serves it, a small request (one record, at most 64 KiB) that the
// server's ring watch finds runs on the watch's goroutine: no hand-off
// there either, and a blocked handler holds every ring the watch looks
// at. Its reply never waits for the client there: what the reply ring has
// no room for is kept (within the memory budget) and sent by the
// connection's goroutine; as on the loop, Write returns ErrBackpressure
// past the outbound high-water mark, and the connection then ends. With
// more than two processors, the other requests the watch finds ready at
// once go to their connections' goroutines, which serve them beside the
// watch.
func WithInlineHandlers(inline bool) Option {
	return func(o *options) error { o.inline, o.inlineFilter = inline, nil; return nil }
}

// WithInlineFilter chooses per request: requests for which inline reports
// true are handled on the event loop, as with WithInlineHandlers, and the
// others on the worker pool. It suits a server whose quick requests must not
// pay a hand-off while a few block (git's test daemon: "slow" sleeps, "ping"
// does not). inline runs on the event loop, must be fast, and may read req
// only during the call. It replaces WithInlineHandlers. On shared-memory
// rings it is not asked, and every handler runs on its connection's
// goroutine: the client could change a request there between the filter
// and its handler.
func WithInlineFilter(inline func(req []byte) bool) Option {
	return func(o *options) error {
		if inline == nil {
			return &OptionError{"InlineFilter", nil, "must not be nil"}
		}
		o.inline, o.inlineFilter = false, inline
		return nil
	}
}

// WithMaxRequestSize caps the payload of one request.
func WithMaxRequestSize(n int) Option {
	return func(o *options) error { o.maxRequest = n; return positive("MaxRequestSize", n) }
}

// WithFirstByteTimeout sets how long a new connection may stay silent.
// Zero disables the limit.
func WithFirstByteTimeout(d time.Duration) Option {
	return func(o *options) error { o.firstByteTimeout = d; return nonNegative("FirstByteTimeout", d) }
}

// WithRequestTimeout bounds a request from its first byte to its terminator.
// Zero disables the limit.
func WithRequestTimeout(d time.Duration) Option {
	return func(o *options) error { o.requestTimeout = d; return nonNegative("RequestTimeout", d) }
}

// WithIdleTimeout bounds the silence between requests on a persistent
// connection. Zero disables the limit.
func WithIdleTimeout(d time.Duration) Option {
	return func(o *options) error { o.idleTimeout = d; return nonNegative("IdleTimeout", d) }
}

// WithHandlerTimeout bounds a pooled handler: its context is cancelled and
// its connection closed when the time is up, whether it computes or waits
// for its peer to read its reply. Zero disables the limit. Inline handlers
// on the event loops cannot be interrupted and are not bounded. On
// shared-memory rings every handler is bounded, inline ones included:
// when the time is up its connection closes and its context is
// cancelled, and the handler, which cannot be interrupted, finds its
// writes failing.
func WithHandlerTimeout(d time.Duration) Option {
	return func(o *options) error { o.handlerTimeout = d; return nonNegative("HandlerTimeout", d) }
}

// WithWriteTimeout bounds how long a reply may wait for the peer to read it.
// A reply its handler is still writing waits under this bound from the
// start of each wait and under the handler's own (WithHandlerTimeout),
// whichever ends first; what an inline handler left queued when it
// returned (on the socket, or spilled on rings) must all be read within
// one such bound. Zero disables the limit.
func WithWriteTimeout(d time.Duration) Option {
	return func(o *options) error { o.writeTimeout = d; return nonNegative("WriteTimeout", d) }
}

// WithOutboundHighWater sets how many reply bytes may wait in user space
// for one connection before the handler is held back (pool) or told
// (inline, ErrBackpressure). An inline reply may queue up to the mark on top
// of what earlier replies left queued, and no new request is served while
// more than the mark is queued, so a connection holds at most twice the
// mark. On shared-memory rings it bounds the reply an inline handler on
// the server's ring watch holds back for a full ring (WithInlineHandlers).
func WithOutboundHighWater(n int) Option {
	return func(o *options) error { o.highWater = n; return positive("OutboundHighWater", n) }
}

// WithSendBuffer sets the kernel send buffer (SO_SNDBUF) of each
// connection the event loops serve (default DefaultSendBuffer; 0 keeps the
// system's default). The kernel caps it at net.core.wmem_max.
func WithSendBuffer(n int) Option {
	return func(o *options) error {
		o.sendBuffer = n
		if n < 0 {
			return &OptionError{"SendBuffer", n, "must not be negative"}
		}
		return nil
	}
}

// WithMaxConns caps open connections in total and per peer uid. At a cap,
// a new connection makes room by evicting the oldest connection (of the
// same uid, at the uid's cap) that has not completed a request; when every
// connection has, the new one is accepted and closed at once, before any
// read. From three quarters of a cap on, the first-byte and request
// deadlines tighten to at most 2 s and 3 s, and a new connection joins an
// event loop only once its request is there: until then, for one to three
// seconds (two on average), it waits in a lobby that costs the loops
// nothing.
func WithMaxConns(total, perUID int) Option {
	return func(o *options) error {
		o.maxConns, o.maxConnsPerUID = total, perUID
		if err := positive("MaxConns", total); err != nil {
			return err
		}
		return positive("MaxConnsPerUID", perUID)
	}
}

// WithMemoryBudget bounds the bytes the server buffers for all its
// connections together: requests being read, requests waiting for a
// worker, replies waiting for their peers, and large buffers kept for
// reuse (default DefaultMemoryBudget). Past it, the connection holding the
// most is closed, or refused the larger buffer it asks for; while the
// buffers of connections so closed are still being released, the
// connection asking is refused instead (a connection
// on rings that gathers a request spanning records, or whose inline
// handler's reply spills on the ring watch, is closed when its buffer
// does not fit). The rings themselves are bounded apart
// (WithRingLimits). A request whose gathering buffer (a power of two at
// least its size) does not fit within seven eighths of the budget is
// refused, its connection closed: keep the budget well above the request
// size cap (WithMaxRequestSize). The Go runtime holds garbage on top of it
// between collections (GOGC); set GOMEMLIMIT to bound the process itself.
func WithMemoryBudget(n int64) Option {
	return func(o *options) error {
		o.memoryBudget = n
		if n < 1<<20 {
			return &OptionError{"MemoryBudget", n, "must be at least 1 MiB"}
		}
		return nil
	}
}

// WithBusyPoll sets the longest spin of an event loop waiting for the next
// request on its only persistent connection, after a reply from an inline
// handler (default DefaultBusyPoll, 0 disables). Without Linux or with
// GOMAXPROCS 1 loops never spin.
func WithBusyPoll(d time.Duration) Option {
	return func(o *options) error {
		o.busyPoll = d
		if d > time.Millisecond {
			return &OptionError{"BusyPoll", d, "must be at most 1ms: longer spins starve other connections of the loop"}
		}
		return nonNegative("BusyPoll", d)
	}
}

// WithSoloWait turns solo waits on or off (default DefaultSoloWait). They
// need Linux; elsewhere the loop always returns to gnet's poller.
func WithSoloWait(on bool) Option {
	return func(o *options) error { o.soloWait = on && soloSupported; return nil }
}

// WithShutdownTimeout bounds the graceful stop after a quit request, a
// stolen socket or the end of Serve's context.
func WithShutdownTimeout(d time.Duration) Option {
	return func(o *options) error { o.shutdownTimeout = d; return nonNegative("ShutdownTimeout", d) }
}

// WithPersistent allows (default) or refuses pktipc's persistent
// connections. A refusing server behaves exactly like git's: one request,
// one reply, close.
func WithPersistent(allow bool) Option {
	return func(o *options) error { o.persistent = allow; return nil }
}

// Ring defaults (see WithRingLimits; clients ask with WithRings).
const (
	// DefaultMaxRings is 0: a server serves rings only when asked to
	// (WithRingLimits), because a handler then reads requests in memory
	// that a hostile client can change while the handler runs.
	DefaultMaxRings = 0
	// DefaultRingSize is the largest data area a client is granted per
	// ring; a client asking for more gets this much.
	DefaultRingSize = 1 << 20
	// DefaultRingSpin is the longest a ring connection's goroutine spins
	// for the next request before it waits on the connection's socket: a
	// wait that falls back to the socket costs a hundred times a ring
	// round trip, so the spin covers a client that was preempted.
	DefaultRingSpin = 500 * time.Microsecond
)

// WithRingLimits lets up to maxConns connections at once use
// shared-memory rings (default none: clients that ask stay on the socket),
// with ring data areas of up to maxSize bytes (a power of two from
// ring.MinCapacity; smaller requests are granted as asked). Each ring
// connection holds two rings, so the shared memory lent to clients is at
// most 2 * maxConns * maxSize. Rings count against the connection caps
// like any connection. A handler serving a ring connection reads its
// request where the client wrote it, and the client can still write
// there: a handler that validates a request and then acts on it copies
// it first.
func WithRingLimits(maxConns, maxSize int) Option {
	return func(o *options) error {
		if maxConns < 0 {
			return &OptionError{"Rings", maxConns, "must not be negative"}
		}
		if maxSize < ring.MinCapacity || maxSize > ring.MaxCapacity || maxSize&(maxSize-1) != 0 {
			return &OptionError{"RingSize", maxSize, "must be a power of two between ring.MinCapacity and ring.MaxCapacity"}
		}
		o.maxRings, o.ringSize = maxConns, maxSize
		return nil
	}
}

// WithRingSpin sets how long a ring connection's goroutine spins for the
// next request, or for room in the reply ring, before it waits on the
// connection's socket (default DefaultRingSpin; 0 never spins). At most
// half of GOMAXPROCS of them spin at once.
func WithRingSpin(d time.Duration) Option {
	return func(o *options) error {
		o.ringSpin = d
		if d < 0 || d > time.Millisecond {
			return &OptionError{"RingSpin", d, "must be between 0 and 1ms"}
		}
		return nil
	}
}

// WithLogger sets the logger for the server and its gnet loops. The default
// discards everything.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return &OptionError{"Logger", l, "must not be nil"}
		}
		o.logger = l
		return nil
	}
}

// WithListenOptions passes options to uds.Listen: socket mode, directory
// checks, the peer-credential policy, abstract names.
func WithListenOptions(opts ...uds.Option) Option {
	return func(o *options) error { o.listen = append(o.listen, opts...); return nil }
}

// WithLockOSThread pins each event loop to an OS thread.
func WithLockOSThread(lock bool) Option {
	return func(o *options) error { o.lockOSThread = lock; return nil }
}

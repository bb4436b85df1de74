package fdpass

import (
	"fmt"
	"log/slog"
	"time"
)

// Mode selects the wire shape of a Passer.
type Mode int

const (
	// Framed (the default) sends messages of opaque bytes plus a declared
	// descriptor count; see PROTOCOL.md.
	Framed Mode = iota
	// Raw speaks the wire shape of AnyEvent::FDpasser, IO::FDPass and
	// LibIPC-C: one 0x00 byte and exactly one descriptor per sendmsg, and
	// nothing else on the socket.
	Raw
)

func (m Mode) String() string {
	switch m {
	case Framed:
		return "framed"
	case Raw:
		return "raw"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Limits. Each is the default of the option of the same name unless noted.
const (
	// MaxFDsPerSendmsg is the kernel's SCM_MAX_FD: one SCM_RIGHTS message
	// holds at most 253 descriptors; 254 gives EINVAL.
	MaxFDsPerSendmsg = 253

	// DefaultMaxFDsPerMessage is large enough for bulk hand-over; lower it
	// for untrusted peers (D-Bus uses 16).
	DefaultMaxFDsPerMessage = 1024

	// maxFDsPerMessageLimit bounds the option: a message must fit one
	// sendmmsg batch (maxBatchEntries entries of 253 descriptors each).
	maxFDsPerMessageLimit = maxBatchEntries * MaxFDsPerSendmsg

	// DefaultMaxUnclaimedFDs bounds what a peer can make us hold: reading
	// pauses while this many received descriptors wait for a receiver. The
	// effective default is also kept below half of RLIMIT_NOFILE.
	DefaultMaxUnclaimedFDs = 4096

	// DefaultMaxUnclaimedAge is D-Bus's pending_fd_timeout: descriptors
	// parked unclaimed for longer fail the passer.
	DefaultMaxUnclaimedAge = 150 * time.Second

	// DefaultMaxQueue is the send queue length in items: back-pressure
	// (ErrQueueFull) instead of unbounded memory.
	DefaultMaxQueue = 65536

	// DefaultMaxMessageSize bounds one message's data (ttrpc and gRPC use
	// 4 MiB); a larger declared length is a protocol error.
	DefaultMaxMessageSize = 4 << 20

	// DefaultMaxUnclaimedBytes bounds received data waiting for a receiver;
	// reading pauses above it.
	DefaultMaxUnclaimedBytes = 16 << 20

	// DefaultBackpressureTimeout is how long sends may keep failing with
	// ETOOMANYREFS before the passer gives up on the peer.
	DefaultBackpressureTimeout = 30 * time.Second

	// DefaultReserveFDs is the number of spare descriptors held back and
	// released just before each receive (the "full descriptor tables" trick).
	DefaultReserveFDs = 1

	// maxReserveFDs: one receive installs at most 253 descriptors plus one
	// SCM_PIDFD, so a larger reserve buys nothing.
	maxReserveFDs = MaxFDsPerSendmsg + 1

	// fullTableFirstRetry and fullTableRetry pace the retries of the spare
	// reservation once the table is full (FDpasser: 50 ms, then 500 ms).
	fullTableFirstRetry = 50 * time.Millisecond
	fullTableRetry      = 500 * time.Millisecond

	// readBufferSize is the data buffer of one recvmsg. Every byte read is
	// consumed at once (partial headers are kept by the decoder), so one
	// buffer per passer suffices.
	readBufferSize = 64 << 10

	// controlBufferSize holds the largest legal control data of one
	// receive: CMSG_SPACE(253*4)=1032 + SCM_CREDENTIALS 32 + SCM_PIDFD 24.
	controlBufferSize = 1088

	// maxReadsPerWake bounds the receives of one reader wake-up before
	// its messages are published; a receive that carries descriptors stops
	// after them, so one-descriptor messages need one receive each.
	maxReadsPerWake = 64

	// maxBatchEntries is the number of sendmsg entries in one sendmmsg call.
	maxBatchEntries = 64

	// maxBatchIovecs bounds the iovecs of one batch; the kernel allows
	// UIO_MAXIOV (1024) per entry.
	maxBatchIovecs = 1024

	// maxBatchBytes stops adding items to a batch once it holds this much
	// data; the socket buffer (~200 KiB) could not take more at once anyway.
	maxBatchBytes = 1 << 20

	// smallData is the largest payload copied next to its header so that
	// a message goes out as one iovec.
	smallData = 256

	// maxPendingGroups bounds descriptor groups waiting for their header
	// (one straddling header plus the current read is the most a valid
	// stream produces).
	maxPendingGroups = 4

	// backpressureFirstRetry and backpressureMaxRetry pace sendmsg retries
	// after ETOOMANYREFS; writability does not signal that the peer drained
	// descriptors, so a timer is needed.
	backpressureFirstRetry = time.Millisecond
	backpressureMaxRetry   = 100 * time.Millisecond
)

type options struct {
	mode                Mode
	keepOpen            bool
	maxFDsPerMessage    int
	maxUnclaimedFDs     int
	maxUnclaimedBytes   int
	maxUnclaimedAge     time.Duration
	maxQueue            int
	maxMessageSize      int
	backpressureTimeout time.Duration
	reserveFDs          int
	strictTruncation    bool
	noBundles           bool
	logger              *slog.Logger
}

func defaultOptions() options {
	return options{
		mode:                Framed,
		maxFDsPerMessage:    DefaultMaxFDsPerMessage,
		maxUnclaimedFDs:     0, // resolved in New against RLIMIT_NOFILE
		maxUnclaimedBytes:   DefaultMaxUnclaimedBytes,
		maxUnclaimedAge:     DefaultMaxUnclaimedAge,
		maxQueue:            DefaultMaxQueue,
		maxMessageSize:      DefaultMaxMessageSize,
		backpressureTimeout: DefaultBackpressureTimeout,
		reserveFDs:          DefaultReserveFDs,
		logger:              slog.New(slog.DiscardHandler),
	}
}

// Option configures a Passer. Options are validated by New.
type Option func(*options) error

// WithMode selects Framed (default) or Raw.
func WithMode(m Mode) Option {
	return func(o *options) error {
		if m != Framed && m != Raw {
			return fmt.Errorf("%w: mode %d", ErrInvalid, int(m))
		}
		o.mode = m
		return nil
	}
}

// KeepOpen makes the passer leave sent descriptors open: the caller keeps
// ownership and must keep each descriptor open until its completion fires
// (or Close returns). By default the passer takes ownership and closes each
// descriptor once sendmsg has put it in the kernel.
func KeepOpen() Option {
	return func(o *options) error { o.keepOpen = true; return nil }
}

// MaxFDsPerMessage bounds the descriptors of one message, sent or received
// (default 1024, at most 16192 so a message fits one sendmmsg batch). A peer
// declaring more is a protocol error.
func MaxFDsPerMessage(n int) Option {
	return func(o *options) error {
		if n < 1 || n > maxFDsPerMessageLimit {
			return fmt.Errorf("%w: MaxFDsPerMessage %d not in [1, %d]", ErrInvalid, n, maxFDsPerMessageLimit)
		}
		o.maxFDsPerMessage = n
		return nil
	}
}

// MaxUnclaimedFDs pauses reading while n received descriptors wait for a
// receiver (default min(4096, RLIMIT_NOFILE/2)). One read may overshoot it
// by the descriptors of that read.
func MaxUnclaimedFDs(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("%w: MaxUnclaimedFDs %d", ErrInvalid, n)
		}
		o.maxUnclaimedFDs = n
		return nil
	}
}

// MaxUnclaimedBytes pauses reading while n bytes of received data wait for
// a receiver (default 16 MiB).
func MaxUnclaimedBytes(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("%w: MaxUnclaimedBytes %d", ErrInvalid, n)
		}
		o.maxUnclaimedBytes = n
		return nil
	}
}

// MaxUnclaimedAge fails the passer with ErrUnclaimed when the oldest
// received message has waited longer than d for a receiver (default 150 s;
// 0 disables the check).
func MaxUnclaimedAge(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("%w: MaxUnclaimedAge %v", ErrInvalid, d)
		}
		o.maxUnclaimedAge = d
		return nil
	}
}

// MaxQueue bounds the send queue in items (default 65536). In Raw mode each
// descriptor is one item.
func MaxQueue(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("%w: MaxQueue %d", ErrInvalid, n)
		}
		o.maxQueue = n
		return nil
	}
}

// MaxMessageSize bounds the data bytes of one message, sent or received
// (default 4 MiB).
func MaxMessageSize(n int) Option {
	return func(o *options) error {
		if n < 0 || uint64(n) > 1<<32-1 {
			return fmt.Errorf("%w: MaxMessageSize %d", ErrInvalid, n)
		}
		o.maxMessageSize = n
		return nil
	}
}

// BackpressureTimeout is how long the writer keeps retrying after
// ETOOMANYREFS before failing the passer with ErrBackpressure (default 30 s).
func BackpressureTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("%w: BackpressureTimeout %v", ErrInvalid, d)
		}
		o.backpressureTimeout = d
		return nil
	}
}

// ReserveFDs sets how many spare descriptors the passer holds and releases
// just before each receive (default 1, at most 254; 0 disables the
// reserve). Each spare costs one close and one dup per receive.
func ReserveFDs(n int) Option {
	return func(o *options) error {
		if n < 0 || n > maxReserveFDs {
			return fmt.Errorf("%w: ReserveFDs %d not in [0, %d]", ErrInvalid, n, maxReserveFDs)
		}
		o.reserveFDs = n
		return nil
	}
}

// StrictTruncation makes a truncated message (MSG_CTRUNC) fail the whole
// passer instead of only that message.
func StrictTruncation() Option {
	return func(o *options) error { o.strictTruncation = true; return nil }
}

// NoBundles makes the writer send every Framed message in its own
// sendmsg instead of bundling runs of small descriptor-carrying messages
// into one (see PROTOCOL.md). Bundles save receives, but one receive then
// installs the descriptors of several messages; without them a receiver's
// spare-slot reserve covers each message of up to ReserveFDs descriptors.
func NoBundles() Option {
	return func(o *options) error { o.noBundles = true; return nil }
}

// WithLogger sets the logger for rare events (full descriptor table,
// protocol errors). The default discards.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalid)
		}
		o.logger = l
		return nil
	}
}

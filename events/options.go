package events

import (
	"log/slog"
	"time"

	"github.com/pktipc/pktipc/uds"
)

// Layout says where service names live and how a listener guards its name.
type Layout uint8

const (
	// Native: $XDG_RUNTIME_DIR/pktipc (or a private directory under the
	// system's temporary directory when that variable is unset), guarded
	// by uds's start-up lock and liveness probe.
	Native Layout = iota
	// LibIPCLayout is the current LibIPC's: $RUNDIR, default
	// /tmp/.libipc-run, and an exclusive flock on <path>.lock held while
	// the service lives (the lock file is left in place, as LibIPC leaves
	// it), on top of uds's own guard.
	LibIPCLayout
	// LibIPCCLayout is the old C LibIPC's: $IPC_RUNDIR, default /run/ipc.
	LibIPCCLayout
)

// Defaults of the options.
const (
	DefaultMaxMessageSize = 16 << 20
	DefaultMaxConns       = 4096
	DefaultQueueMessages  = 1024
	DefaultQueueBytes     = 4 << 20
	DefaultWriteTimeout   = 10 * time.Second
	DefaultReadBuffer     = 16 << 10
)

type options struct {
	layout       Layout
	runDir       string
	maxMessage   int
	maxConns     int
	queueMsgs    int
	queueBytes   int
	writeTimeout time.Duration
	listenOpts   []uds.Option
	dialOpts     []uds.DialOption
	logger       *slog.Logger
	spin         time.Duration
}

func defaultOptions() options {
	return options{
		maxMessage:   DefaultMaxMessageSize,
		maxConns:     DefaultMaxConns,
		queueMsgs:    DefaultQueueMessages,
		queueBytes:   DefaultQueueBytes,
		writeTimeout: DefaultWriteTimeout,
		logger:       slog.New(slog.DiscardHandler),
	}
}

// Option configures New.
type Option func(*options) error

// WithLayout chooses where names live (default Native).
func WithLayout(l Layout) Option {
	return func(o *options) error {
		if l > LibIPCCLayout {
			return &OptionError{Option: "layout", Value: l, Reason: "unknown layout"}
		}
		o.layout = l
		return nil
	}
}

// WithRunDir puts service sockets in dir, overriding the layout's
// directory (the layout's lock rules still apply). The directory must be
// private to us, as uds.Listen requires; it is created if missing.
func WithRunDir(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return &OptionError{Option: "run dir", Value: dir, Reason: "empty"}
		}
		o.runDir = dir
		return nil
	}
}

// WithMaxMessageSize caps a message's payload (default
// DefaultMaxMessageSize). A peer announcing more is disconnected with a
// *SizeError before its payload is read. The LibIPC formats are further
// capped by their own limits.
func WithMaxMessageSize(n int) Option {
	return func(o *options) error {
		if n <= 0 {
			return &OptionError{Option: "max message size", Value: n, Reason: "must be positive"}
		}
		o.maxMessage = n
		return nil
	}
}

// WithMaxConns caps live connections (accepted, connected and adopted;
// default DefaultMaxConns). At the cap, listeners stop accepting until a
// connection ends; waiting clients stay in the kernel's backlog.
func WithMaxConns(n int) Option {
	return func(o *options) error {
		if n <= 0 {
			return &OptionError{Option: "max conns", Value: n, Reason: "must be positive"}
		}
		o.maxConns = n
		return nil
	}
}

// WithQueueLimit bounds each connection's outbound queue, in messages and
// bytes (defaults DefaultQueueMessages, DefaultQueueBytes). Schedule
// beyond either fails with ErrQueueFull.
func WithQueueLimit(messages, bytes int) Option {
	return func(o *options) error {
		if messages <= 0 || bytes <= 0 {
			return &OptionError{Option: "queue limit", Value: [2]int{messages, bytes}, Reason: "must be positive"}
		}
		o.queueMsgs, o.queueBytes = messages, bytes
		return nil
	}
}

// WithWriteTimeout bounds how long Write waits for a peer that does not
// read (default DefaultWriteTimeout).
func WithWriteTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return &OptionError{Option: "write timeout", Value: d, Reason: "must be positive"}
		}
		o.writeTimeout = d
		return nil
	}
}

// WithListenOptions passes options to uds.Listen for every service (a
// credential policy, modes).
func WithListenOptions(opts ...uds.Option) Option {
	return func(o *options) error {
		o.listenOpts = append(o.listenOpts, opts...)
		return nil
	}
}

// WithDialOptions passes options to uds.Dial for every Connect.
func WithDialOptions(opts ...uds.DialOption) Option {
	return func(o *options) error {
		o.dialOpts = append(o.dialOpts, opts...)
		return nil
	}
}

// WithLogger sets where the Loop logs what it drops (default: nowhere).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return &OptionError{Option: "logger", Value: l, Reason: "nil"}
		}
		o.logger = l
		return nil
	}
}

// WithSpin lets WaitEvent poll for up to d before its thread sleeps
// (default 0: it sleeps at once). A local peer often answers sooner than
// a sleeping thread can be woken, so a client waiting for replies gains
// latency for CPU; the Loop keeps spinning only while at least a quarter
// of its spins catch an event. Meant for a latency-bound client, not for
// a server with many idle connections.
func WithSpin(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 || d > time.Second {
			return &OptionError{Option: "spin", Value: d, Reason: "must be between 0 and 1s"}
		}
		o.spin = d
		return nil
	}
}

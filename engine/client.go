package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/pktipc/pktipc/ring"
	"github.com/pktipc/pktipc/uds"
)

// Client defaults.
const (
	// DefaultMaxReplySize caps one reply. git's largest test reply is 850 KB.
	DefaultMaxReplySize = 64 << 20

	// DefaultClientSpin is the longest a client spins on its socket waiting
	// for a reply before it parks in Go's netpoller. Parking and waking
	// through the netpoller costs a wake-up, most of a local round trip; spinning
	// adapts to the observed reply time and is skipped when replies are
	// slower than this.
	DefaultClientSpin = 50 * time.Microsecond

	// DefaultClientRingSpin is the longest a client on rings (WithRings)
	// spins for a reply, or for room, before it waits on its socket.
	// Longer than on a socket: a ring round trip takes a microsecond or
	// two, and a wait that falls back to the socket costs a hundred times
	// that, while the other side, spinning too, was only preempted.
	DefaultClientRingSpin = 500 * time.Microsecond
)

// ClientOption configures Send and Dial.
type ClientOption func(*clientOptions) error

type clientOptions struct {
	dial       []uds.DialOption
	maxReply   int
	spin       time.Duration
	ringSpin   time.Duration
	persistent bool
	rings      int  // the ring size to ask for; 0 asks for none
	inPlace    bool // take one-record replies where they lie in the ring
	sendBuffer int
}

func defaultClientOptions() clientOptions {
	return clientOptions{maxReply: DefaultMaxReplySize, spin: DefaultClientSpin, ringSpin: DefaultClientRingSpin,
		persistent: true, sendBuffer: DefaultSendBuffer}
}

func (o *clientOptions) apply(opts []ClientOption) error {
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return err
		}
	}
	return nil
}

// WithDialOptions passes options to uds.Dial, such as uds.WaitIfBusy and
// uds.WaitIfNotFound (git's retry for a busy or not yet started server).
func WithDialOptions(opts ...uds.DialOption) ClientOption {
	return func(o *clientOptions) error { o.dial = append(o.dial, opts...); return nil }
}

// WithMaxReplySize caps the size of one reply (default DefaultMaxReplySize).
func WithMaxReplySize(n int) ClientOption {
	return func(o *clientOptions) error {
		o.maxReply = n
		if n < 1 {
			return &OptionError{"MaxReplySize", n, "must be at least 1"}
		}
		return nil
	}
}

// WithClientSpin sets the longest spin waiting for a reply, on a socket
// and on rings alike (defaults DefaultClientSpin and
// DefaultClientRingSpin; 0 parks at once).
func WithClientSpin(d time.Duration) ClientOption {
	return func(o *clientOptions) error {
		o.spin, o.ringSpin = d, d
		if d < 0 || d > time.Millisecond {
			return &OptionError{"ClientSpin", d, "must be between 0 and 1ms"}
		}
		return nil
	}
}

// WithClientSendBuffer sets the kernel send buffer (SO_SNDBUF) of a
// Client's connections (default DefaultSendBuffer; 0 keeps the system's
// default). Send, which makes one connection per request as git does,
// keeps the system's default.
func WithClientSendBuffer(n int) ClientOption {
	return func(o *clientOptions) error {
		o.sendBuffer = n
		if n < 0 {
			return &OptionError{"ClientSendBuffer", n, "must not be negative"}
		}
		return nil
	}
}

// WithGitStyle makes Dial skip pktipc's persistent handshake: every request
// goes on a new connection, exactly as git's client does.
func WithGitStyle() ClientOption {
	return func(o *clientOptions) error { o.persistent = false; return nil }
}

// WithRings makes Dial ask the server for shared-memory rings of size
// bytes each (a power of two from ring.MinCapacity; the server may grant
// less): requests and replies then travel through memory shared with the
// server, and the socket only wakes a side that waits. A server that
// declines (git's, one without room for more rings) is served over the
// socket as usual. The Client's spin (WithClientSpin) applies to its waits
// on the rings.
func WithRings(size int) ClientOption {
	return func(o *clientOptions) error {
		o.rings = size
		if size < ring.MinCapacity || size > ring.MaxCapacity || size&(size-1) != 0 {
			return &OptionError{"Rings", size, "must be a power of two between ring.MinCapacity and ring.MaxCapacity"}
		}
		return nil
	}
}

// WithRingRepliesInPlace makes a Client on rings (WithRings) return a
// reply that came as one record of the reply ring (one that the handler
// wrote with one Write, of up to half the ring) where it lies in the ring,
// instead of copying it out: a large reply then costs the Client no copy.
// Such a reply is valid until the Client's next call, as any reply is,
// and keeps its part of the ring until then. Two things
// differ from a copy: the server process can still write to it, so a
// caller that does not trust the server copies it before it validates it;
// and Close, on whatever goroutine, unmaps it, so it must not be read once
// Close has been called. Without rings the option changes nothing.
func WithRingRepliesInPlace() ClientOption {
	return func(o *clientOptions) error { o.inPlace = true; return nil }
}

// peerGone reports whether a write failed because the server closed or
// reset the connection (or closed its end of the rings).
func peerGone(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, ring.ErrPeerClosed) || errors.Is(err, io.EOF)
}

// sendFailure is the error of a request that did not reach the server whole.
func sendFailure(cause error) error {
	return fmt.Errorf("%w: %w", ErrNotProcessed, peerCause(cause))
}

// readFailure is the error of a request that was sent and got no whole
// reply.
func readFailure(cause error) error {
	return fmt.Errorf("%w: %w", ErrIncompleteReply, peerCause(cause))
}

// peerCause names what the peer did when a system call or the reply's
// decoding saw the connection end: closed (end of file, also in the middle
// of a reply) or reset. Other errors pass unchanged.
func peerCause(err error) error {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, ring.ErrPeerClosed):
		return ErrPeerClosed
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %w", ErrPeerClosed, err)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return fmt.Errorf("%w: %w", ErrPeerReset, err)
	}
	return err
}

// Send sends one request to the server at path and returns its reply, the
// way git's simple-ipc client does: one connection, the request, the reply
// up to its terminator, close. A reply cut short gives ErrIncompleteReply
// and nothing of it; a request that could not be sent gives
// ErrNotProcessed. ctx bounds the dial, the write and the read. The reply is
// a new slice owned by the caller. Safe for concurrent use.
func Send(ctx context.Context, path string, req []byte, opts ...ClientOption) ([]byte, error) {
	o := defaultClientOptions()
	if err := o.apply(opts); err != nil {
		return nil, err
	}
	return send(ctx, path, req, o)
}

// ctxOr prefers the context's error: a deadline set from ctx shows up as
// os.ErrDeadlineExceeded, but the caller asked in terms of ctx.
func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

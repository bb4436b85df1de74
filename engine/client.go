package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/uds"
)

// Client defaults.
const (
	// DefaultMaxReplySize caps one reply. git's largest test reply is 850 KB.
	DefaultMaxReplySize = 64 << 20

	// DefaultClientSpin is the longest a client spins on its socket waiting
	// for a reply before it parks in Go's netpoller. Parking and waking
	// through the netpoller adds 8-13 µs to a round trip (gnet.md); spinning
	// adapts to the observed reply time and is skipped when replies are
	// slower than this.
	DefaultClientSpin = 50 * time.Microsecond

	// spinMinHitRate (of 1024) is the share of replies that must come
	// within the spin limit for the client to keep spinning; spinFloor is
	// the shortest spin it plans.
	spinMinHitRate = 256
	spinFloor      = 5 * time.Microsecond

	// clientBufferMin is the first size of a client's read buffer; it grows
	// to frame.MinReadBuffer, beyond which the assembler gathers large
	// replies itself.
	clientBufferMin = 16 << 10
)

// ClientOption configures Send and Dial.
type ClientOption func(*clientOptions) error

type clientOptions struct {
	dial       []uds.DialOption
	maxReply   int
	spin       time.Duration
	persistent bool
}

func defaultClientOptions() clientOptions {
	return clientOptions{maxReply: DefaultMaxReplySize, spin: DefaultClientSpin, persistent: true}
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

// WithClientSpin sets the longest spin waiting for a reply (default
// DefaultClientSpin; 0 parks at once).
func WithClientSpin(d time.Duration) ClientOption {
	return func(o *clientOptions) error {
		o.spin = d
		if d < 0 || d > time.Millisecond {
			return &OptionError{"ClientSpin", d, "must be between 0 and 1ms"}
		}
		return nil
	}
}

// WithGitStyle makes Dial skip pktipc's persistent handshake: every request
// goes on a new connection, exactly as git's client does.
func WithGitStyle() ClientOption {
	return func(o *clientOptions) error { o.persistent = false; return nil }
}

// replyError turns the end of a reply read into a client error: anything
// that ends a connection before the terminator is an incomplete reply
// (faults.md A9): nothing of it is returned.
func replyError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, context.Canceled), errors.Is(err, ErrClientClosed):
		return err
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return fmt.Errorf("%w: %w", ErrIncompleteReply, err)
	}
	return err
}

// Send sends one request to the server at path and returns its reply, the
// way git's simple-ipc client does: one connection, the request, the reply
// up to its terminator, close. A reply cut short gives ErrIncompleteReply
// and nothing of it. ctx bounds the dial, the write and the read. The reply
// is a new slice owned by the caller. Safe for concurrent use.
func Send(ctx context.Context, path string, req []byte, opts ...ClientOption) ([]byte, error) {
	o := defaultClientOptions()
	if err := o.apply(opts); err != nil {
		return nil, err
	}
	uc, err := uds.Dial(ctx, path, o.dial...)
	if err != nil {
		return nil, &ClientError{"dial", path, err}
	}
	defer uc.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = uc.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = uc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := uc.Write(frame.AppendMessage(make([]byte, 0, frame.EncodedLen(len(req))), req)); err != nil {
		return nil, &ClientError{"send", path, ctxOr(ctx, replyError(err))}
	}
	msg, err := frame.NewReader(uc, frame.SimpleIPC, o.maxReply).ReadMessage()
	if err != nil {
		return nil, &ClientError{"read", path, ctxOr(ctx, replyError(err))}
	}
	return bytes.Clone(msg), nil
}

// ctxOr prefers the context's error: a deadline set from ctx shows up as
// os.ErrDeadlineExceeded, but the caller asked in terms of ctx.
func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Client is a connection to a server that keeps the connection between
// requests and pipelines them when the server is pktipc's, and falls back
// to one connection per request, reconnecting after every reply, when the
// server is git's.
//
// One goroutine at a time may call Send, Recv and Call (use one Client per
// goroutine); it may pipeline: Send several requests, then Recv their replies
// in the same order. Close and SetDeadline may be called from any goroutine:
// Close interrupts a call in progress, which returns ErrClientClosed.
type Client struct {
	path string
	opts clientOptions

	mu      sync.Mutex // guards uc against Close and SetDeadline from other goroutines
	closedA atomic.Bool
	uc      *net.UnixConn
	rc      syscall.RawConn

	persistent bool      // the server acknowledged the handshake
	handshook  bool      // the handshake was tried
	pending    int       // requests on the current connection still to be answered
	queued     [][]byte  // git server: requests waiting for their own connection
	deadline   time.Time // guarded by mu

	wbuf []byte
	woff int
	werr error

	rbuf       []byte
	rstart     int
	rend       int
	rerr       error
	rn         int
	asm        *frame.Assembler
	spinUntil  int64        // monotonic ns; 0 = do not spin on this read
	deadlineNS atomic.Int64 // monotonic ns of the deadline; 0 = none
	epoch      time.Time
	sentAt     int64 // when the only pending request was sent
	hitWait    int64 // moving average of the waits a spin would catch, ns
	hitRate    int32 // moving fraction (of 1024) of waits within the spin limit
	probe      uint8 // counts skipped spins; every 16th wait spins anyway
	spinSlot   bool  // this wait holds one of the spinners slots

	readFn  func(fd uintptr) bool
	writeFn func(fd uintptr) bool
}

// Dial connects to the server at path and, unless WithGitStyle, offers
// pktipc's persistent handshake. A git server declines it by closing after
// its reply; the Client then serves each request on its own connection.
// ctx bounds the connection and the handshake.
func Dial(ctx context.Context, path string, opts ...ClientOption) (*Client, error) {
	o := defaultClientOptions()
	if err := o.apply(opts); err != nil {
		return nil, err
	}
	c := &Client{
		path:    path,
		opts:    o,
		rbuf:    make([]byte, clientBufferMin),
		asm:     frame.NewAssembler(frame.SimpleIPC, o.maxReply),
		epoch:   time.Now(),
		hitRate: 1024, // spin until replies prove slow
	}
	c.readFn = c.readOnce
	c.writeFn = c.writeOnce
	if err := c.connect(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Persistent reports whether the server keeps the connection between
// requests (a pktipc server) or not (git's).
func (c *Client) Persistent() bool { return c.persistent }

func (c *Client) now() int64 { return int64(time.Since(c.epoch)) }

// connect opens a connection and, the first time, runs the handshake.
func (c *Client) connect(ctx context.Context) error {
	uc, err := uds.Dial(ctx, c.path, c.opts.dial...)
	if err != nil {
		return &ClientError{"dial", c.path, err}
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		_ = uc.Close()
		return &ClientError{"dial", c.path, err}
	}
	c.mu.Lock()
	if c.closedA.Load() {
		c.mu.Unlock()
		_ = uc.Close()
		return ErrClientClosed
	}
	c.uc, c.rc = uc, rc
	c.mu.Unlock()
	c.rstart, c.rend, c.pending = 0, 0, 0
	c.asm.Reset()
	c.applyDeadline()
	if c.handshook || !c.opts.persistent {
		return nil
	}
	c.handshook = true // once per Client: a git server declines for good
	if d, ok := ctx.Deadline(); ok && (c.deadline.IsZero() || d.Before(c.deadline)) {
		_ = uc.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = uc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := c.sendNow(helloRequest, false); err != nil {
		return err
	}
	reply, err := c.readReply()
	c.pending = 0
	if err != nil {
		c.closeConn()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &ClientError{"read", c.path, replyError(err)}
	}
	c.persistent = bytes.Equal(reply, helloReply)
	if !c.persistent {
		c.closeConn() // git answered "unhandled command" and closes
	}
	c.applyDeadline()
	return nil
}

func (c *Client) closeConn() {
	c.mu.Lock()
	if c.uc != nil {
		_ = c.uc.Close()
		c.uc, c.rc = nil, nil
	}
	c.mu.Unlock()
	c.pending = 0
}

// SetDeadline sets the deadline for Send, Recv and Call, reconnections
// included; the zero time means none. It may be called from any goroutine,
// also to cut a call in progress short.
func (c *Client) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	c.applyDeadlineLocked()
	return nil
}

func (c *Client) applyDeadline() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.applyDeadlineLocked()
}

func (c *Client) applyDeadlineLocked() {
	var ns int64
	if !c.deadline.IsZero() {
		ns = max(int64(time.Until(c.deadline))+c.now(), 1)
	}
	c.deadlineNS.Store(ns)
	if c.uc != nil {
		_ = c.uc.SetDeadline(c.deadline)
	}
}

// Call sends req and returns its reply. The reply aliases the Client's
// buffer and is valid until the next call of Recv, Call or Close; copy it
// to keep it.
func (c *Client) Call(req []byte) ([]byte, error) {
	if err := c.Send(req); err != nil {
		return nil, err
	}
	return c.Recv()
}

// Send sends req without waiting for its reply. To a git server, which
// answers one request per connection, a request sent while another is
// unanswered is kept (copied) and sent on a new connection after that reply.
func (c *Client) Send(req []byte) error {
	if c.closedA.Load() {
		return ErrClientClosed
	}
	if !c.persistent && c.uc != nil && c.pending > 0 {
		c.queued = append(c.queued, bytes.Clone(req))
		return nil
	}
	if !c.persistent && c.uc == nil && c.pending == 0 && len(c.queued) > 0 {
		c.queued = append(c.queued, bytes.Clone(req))
		return nil
	}
	return c.sendNow(req, true)
}

func (c *Client) sendNow(req []byte, retry bool) error {
	if c.uc == nil {
		if err := c.reconnect(); err != nil {
			return err
		}
	}
	c.wbuf = frame.AppendMessage(c.wbuf[:0], req)
	c.woff, c.werr = 0, nil
	if err := c.rc.Write(c.writeFn); err != nil && c.werr == nil {
		c.werr = err
	}
	if err := c.werr; err != nil {
		if retry && c.pending == 0 && c.woff == 0 && (errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) {
			// The server closed an idle connection (idle timeout, restart)
			// and read nothing of this request: reconnect once and resend.
			c.closeConn()
			return c.sendNow(req, false)
		}
		c.closeConn()
		return c.fail("send", err)
	}
	c.pending++
	if c.pending == 1 {
		c.sentAt = c.now()
	}
	return nil
}

func (c *Client) reconnect() error {
	ctx := context.Background()
	if !c.deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, c.deadline)
		defer cancel()
	}
	return c.connect(ctx)
}

// Recv returns the reply to the oldest request not yet answered. The reply
// aliases the Client's buffer and is valid until the next call of Recv,
// Call or Close. A connection that ends before the reply's terminator gives
// ErrIncompleteReply; replies to later pipelined requests on it are lost
// too, and each of their Recv calls reports it.
func (c *Client) Recv() ([]byte, error) {
	if c.closedA.Load() {
		return nil, ErrClientClosed
	}
	if c.pending == 0 {
		if len(c.queued) == 0 {
			return nil, errors.New("engine: Recv without a request")
		}
		next := c.queued[0]
		c.queued = c.queued[1:]
		if err := c.sendNow(next, true); err != nil {
			return nil, err
		}
	}
	if c.uc == nil {
		c.pending--
		return nil, &ClientError{"read", c.path, fmt.Errorf("%w: connection lost", ErrIncompleteReply)}
	}
	msg, err := c.readReply()
	if err != nil {
		c.pending--
		lost := c.pending
		c.closeConn()
		c.pending = lost // later Recv calls report the loss
		return nil, c.fail("read", err)
	}
	c.pending--
	if !c.persistent {
		c.closeConn() // git closes after every reply
	}
	return msg, nil
}

func (c *Client) readReply() ([]byte, error) {
	waiting.Add(1)
	c.planSpin()
	msg, err := c.readReplySpinning()
	c.endSpin()
	waiting.Add(-1)
	return msg, err
}

func (c *Client) readReplySpinning() ([]byte, error) {
	for {
		if c.rend > c.rstart {
			msg, n, done, err := c.asm.Next(c.rbuf[c.rstart:c.rend])
			if err != nil {
				return nil, err
			}
			c.rstart += n
			if done {
				c.learn()
				if c.rstart == c.rend {
					c.rstart, c.rend = 0, 0
				}
				return msg, nil
			}
			if n > 0 {
				continue
			}
		}
		if err := c.fill(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, c.asm.Truncated(c.rend - c.rstart)
			}
			return nil, err
		}
	}
}

// fill reads more bytes into the buffer, compacting or growing it first.
func (c *Client) fill() error {
	if c.rstart > 0 {
		c.rend = copy(c.rbuf, c.rbuf[c.rstart:c.rend])
		c.rstart = 0
	}
	if c.rend == len(c.rbuf) {
		if len(c.rbuf) >= frame.MinReadBuffer {
			return errors.New("engine: reply buffer full") // cannot happen: the assembler gathers
		}
		nb := make([]byte, min(2*len(c.rbuf), frame.MinReadBuffer))
		copy(nb, c.rbuf[:c.rend])
		c.rbuf = nb
	}
	c.rn, c.rerr = 0, nil
	if err := c.rc.Read(c.readFn); err != nil && c.rerr == nil {
		c.rerr = err
	}
	if c.rerr != nil {
		return c.rerr
	}
	if c.rn == 0 {
		return io.EOF
	}
	c.rend += c.rn
	return nil
}

// planSpin decides how long the next reply wait may spin. Reply times on a
// busy machine are often bimodal (the server was running, or it had to be
// woken), so the plan follows how often a spin catches the reply rather than
// the mean wait: it spins while at least a quarter of the replies come
// within the limit, for four times their usual wait (capped at the limit),
// and otherwise tries once in 16 waits, to notice when replies speed up.
func (c *Client) planSpin() {
	c.spinUntil = 0
	if c.opts.spin <= 0 || c.pending != 1 {
		return
	}
	if c.hitRate < spinMinHitRate {
		if c.probe++; c.probe%16 != 0 {
			return
		}
	}
	// Spinning clients share the CPUs with the servers they wait for: no
	// client spins while more clients of the process wait than half of
	// GOMAXPROCS (they keep the CPUs busy anyway), and at most that many
	// spin at once.
	limit := int32(max(1, runtime.GOMAXPROCS(0)/2))
	if waiting.Load() > limit {
		return
	}
	if spinners.Add(1) > limit {
		spinners.Add(-1)
		return
	}
	c.spinSlot = true
	budget := int64(c.opts.spin)
	if c.hitWait > 0 {
		budget = min(max(4*c.hitWait, int64(spinFloor)), budget)
	}
	c.spinUntil = c.now() + budget
}

// spinners counts the clients of the process that are spinning now,
// waiting those that wait for a reply.
var spinners, waiting atomic.Int32

// endSpin ends the spin of the current wait and gives back its slot.
func (c *Client) endSpin() {
	c.spinUntil = 0
	if c.spinSlot {
		c.spinSlot = false
		spinners.Add(-1)
	}
}

// learn folds the wait for this reply into the statistics planSpin uses.
func (c *Client) learn() {
	if c.pending != 1 || c.sentAt <= 0 {
		return
	}
	wait := c.now() - c.sentAt
	hit := int32(0)
	if wait <= int64(c.opts.spin) {
		hit = 1024
		if c.hitWait == 0 {
			c.hitWait = wait
		}
		c.hitWait += (wait - c.hitWait) / 8
	}
	c.hitRate += (hit - c.hitRate) / 8
}

// readOnce is the RawConn.Read callback: it reads what is there, spins
// while the plan allows, and otherwise lets the netpoller park the
// goroutine (return false).
func (c *Client) readOnce(fd uintptr) bool {
	for {
		n, err := sysRead(fd, c.rbuf[c.rend:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			if c.spinUntil == 0 || c.closedA.Load() {
				return false
			}
			now := c.now()
			if d := c.deadlineNS.Load(); d != 0 && now >= d {
				c.rerr = os.ErrDeadlineExceeded
				return true
			}
			if now >= c.spinUntil {
				c.endSpin() // parked once; do not spin again for this reply
				return false
			}
			continue
		case err != nil:
			c.rerr = err
			return true
		}
		c.rn = n
		return true
	}
}

// writeOnce is the RawConn.Write callback: it writes until done or the
// socket is full (then the netpoller waits for room).
func (c *Client) writeOnce(fd uintptr) bool {
	for c.woff < len(c.wbuf) {
		n, err := sysWrite(fd, c.wbuf[c.woff:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			c.werr = err
			return true
		}
		c.woff += n
	}
	return true
}

// fail builds the error of a failed step; after Close it is
// ErrClientClosed, whatever the socket said.
func (c *Client) fail(op string, err error) error {
	if c.closedA.Load() {
		return ErrClientClosed
	}
	return &ClientError{op, c.path, replyError(err)}
}

// Close closes the connection; unanswered requests are abandoned. It may be
// called from any goroutine: a call in progress returns ErrClientClosed.
// Close is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closedA.Swap(true) || c.uc == nil {
		return nil
	}
	// The owner goroutine may be using uc: close it, but leave the field;
	// the owner sees closedA and stops.
	return c.uc.Close()
}

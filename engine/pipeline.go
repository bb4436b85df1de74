package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/ring"
)

// Client is a connection to a server that keeps the connection between
// requests and pipelines them when the server is pktipc's, and falls back
// to one connection per request when the server is git's.
//
// One goroutine at a time, the Client's owner, may call its methods other
// than Close and SetDeadline (use one Client per goroutine); it may
// pipeline: Send several requests, then Recv their replies in the same
// order. Close and SetDeadline may be called from any goroutine: Close
// interrupts a call in progress, which returns ErrClientClosed.
//
// Replies are matched to requests by construction: the Client remembers,
// in order, every request sent and not yet answered, and the connection
// it went out on. A server answers a connection's requests in order, so
// Recv reads a reply only for the oldest request, and only from the
// connection that request went out on. When a connection ends, every
// request still waiting on it gets its error at once, so no reply that
// comes later, on any connection, can be taken for its answer; Recv
// reports those errors in turn.
type Client struct {
	path  string
	opts  clientOptions
	epoch time.Time

	// Shared with Close and SetDeadline. uc and rc change under mu (the
	// owner reads them without it: only the owner changes them); closed
	// and deadlineNS are read by the owner without mu, deadline only with
	// it. rlease says whether a reply returned in place
	// (WithRingRepliesInPlace) holds its record of rleased, the reply ring
	// it came from (which may belong to a connection dropped since):
	// leaseNone, leaseHeld, or leaseClosed once Close took it. The owner
	// sets rleased and raises it to leaseHeld, then checks closed; the
	// owner gives the record back at its next Recv, swapping leaseHeld for
	// leaseNone, and Close, which sets closed first, swaps leaseHeld for
	// leaseClosed and gives it back itself: only the one whose swap
	// succeeded touches rleased, and an owner that finds leaseClosed
	// leaves the rings alone.
	mu         sync.Mutex
	closed     atomic.Bool
	uc         *net.UnixConn
	rc         syscall.RawConn
	deadline   time.Time
	deadlineNS atomic.Int64 // monotonic ns of the deadline; 0 = none
	rlease     atomic.Int32
	rleased    *ring.Reader

	// The owner goroutine's. Invariant: every request sent and not yet
	// received has an entry in queue, in order; an entry written on a
	// connection carries that connection's gen; when a connection ends,
	// every entry still waiting on it gets its error (endConn); inflight
	// counts the open connection's entries without an error.
	gen        uint64 // numbers the connections; the open one's, or the last one's
	persistent bool   // the open connection accepted the handshake
	declined   bool   // the server declined the handshake (git's): connect without offering it
	inflight   int    // requests written on the open connection and not yet answered
	held       int    // entries held for a git server, not yet written
	dropping   int    // entries of posted messages whose replies are to be dropped (post.go)
	dropBytes  int    // bytes of those messages, since none was outstanding
	unsent     int    // the newest entries, queued in wbuf and not yet written
	queue      requestQueue
	spin       spinPlan

	wbuf []byte // the requests being written; queued ones (Queue) collect here
	woff int
	werr error
	gw   gather // a large request's pieces (SendUncopied)

	rbuf   []byte
	rstart int
	rend   int
	rplan  [][]byte // the assembler's pieces that the read under way fills first (fillPlanned)
	rtail  []byte   // ... and the buffer after them
	iov    []iovec  // readv's scratch
	rerr   error
	rn     int
	asm    *frame.Assembler
	kept   replyBuffers

	// The open connection's rings (ringclient.go), nil on a socket
	// connection; set and cleared by the owner under mu (Close closes
	// them), read by the owner without it.
	rout          *ring.Writer
	rin           *ring.Reader
	rchunk        int
	rcounted      bool   // the rings are counted in ringClients (copy.go); under mu
	rtaken        []byte // the reply ring's record a spin took (waitRingReply), while rhasTaken, for nextReply
	rtakenMore    bool
	rhasTaken     bool
	rstage        bool   // writeRing stages a request's last record (Queue)
	rmark         bool   // writeRing marks the records: a one-way message (Post)
	rbatch        []byte // posted messages laid out as ring records, not yet in the ring (post.go)
	rposted       bool   // posted messages went into the open connection's request ring and no reply since confirms them (posted)
	rpostSeq      uint64 // counts posted calls: a reply confirms the posts before its request only if none came after
	rpostStaged   bool   // posted messages are staged in the request ring, not yet published
	rpostEnd      uint64 // the request ring's position past the last posted message published
	rlost         bool   // posted messages may be lost (a ring's posts at risk when its connection ended, or a posted request's entry failed): the request whose call found it says so (withLostPosts), else the next one fails (lostPosts)
	roneway       bool   // the server takes one-way messages on the open connection's rings
	rstaged       int    // bytes of requests staged and not yet published
	halfProcs     int32  // the default spinning budget, read at the ring handshake
	watchOK       bool   // ring waits may use clientRings (set at the handshake)
	slices        ringSlices
	rbell         [64]byte
	rwait         ringWait // the reply ring's place in clientRings
	rgather       []byte
	ringsDeclined bool // the server declined rings: offer the persistent handshake

	readFn   func(fd uintptr) bool
	writeFn  func(fd uintptr) bool
	gatherFn func(fd uintptr) bool
}

const (
	// clientBufferMin is the first size of a client's read buffer; it
	// grows to frame.MinReadBuffer, beyond which the assembler gathers
	// large replies itself.
	clientBufferMin = 16 << 10

	// clientKeep bounds the reply buffer a Client keeps between replies.
	clientKeep = 16 << 20

	// clientBatchBytes is how many bytes of queued requests make Queue
	// write them without waiting for Flush: enough for hundreds of small
	// requests per system call, little enough to bound the copy.
	clientBatchBytes = 64 << 10
)

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
		path:  path,
		opts:  o,
		epoch: time.Now(),
		rbuf:  make([]byte, clientBufferMin),
		asm:   frame.NewAssembler(frame.SimpleIPC, o.maxReply),
		spin:  newSpinPlan(o.spin),
	}
	c.asm.SetBufferSource(&c.kept)
	c.readFn = c.readOnce
	c.writeFn = c.writeOnce
	c.gatherFn = c.writeGathered
	if err := c.connect(ctx); err != nil {
		return nil, c.fail("dial", err)
	}
	return c, nil
}

// Persistent reports whether the Client holds a connection that the server
// keeps between requests (it accepted the handshake). It is false while no
// connection is open, and with git's server, which closes after every reply.
// Only the owner goroutine may call it.
func (c *Client) Persistent() bool { return c.uc != nil && c.persistent }

// Rings reports whether the open connection carries requests and replies
// through shared-memory rings (WithRings). Only the owner goroutine may
// call it.
func (c *Client) Rings() bool { return c.uc != nil && c.rout != nil }

func (c *Client) now() int64 { return int64(time.Since(c.epoch)) }

// SetDeadline sets the deadline for Send, Recv and Call, reconnections
// included; the zero time means none. It may be called from any goroutine,
// also to cut a call in progress short.
func (c *Client) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	c.applyDeadlineLocked()
	c.rwait.cut.Store(true) // a wait in clientRings looks at the deadline again
	if c.rin != nil {
		clientRings.poke() // which may be napping on it
	}
	return nil
}

// currentDeadline returns the deadline SetDeadline set last. The owner
// reads it under mu: SetDeadline may run on another goroutine meanwhile.
func (c *Client) currentDeadline() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deadline
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
// buffer (or the reply ring: WithRingRepliesInPlace) and is valid until
// the Client's next call; copy it to keep it.
// The owner goroutine calls it.
func (c *Client) Call(req []byte) ([]byte, error) {
	if err := c.Send(req); err != nil {
		return nil, err
	}
	return c.Recv()
}

// Send sends req without waiting for its reply. To a git server, which
// answers one request per connection, a request sent while another is
// unanswered is kept (copied) and sent on a new connection when Recv comes
// to it. Requests queued before it (Queue) go out with it, in one write
// where the socket takes them. An error means req was not sent (it wraps
// ErrNotProcessed, or is ErrClientClosed) and has no reply to Recv.
// The owner goroutine calls it.
func (c *Client) Send(req []byte) error {
	if c.closed.Load() {
		return ErrClientClosed
	}
	if err := c.lostPosts(); err != nil {
		return err
	}
	return c.withLostPosts(c.send(req))
}

// send is Send, for a request (or a posted message sent as one) that may
// go out now.
func (c *Client) send(req []byte) error {
	if c.unsent > 0 {
		c.stage(req)
		if err := c.flush(); err != nil {
			if last := c.queue.at(c.queue.n - 1); last.err != nil {
				// req is the last written: it failed only if it did not
				// go out whole, so it has no reply.
				err = last.err
				c.queue.popBack()
				return err
			}
		}
		return nil
	}
	if c.held > 0 || (c.uc != nil && !c.persistent && c.inflight > 0) {
		c.queue.push(pending{held: bytes.Clone(req)})
		c.held++
		return nil
	}
	if err := c.transmit(req); err != nil {
		return err
	}
	c.queue.push(pending{gen: c.gen, posts: c.rpostSeq})
	return nil
}

// SendUncopied is Send without Send's copy of a large req (32 KiB or
// more): its packets go to the socket from where req lies, with writev and
// their headers beside them. req must not change until SendUncopied
// returns, and is free afterwards, as with Send. Unlike Send's, its
// argument escapes to the heap: pass memory that lives there anyway, and
// use Send for small requests and buffers on the stack. Where the request
// cannot go out at once on an open persistent socket connection (queued
// requests before it, a git server, rings, no connection yet), and for a
// small req, it is Send.
// The owner goroutine calls it.
func (c *Client) SendUncopied(req []byte) error {
	if !writevSupported || len(req) < gatherMin || c.closed.Load() || c.unsent > 0 || c.held > 0 ||
		c.uc == nil || !c.persistent || c.rout != nil || c.rlost {
		return c.Send(req)
	}
	c.gw.set(nil, req, true)
	c.werr = nil
	if err := c.rc.Write(c.gatherFn); err != nil && c.werr == nil {
		c.werr = err
	}
	c.gw.release()
	if err := c.werr; err != nil {
		// As in transmit: the server acts only on whole requests, so
		// nothing of req was processed.
		retry := c.inflight == 0 && peerGone(err)
		c.endConn(err)
		if retry {
			return c.Send(req) // the server closed the idle connection: a new one
		}
		return c.withLostPosts(c.fail("send", sendFailure(err)))
	}
	c.inflight++
	c.spin.sent(c.now(), c.inflight)
	c.queue.push(pending{gen: c.gen})
	return nil
}

// Queue adds req to the requests to send without a system call: they go
// out together, in one write where the socket takes them, at the next
// Flush, Send or Recv, or once they fill a batch (64 KiB). Nothing waits for
// more requests to come: a caller that queues should flush when it has
// nothing more to send. On shared-memory rings Queue writes the request
// into the ring but leaves it unpublished, and the batch (up to 64 KiB, or
// what a record of the ring holds) reaches the server with one store and
// at most one wake-up. To a git server, which takes one request per
// connection, Queue is Send.
//
// An error means req was not queued (it wraps ErrNotProcessed, or is
// ErrClientClosed) and has no reply to Recv. A queued request that then
// fails to go out whole gets its error from Recv, in its turn, as does one
// whose connection ends before its reply.
// The owner goroutine calls it.
func (c *Client) Queue(req []byte) error {
	if c.closed.Load() {
		return ErrClientClosed
	}
	if err := c.lostPosts(); err != nil {
		return err
	}
	return c.withLostPosts(c.enqueue(req))
}

// enqueue is Queue, for a request (or a posted message sent as one,
// postRequest) that may go out now.
func (c *Client) enqueue(req []byte) error {
	if c.uc == nil && c.held == 0 {
		if err := c.reconnect(); err != nil {
			return c.fail("dial", fmt.Errorf("%w: %w", ErrNotProcessed, err))
		}
	}
	if c.rout != nil && c.held == 0 && c.unsent == 0 && len(req) <= c.rout.MaxRecord() {
		c.rstage = true
		err := c.send(req)
		c.rstage = false
		return err
	}
	if c.held > 0 || !c.persistent || c.rout != nil {
		return c.send(req)
	}
	c.stage(req)
	if len(c.wbuf) >= clientBatchBytes {
		_ = c.flush() // its failures are the requests' own, for Recv
	}
	return nil
}

// Flush writes the requests queued by Queue, in one write where the socket
// takes them all. An error means some of them did not reach the server
// whole; each queued request still has its reply, or its error, for Recv.
// The owner goroutine calls it.
func (c *Client) Flush() error {
	if c.closed.Load() {
		return ErrClientClosed
	}
	if err := c.flushPosts(); err != nil {
		return err
	}
	if c.unsent > 0 {
		if err := c.flush(); err != nil {
			return err
		}
	}
	if !c.persistent && c.dropping > 0 {
		return c.dropReplies() // a git server's: see Post
	}
	return nil
}

// SendBatch queues every request of reqs and flushes them, in one write
// where the socket takes them. n counts the requests that have a reply,
// or an error, for Recv: all of them unless Queue refused one, whose error
// err is then. A non-nil err with n == len(reqs) is Flush's.
// The owner goroutine calls it.
func (c *Client) SendBatch(reqs [][]byte) (n int, err error) {
	for i, req := range reqs {
		if err := c.Queue(req); err != nil {
			return i, err
		}
	}
	return len(reqs), c.Flush()
}

// stage appends req to the write buffer and queues its entry. The open
// connection is a persistent socket one.
func (c *Client) stage(req []byte) {
	if c.unsent == 0 {
		c.wbuf = c.wbuf[:0]
	}
	c.wbuf = frame.AppendMessage(c.wbuf, req)
	c.queue.push(pending{gen: c.gen, end: len(c.wbuf)})
	c.unsent++
}

// flush writes the staged requests. A request written whole is in flight;
// the others get their error in the queue. As transmit does, it tries once
// more on a new connection when the server had closed the idle one and
// nothing reached it.
func (c *Client) flush() error {
	for retried := false; ; retried = true {
		c.woff, c.werr = 0, nil
		if err := c.rc.Write(c.writeFn); err != nil && c.werr == nil {
			c.werr = err
		}
		first := c.queue.n - c.unsent
		if c.werr == nil {
			c.inflight += c.unsent
			c.spin.sent(c.now(), c.inflight)
			c.unsent = 0
			c.trimWriteBuffer()
			return nil
		}
		err := c.werr
		whole := 0 // staged requests that reached the socket whole
		for whole < c.unsent && c.queue.at(first+whole).end <= c.woff {
			whole++
		}
		settled := !retried && whole == 0 && peerGone(err) && c.settlePosted()
		first = c.queue.n - c.unsent // settlePosted may have taken posts' entries, whatever it reported
		if settled {
			c.endConn(err)
			staged := c.wbuf
			c.wbuf = nil // the handshake writes from wbuf
			rerr := c.reconnect()
			c.wbuf = staged
			if rerr == nil && c.persistent && c.rout == nil {
				for i := range c.unsent {
					c.queue.at(first + i).gen = c.gen
				}
				continue
			}
			if rerr == nil {
				rerr = errors.New("the server no longer takes pipelined requests")
			}
			return c.failStaged(first, c.fail("dial", fmt.Errorf("%w: %w", ErrNotProcessed, rerr)))
		}
		c.inflight += whole
		e := c.fail("send", sendFailure(err))
		c.failStaged(first+whole, e)
		c.endConn(err) // the ones written whole may have been processed
		return e
	}
}

// failStaged gives err to the staged entries from the from-th oldest on
// and ends staging.
func (c *Client) failStaged(from int, err error) error {
	for i := from; i < c.queue.n; i++ {
		p := c.queue.at(i)
		p.err = err
		if p.drop {
			c.rlost = true // a posted message that never went out whole
		}
	}
	c.unsent = 0
	return err
}

// transmit writes req on the open connection, opening one if there is
// none.
func (c *Client) transmit(req []byte) error {
	if len(c.rbatch) > 0 {
		// Posted messages go first, with flushPosts' care for a batch
		// that a server gone idle never saw.
		if err := c.flushPosts(); err != nil {
			return err
		}
	}
	for retried := false; ; retried = true {
		if c.uc == nil {
			if err := c.reconnect(); err != nil {
				return c.fail("dial", fmt.Errorf("%w: %w", ErrNotProcessed, err))
			}
		}
		err := c.write(req)
		if err == nil {
			c.inflight++
			if c.rout == nil { // the socket's spin plan; rings spin their own way
				c.spin.sent(c.now(), c.inflight)
			}
			return nil
		}
		// The server acts only on whole requests: nothing of req was
		// processed, whatever part of it was written.
		if !retried && peerGone(err) && c.settlePosted() && !c.postsAtRisk() {
			// The server closed the idle connection (idle timeout,
			// restart), having answered everything posted on it: once
			// more, on a new one.
			c.endConn(err)
			continue
		}
		// Not on a new connection where the server may not have taken
		// the messages posted on this one: req's reply there would say
		// they were handled (the request's caller reports them: rlost).
		c.endConn(err)
		return c.fail("send", sendFailure(err))
	}
}

// Recv returns the reply to the oldest request not yet answered. The reply
// aliases the Client's buffer (or the reply ring: WithRingRepliesInPlace)
// and is valid until the Client's next call (any call may read into the
// buffer: Post and Flush read the replies of posted messages, a call that
// opens a new connection its handshake's reply). A request whose
// connection ended before its reply gives ErrIncompleteReply (it may have
// been processed), and so does every later request that was in flight on
// that connection, each in its own call. With no request outstanding it
// returns ErrNoRequest.
// The owner goroutine calls it.
func (c *Client) Recv() ([]byte, error) {
	if c.closed.Load() || !c.giveBackReply() {
		return nil, ErrClientClosed
	}
	c.sendQueued()
	if c.queue.n == c.dropping {
		return nil, ErrNoRequest
	}
	if err := c.dropReplies(); err != nil {
		return nil, err
	}
	msg, err := c.recvFront()
	if err != nil || c.persistent {
		return msg, err
	}
	if p := c.queue.front(); p != nil && p.drop && p.held != nil {
		// Messages posted behind this request to a git server, held for
		// their turn, which has come: they go now (Flush could not send
		// them before this reply), and no later call need come for them.
		// This reply is kept aside while their replies are read.
		msg = bytes.Clone(msg)
		if err := c.dropReplies(); err != nil {
			return nil, err
		}
	}
	return msg, nil
}

// sendQueued sends the requests queued and not yet sent, before a wait
// for their replies: written to the socket, or published in the request
// ring with the posted messages before them (flushPosts, which sends a
// batch again on a new connection where the server closed the idle one).
// Its failures are the requests' own: they get their errors in turn.
func (c *Client) sendQueued() {
	if c.unsent > 0 {
		_ = c.flush()
	}
	_ = c.flushPosts()
}

// recvFront takes the entry at the head of the queue and returns its
// reply, or its error.
func (c *Client) recvFront() ([]byte, error) {
	p := c.queue.front()
	if p.err != nil {
		err := p.err
		c.pop()
		return nil, err
	}
	if p.held != nil {
		// Its turn on a git server. Nothing is in flight (no request is
		// written while one is held), so the request goes out on a fresh
		// connection of its own, unless messages posted before it may be
		// lost: its reply would vouch for them.
		req := p.held
		p.held = nil
		c.held--
		if !p.drop && c.rlost {
			c.pop()
			return nil, c.lostPosts()
		}
		if err := c.transmit(req); err != nil {
			if p.drop {
				c.rlost = true // never sent
			}
			c.pop()
			return nil, err
		}
		p.gen = c.gen
	}
	if c.uc == nil || p.gen != c.gen {
		// Unreachable while endConn fails every request of a connection
		// it ends; never read another request's reply for it.
		c.pop()
		return nil, c.fail("read", fmt.Errorf("%w: its connection is gone", ErrIncompleteReply))
	}
	msg, err := c.readReply()
	drop, posts := p.drop, p.posts
	c.pop()
	if err != nil {
		c.inflight--
		e := c.fail("read", readFailure(err))
		c.endConn(err)
		if drop {
			c.rlost = true // a posted message whose reply never came
		}
		return nil, e
	}
	c.inflight--
	if !drop && posts == c.rpostSeq {
		// The server serves a connection's ring in order: this reply
		// says that every message posted before its request was handled.
		c.rposted = false
	}
	if !c.persistent {
		c.dropConn() // git closes after every reply
	}
	return msg, nil
}

// fail builds the error of a failed step; after Close it is
// ErrClientClosed, whatever the socket said.
func (c *Client) fail(op string, err error) error {
	if c.closed.Load() || errors.Is(err, ErrClientClosed) {
		return ErrClientClosed
	}
	return &ClientError{op, c.path, err}
}

// Close closes the connection; unanswered requests are abandoned. It may be
// called from any goroutine: a call in progress returns ErrClientClosed.
// Close is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Swap(true) {
		return nil
	}
	c.interruptRingsLocked()
	if c.rlease.CompareAndSwap(leaseHeld, leaseClosed) {
		// Unmaps its ring, closed by now: also one whose connection is
		// gone, with none open (uc nil).
		c.rleased.Release()
	}
	if c.uc == nil {
		return nil
	}
	// The owner goroutine may be using uc: close it, but leave the field;
	// the owner sees closed and stops.
	return c.uc.Close()
}

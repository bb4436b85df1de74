package engine

import (
	"encoding/binary"
	"fmt"

	"github.com/pktipc/pktipc/ring"
)

// postWindow and postWindowBytes bound the one-way messages a Client has
// sent as requests (on a socket connection, or on rings without one-way
// messages) whose replies it has not yet read and dropped: at either
// bound, Post reads those replies, so that they do not pile up while the
// caller only posts and the server stop for want of room to answer. On
// rings the byte bound is a quarter of the reply ring's record.
const (
	postWindow      = 256
	postWindowBytes = 256 << 10
)

// Post sends msg as a one-way message: the server runs its handler on it
// as on any request (ReplyWriter.OneWay tells the handler), and there is
// no reply to Recv. Like Queue, Post holds msg for a batch: posted
// messages and queued requests go out together at the next Flush, Send,
// Call or Recv, or once they fill a batch. A caller that posts should
// Flush when it has nothing more to send.
//
// On shared-memory rings (WithRings) a one-way message is a marked record
// of the request ring, and nothing comes back: a stream of them costs each
// side a few stores of shared memory per message, and a system call per
// batch at most. On a socket connection it travels as a request whose
// reply the Client reads and drops (a handler's OneWay is false there);
// to a git server, which answers one request per connection, Post and
// Flush wait for those replies, and a message posted behind a request
// that waits for its reply goes when Recv returns that reply.
//
// Messages and requests of one Client reach the server in the order sent
// and their handlers finish in that order, so the reply to a request sent
// after a message says that the message was handled. A nil error means
// msg went into the Client's batch or the connection, not that it was
// handled: like any one-way message, one the server has not taken when
// the connection ends (the server stops, a deadline closes it) is lost
// with it. The one exception is a batch on rings that none of the
// connection saw (a server that closed the idle connection): the next
// Post, Flush or request sends it again on a new connection. A request
// that finds the connection gone before the server took every message
// posted on it (on a socket: before their replies were read) is not sent
// again on a new one, where its reply would vouch for them: it fails with
// ErrNotProcessed, as does the first request after a Post, Flush or Recv
// that found it so. An error means msg
// was not sent (it wraps ErrNotProcessed, or is ErrClientClosed), and
// with it the messages of its batch.
//
// On a socket the replies of posted messages are read (and dropped) when
// a request behind them is received, or once 256 of them or 256 KiB of
// messages are outstanding; but not past the reply of a request sent
// before them: a caller that posts many messages while such a reply waits
// unread should Recv it, as with any pipeline, or the server stops for
// want of a reader.
//
// Only the owner goroutine may call it, like Send. msg may be reused as
// soon as Post returns.
func (c *Client) Post(msg []byte) error {
	if c.closed.Load() {
		return ErrClientClosed
	}
	if c.uc == nil && c.held == 0 {
		if err := c.reconnect(); err != nil {
			return c.fail("dial", fmt.Errorf("%w: %w", ErrNotProcessed, err))
		}
	}
	if c.rout == nil || c.held > 0 || !c.roneway {
		return c.postRequest(msg)
	}
	return c.postRing(msg)
}

// postRing lays msg out as a marked record in the Client's batch (rbatch),
// which goes into the request ring when it fills (min(64 KiB, a record)),
// at Flush, or before the next request: copied there as a whole, under
// one hold on the ring's mapping instead of two atomic updates per
// message. A message too large for the batch goes into the ring at once,
// in records, after the batch.
func (c *Client) postRing(msg []byte) error {
	limit := c.ringBatch()
	size := ring.RecordSize(len(msg))
	if size > limit {
		if len(c.rbatch) > 0 {
			// The batch first, with flushPosts' care for a server gone
			// idle: postLarge sends nothing again that went before it.
			if err := c.flushPosts(); err != nil {
				return err
			}
			if c.rout == nil || !c.roneway {
				return c.Post(msg)
			}
		}
		return c.postLarge(msg)
	}
	if len(c.rbatch)+size > limit {
		if err := c.flushPosts(); err != nil {
			return err
		}
		if c.rout == nil || !c.roneway || c.ringBatch() != limit {
			// flushPosts moved to a new connection, which takes no
			// one-way messages, or lays them out for other rings.
			return c.Post(msg)
		}
	}
	c.rbatch = ring.AppendRecord(c.rbatch, msg, false, true)
	if len(c.rbatch)+c.rstaged >= limit {
		return c.flushPosts()
	}
	return nil
}

// postLarge writes msg into the request ring as a marked message of one or
// more records and publishes it; the batch is empty (postRing). As
// transmit does, it tries once more on a new connection when the server
// had closed the idle one and nothing of the Client's was lost with it.
func (c *Client) postLarge(msg []byte) error {
	for retried := false; ; retried = true {
		staged := c.rstaged + len(c.rbatch) // writeRing would stage a batch first
		c.rmark = true
		err := c.writeRing(msg)
		c.rmark = false
		if err == nil {
			c.posted(false)
			return nil
		}
		// With nothing staged, writeRing sent no batch: rposted is as it was.
		retry := !retried && c.inflight == 0 && staged == 0 && !c.postsAtRisk() && peerGone(err)
		c.endConn(err)
		if !retry {
			return c.fail("send", sendFailure(err))
		}
		if err := c.reconnect(); err != nil {
			return c.fail("dial", fmt.Errorf("%w: %w", ErrNotProcessed, err))
		}
		if c.rout == nil || !c.roneway {
			return c.postRequest(msg) // the server no longer grants rings, or one-way messages
		}
	}
}

// flushPosts publishes what the Client staged in the request ring, with
// the posted messages of its batch. When the ring refuses a batch that
// none of the connection's ring holds and nothing was staged before it (a
// server that closed the idle connection saw none of it), the batch goes
// once more, on a new connection, laid out again for its rings (their
// records may be smaller) or as requests where it has none; not after
// earlier messages that may not have been handled (postsAtRisk), which
// the new connection's replies would seem to vouch for. It runs only at
// the top of Post, Flush and transmit, where nothing else of the Client is
// being written: a batch sent again comes before anything sent after it.
func (c *Client) flushPosts() error {
	if c.rout == nil {
		return nil
	}
	staged := c.rstaged
	err := c.publishRing()
	if err == nil {
		return nil
	}
	// Before endConn forgets the rings. A batch that sendBatch staged in
	// part is gone from rbatch and at risk (rpostStaged): no retry.
	retry := staged == 0 && !c.postsAtRisk() && len(c.rbatch) > 0 && c.inflight == 0 && peerGone(err)
	if !retry {
		c.endConn(err) // dropConn notes the batch, or its staged part, as lost
		return c.fail("send", sendFailure(err))
	}
	batch := c.rbatch
	c.rbatch = nil // out of dropConn's reach: it goes again
	c.endConn(err)
	if err := c.reconnect(); err != nil {
		c.rlost = true // the batch goes with the error
		return c.fail("dial", fmt.Errorf("%w: %w", ErrNotProcessed, err))
	}
	for len(batch) > 0 {
		n := int(binary.LittleEndian.Uint32(batch))
		if err := c.postAgain(batch[ring.RecordHeader : ring.RecordHeader+n]); err != nil {
			c.rlost = true // this one and the rest never went out
			return err
		}
		batch = batch[ring.RecordSize(n):]
	}
	if err := c.publishRing(); err != nil {
		c.endConn(err) // dropConn notes the posts not taken as lost
		return c.fail("send", sendFailure(err))
	}
	if c.unsent > 0 {
		return c.flush()
	}
	return nil
}

// posted records that posted messages went into the open connection's
// request ring, staged (published later: postsPublished) or published:
// none is confirmed handled until the reply to a request sent after them
// is read (recvFront), or the server gives back the records up to the
// last of them (rpostEnd).
func (c *Client) posted(staged bool) {
	c.rposted = true
	c.rpostSeq++
	if staged {
		c.rpostStaged = true
	} else {
		c.rpostEnd = c.rout.Published()
	}
}

// postsPublished notes, where the request ring has just published what
// was staged, where the staged posts end.
func (c *Client) postsPublished() {
	if c.rpostStaged {
		c.rpostEnd = c.rout.Published()
		c.rpostStaged = false
	}
}

// postsAtRisk reports whether messages posted on the open connection and
// not confirmed by a reply (rposted) may not have been handled: some are
// staged and not yet published (rpostStaged), or the server has not given
// back every record up to the last of them (rpostEnd), which it does as
// each handler returns; a request behind them may still be running.
// Before the connection is dropped.
func (c *Client) postsAtRisk() bool {
	return c.rposted && (c.rout == nil || c.rpostStaged || !c.rout.TakenTo(c.rpostEnd))
}

// lostPosts reports, once, that posted messages may be lost (rlost) when
// the call that found it was not a request (Post, Flush, Recv): the next
// request fails with ErrNotProcessed instead of going on a new connection
// where its reply would vouch for them. The request after it goes out.
func (c *Client) lostPosts() error {
	if !c.rlost {
		return nil
	}
	c.rlost = false
	return c.fail("send", fmt.Errorf("%w: a connection ended before the server took messages posted on it, which may be lost", ErrNotProcessed))
}

// withLostPosts is err, a request's failure (nil: none), saying that
// messages posted before it may be lost when its failure found that out
// (rlost), which the request's error then reports in place of the next
// request's. The owner goroutine calls it.
func (c *Client) withLostPosts(err error) error {
	if err == nil || !c.rlost {
		return err
	}
	c.rlost = false
	return fmt.Errorf("%w (and messages posted before it may be lost)", err)
}

// postAgain posts msg on the connection flushPosts opened, without another
// retry: into its batch when it takes one-way messages, else as a request
// whose reply is dropped.
func (c *Client) postAgain(msg []byte) error {
	if c.rout == nil || !c.roneway {
		return c.postRequest(msg)
	}
	size := ring.RecordSize(len(msg))
	if limit := c.ringBatch(); size > limit || len(c.rbatch)+size > limit {
		c.rmark = true
		err := c.writeRing(msg) // after the batch
		c.rmark = false
		if err != nil {
			c.endConn(err)
			return c.fail("send", sendFailure(err))
		}
		c.posted(false)
		return nil
	}
	c.rbatch = ring.AppendRecord(c.rbatch, msg, false, true)
	return nil
}

// postRequest sends msg as a request whose reply is dropped: the Client
// reads it before the reply of any later request (dropReplies), and Post
// reads them once postWindow are unread, or at once from a git server.
func (c *Client) postRequest(msg []byte) error {
	if err := c.enqueue(msg); err != nil {
		return err
	}
	p := c.queue.at(c.queue.n - 1)
	p.drop = true
	if p.err != nil {
		c.rlost = true // its write already failed (a full batch is written at once)
	}
	c.dropping++
	c.dropBytes += len(msg)
	limit := postWindowBytes
	if c.rin != nil {
		limit = c.rin.MaxRecord() / 4
	}
	if !c.persistent || c.dropping >= postWindow || c.dropBytes >= limit {
		c.sendQueued() // staged in the request ring too, or their replies never come
		return c.dropReplies()
	}
	return nil
}

// dropReplies reads and drops the replies of the posted messages at the
// head of the queue, and their errors: a one-way message's failure is not
// reported. Only Close's error is returned. Like Recv, it ends the
// validity of the reply Recv returned last: the reply ring's record held
// for it is given back before the next is taken.
func (c *Client) dropReplies() error {
	for p := c.queue.front(); p != nil && p.drop; p = c.queue.front() {
		if !c.giveBackReply() {
			return ErrClientClosed
		}
		if _, err := c.recvFront(); err == ErrClientClosed {
			return err
		}
		if !c.giveBackReply() {
			return ErrClientClosed
		}
	}
	if c.dropping == 0 {
		c.dropBytes = 0
	}
	return nil
}

// settlePosted reads, from a connection whose peer is gone, the replies
// of the posted messages in flight on it, which the server may have
// written before it closed the connection (for idleness, say): once every
// one is read, nothing was lost with the connection and a request may go
// again on a new one. It reports whether nothing is in flight any more;
// false as well when something other than a posted message is (its reply
// would be another caller's) or a reply cannot be read (recvFront ends the
// connection and notes the loss: rlost).
func (c *Client) settlePosted() bool {
	if c.inflight == 0 {
		return true // and a reply held in place stays valid (Recv)
	}
	for i := range c.inflight {
		if p := c.queue.at(i); !p.drop || p.held != nil {
			return false
		}
	}
	for c.inflight > 0 {
		if !c.giveBackReply() {
			return false
		}
		if _, err := c.recvFront(); err != nil {
			return false
		}
	}
	if !c.giveBackReply() {
		return false
	}
	if c.dropping == 0 {
		c.dropBytes = 0
	}
	return c.uc != nil
}

// pop removes the entry at the head of the queue.
func (c *Client) pop() {
	if c.queue.front().drop {
		c.dropping--
	}
	c.queue.pop()
}

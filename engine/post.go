package engine

import (
	"fmt"

	"github.com/pktipc/pktipc/ring"
)

// postWindow bounds the one-way messages a Client has sent as requests
// (on a socket connection) whose replies it has not yet read and dropped:
// at the bound, Post reads those replies, so that they do not pile up in
// the socket while the caller only posts.
const postWindow = 256

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
// Flush wait for those replies.
//
// Messages and requests of one Client reach the server in the order sent
// and their handlers finish in that order, so the reply to a request sent
// after a message says that the message was handled. A nil error means
// msg went into the connection, not that it was handled: like any one-way
// message, one the server has not taken when the connection ends (the
// server stops, a deadline closes the connection) is lost with it,
// unreported. An error means msg was not sent (it wraps ErrNotProcessed,
// or is ErrClientClosed); a connection found gone with earlier messages
// still unpublished in its ring gives an error too, as those are lost.
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
	if c.rout == nil || c.held > 0 {
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
	limit := min(clientBatchBytes, c.rout.MaxRecord())
	size := ring.RecordSize(len(msg))
	if size > limit {
		return c.postLarge(msg)
	}
	if len(c.rbatch)+size > limit {
		if err := c.flushPosts(); err != nil {
			return err
		}
	}
	c.rbatch = ring.AppendRecord(c.rbatch, msg, false, true)
	if len(c.rbatch)+c.rstaged >= limit {
		return c.flushPosts()
	}
	return nil
}

// postLarge writes msg into the request ring as a marked message of one or
// more records, after the batch, and publishes it. As transmit does, it
// tries once more on a new connection when the server had closed the idle
// one and nothing of the Client's was lost with it.
func (c *Client) postLarge(msg []byte) error {
	for retried := false; ; retried = true {
		staged := c.rstaged
		c.rmark = true
		err := c.writeRing(msg)
		c.rmark = false
		if err == nil {
			return nil
		}
		retry := !retried && c.inflight == 0 && staged == 0 && peerGone(err)
		c.endConn(err)
		if !retry {
			return c.fail("send", sendFailure(err))
		}
		if err := c.reconnect(); err != nil {
			return c.fail("dial", fmt.Errorf("%w: %w", ErrNotProcessed, err))
		}
		if c.rout == nil {
			return c.postRequest(msg) // the server no longer grants rings
		}
	}
}

// flushPosts publishes what the Client staged in the request ring, with
// the posted messages of its batch. When the ring refuses a batch that
// none of the connection's ring holds (sendBatch), it goes once more on a
// new connection. A batch left for a connection without rings is lost,
// as posts are with their connection.
func (c *Client) flushPosts() error {
	for retried := false; ; retried = true {
		if c.uc == nil && len(c.rbatch) > 0 {
			if err := c.reconnect(); err != nil {
				c.rbatch = c.rbatch[:0]
				return c.fail("dial", fmt.Errorf("%w: %w", ErrNotProcessed, err))
			}
		}
		if c.rout == nil {
			c.rbatch = c.rbatch[:0]
			return nil
		}
		err := c.publishRing()
		if err == nil {
			return nil
		}
		c.endConn(err)
		if retried || len(c.rbatch) == 0 {
			return c.fail("send", sendFailure(err))
		}
	}
}

// postRequest sends msg as a request whose reply is dropped: the Client
// reads it before the reply of any later request (dropReplies), and Post
// reads them once postWindow are unread, or at once from a git server.
func (c *Client) postRequest(msg []byte) error {
	if err := c.Queue(msg); err != nil {
		return err
	}
	c.queue.at(c.queue.n - 1).drop = true
	c.dropping++
	if !c.persistent || c.dropping >= postWindow {
		if c.unsent > 0 {
			_ = c.flush() // its failures are the requests' own
		}
		return c.dropReplies()
	}
	return nil
}

// dropReplies reads and drops the replies of the posted messages at the
// head of the queue, and their errors: a one-way message's failure is not
// reported. Only Close's error is returned.
func (c *Client) dropReplies() error {
	for p := c.queue.front(); p != nil && p.drop; p = c.queue.front() {
		if _, err := c.recvFront(); err == ErrClientClosed {
			return err
		}
		if !c.giveBackReply() {
			return ErrClientClosed
		}
	}
	return nil
}

// pop removes the entry at the head of the queue.
func (c *Client) pop() {
	if c.queue.front().drop {
		c.dropping--
	}
	c.queue.pop()
}

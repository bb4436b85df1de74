package engine

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/pktipc/pktipc/uds"
)

// connect opens a connection and offers the handshake on it, unless the
// server declined it before: a server that restarts may come back as
// another kind, so the offer is renewed after a connection fails.
func (c *Client) connect(ctx context.Context) error {
	for {
		uc, err := uds.Dial(ctx, c.path, c.opts.dial...)
		if err != nil {
			return err
		}
		if c.opts.sendBuffer > 0 {
			_ = uc.SetWriteBuffer(c.opts.sendBuffer) // a hint: the kernel caps it
		}
		rc, err := uc.SyscallConn()
		if err != nil {
			_ = uc.Close()
			return err
		}
		c.mu.Lock()
		if c.closed.Load() {
			c.mu.Unlock()
			_ = uc.Close()
			return ErrClientClosed
		}
		c.uc, c.rc = uc, rc
		c.gen++
		c.applyDeadlineLocked()
		c.mu.Unlock()
		c.rstart, c.rend, c.inflight, c.persistent = 0, 0, 0, false
		c.asm.Reset()
		if !c.opts.persistent || c.declined {
			return nil
		}
		rings := c.opts.rings > 0 && ringsSupported && !c.ringsDeclined
		offer := c.handshake
		if rings {
			offer = c.ringHandshake
		}
		ok, err := offer(ctx)
		if err != nil {
			c.dropConn()
			return err
		}
		if ok {
			c.persistent = true
			return nil
		}
		// Declined, and the server closes. Rings declined: the persistent
		// handshake goes on a new connection. The persistent handshake
		// declined (git's server answered "unhandled command"): the
		// request needs a connection of its own.
		if rings {
			c.ringsDeclined = true
		} else {
			c.declined = true
		}
		c.dropConn()
	}
}

// handshake offers the persistent handshake on the new connection and
// reports whether the server accepted it. ctx bounds it.
func (c *Client) handshake(ctx context.Context) (bool, error) {
	defer c.boundBy(ctx)()
	if err := c.write(helloRequest); err != nil {
		return false, ctxOr(ctx, err)
	}
	c.inflight = 1
	reply, err := c.readReply()
	c.inflight = 0
	if err != nil {
		return false, ctxOr(ctx, err)
	}
	c.applyDeadline()
	return bytes.Equal(reply, helloReply), nil
}

// boundBy bounds a handshake on the new connection by ctx: its deadline,
// where it is earlier than the Client's, and its end, which cuts the
// handshake short. The caller calls the returned function when the
// handshake is over, and restores the Client's deadline after success.
// A cut that comes after the handshake is over (ctx ended a moment too
// late) is undone: the returned function waits for it and restores the
// Client's deadline again.
func (c *Client) boundBy(ctx context.Context) func() {
	uc := c.uc
	if d, ok := ctx.Deadline(); ok {
		// Under mu, as SetDeadline sets the socket's: one from another
		// goroutine comes before (and is compared here) or after (and
		// sets its own), never between the look and the set.
		c.mu.Lock()
		if own := c.deadline; own.IsZero() || d.Before(own) {
			_ = uc.SetDeadline(d)
		}
		c.mu.Unlock()
	}
	cut := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = uc.SetDeadline(time.Unix(1, 0))
		close(cut)
	})
	return func() {
		if !stop() {
			<-cut
			if c.uc == uc {
				c.applyDeadline()
			}
		}
	}
}

// dropConn closes the open connection; nothing may be in flight on it.
// Messages posted on it that the server may not have taken (postsAtRisk),
// and those still in the Client's batch, which go with it, are remembered
// in rlost, for the next request (flushPosts takes a batch it sends again
// out first).
func (c *Client) dropConn() {
	if c.postsAtRisk() || len(c.rbatch) > 0 {
		c.rlost = true
	}
	c.mu.Lock()
	if c.uc != nil {
		_ = c.uc.Close()
		c.uc, c.rc = nil, nil
	}
	c.closeRingsLocked()
	c.mu.Unlock()
	c.inflight, c.persistent = 0, false
	c.rbatch = c.rbatch[:0] // posts not yet in a ring go with the connection (see flushPosts)
	c.rposted, c.rpostStaged = false, false
}

// endConn closes the open connection after cause ended it. Requests still
// in flight on it get their errors now: each may have been processed.
// Messages posted as requests (postRequest) whose entries fail here may
// be lost with it: the next request says so (rlost, lostPosts), as for
// messages posted on rings (dropConn).
func (c *Client) endConn(cause error) {
	if c.inflight > 0 {
		lost := c.fail("read", fmt.Errorf("%w: the connection ended before this reply: %w", ErrIncompleteReply, peerCause(cause)))
		if c.queue.fail(c.gen, lost) {
			c.rlost = true
		}
	}
	c.dropConn()
	c.declined, c.ringsDeclined = false, false // the server may come back as another kind: offer again
}

func (c *Client) reconnect() error {
	ctx := context.Background()
	if d := c.currentDeadline(); !d.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d)
		defer cancel()
	}
	return c.connect(ctx)
}

package engine

import "net"

// The tail of inline replies. A reply written on the event loop goes to
// the socket at once; what the socket does not take is kept here, in the
// connection's tail, rather than in gnet's outbound buffer, and once the
// handler is done a goroutine writes it on the connection's duplicate of
// the socket (wf) while the loop leaves the connection alone, as it does
// while a pooled handler writes its reply. The reason is the peer that
// shuts down its writing side after its requests and then reads its
// replies: gnet closes a connection as soon as it reads the end of its
// input, and drops what its outbound buffer still holds; a tail is the
// engine's, and its writer finishes on the duplicate, which outlives
// gnet's descriptor (onClose rescues a half-closed peer's connection
// while a reply is being written).
//
// Ownership: the loop appends to tail while an inline handler runs (or
// batched replies are flushed); from startTail to the writer's end the
// writer alone uses it, and the loop does not touch the connection's
// output (phaseHandling). A pooled request dispatched with a tail left (the
// batch before it, flushed first) takes the tail to its worker, which
// writes it before any byte of its own reply (writeTailFirst): the tail's
// replies came first. tailHeld mirrors cap(tail.B) for the memory
// budget, which the loop reads at any time. Each writer gets its own ack
// channel (startTail).

// sendInline writes b, encoded reply bytes of an inline handler, on the
// loop: at once what the socket takes, the rest into the tail. It falls
// back to gnet's buffer while that holds bytes (they go first) or where
// the connection cannot have a duplicate of its socket. An error means
// the peer is gone: the caller closes the connection.
func (c *conn) sendInline(b []byte) error {
	if c.gc.OutboundBuffered() > 0 {
		_, err := c.gc.Write(b)
		return err
	}
	if !c.hasTail() {
		off := 0
		done, err := writeAvailable(uintptr(c.gc.Fd()), b, &off)
		if err != nil {
			return net.ErrClosed
		}
		if done {
			return nil
		}
		b = b[off:]
	}
	c.ensureWorkerIO()
	if !c.openWriteFD() {
		_, err := c.gc.Write(b)
		return err
	}
	if c.tail == nil {
		c.tail = bufPool.Get()
		c.tail.B = c.tail.B[:0]
	}
	c.tail.B = append(c.tail.B, b...)
	c.tailHeld.Store(int64(cap(c.tail.B)))
	return nil
}

// hasTail reports whether reply bytes wait in the tail. On the loop,
// outside phaseHandling.
func (c *conn) hasTail() bool {
	return c.workerIO != nil && c.tail != nil && len(c.tail.B) > 0
}

// outbound is how many reply bytes wait for the socket: in gnet's buffer
// and in the tail. On the loop, outside phaseHandling.
func (c *conn) outbound() int {
	n := c.gc.OutboundBuffered()
	if c.hasTail() {
		n += len(c.tail.B)
	}
	return n
}

// startTail hands the tail to its writer (writeTail) after an inline
// request: the loop reads no further request of c until the writer hands
// c back, as after a pooled request. On the loop.
func (c *conn) startTail(now int64) {
	c.direct = true // nothing is queued in gnet: wf's bytes overtake none
	c.setPhase(phaseHandling)
	c.hstart = now
	c.setDeadline(now, whyWrite)
	// A channel of its own, as each pooled worker has: the loop may start
	// the next tail's writer (serving what came meanwhile) before it
	// answers this one's hand-back, and an answer must not reach the
	// wrong writer.
	c.ack = make(chan ackMsg, 1)
	if c.done == nil {
		// An inline connection's first tail: waitAck must see the close,
		// after which the loop may never answer (Close stops it).
		c.done = make(chan struct{})
	}
	c.s.workers.Add(1)
	go c.s.writeTail(c)
}

// writeTail is the tail's writer: it writes the tail on wf, waiting for
// room until the write deadline, and hands c back to its loop, which then
// serves what the peer sent meanwhile (onFinalWritten). When the loop
// closed c meanwhile, it finishes the tail all the same if the peer only
// half-closed (onClose left wf open for it), and then lets go of c.
func (s *Server) writeTail(c *conn) {
	defer s.workers.Done()
	err := c.writeDirect(c.tail.B)
	c.dropTail()
	if err == nil {
		if err = c.finishDirect(); err == nil {
			return // the loop owns c again
		}
		if !c.closeAfter { // set by the loop before startTail: the connection was ending anyway
			s.serveLeftover(c) // if the loop closed c for a half-closed peer
		}
	}
	c.letGo() // the peer is gone, would not read in time, or was rescued
	// onClose left the context to a rescued connection's writer (its
	// handlers run in serveLeftover): cancelled, it leaves the server's.
	c.cancelHandler(net.ErrClosed)
}

// writeTailFirst writes what a pooled request's dispatch left in the tail
// (inline replies to the requests before it) ahead of the worker's first
// bytes: on rc, the rescue socket, when the loop closed the connection
// for a half-closed peer, else on wf. A tail is only ever kept while
// gnet's buffer is empty and wf is open, so the pooled reply goes direct
// (sendPooled). On the worker.
func (c *conn) writeTailFirst(rc *net.UnixConn) error {
	if !c.hasTail() {
		return nil
	}
	var err error
	if rc != nil {
		err = c.writeRescued(rc, c.tail.B)
	} else {
		err = c.writeDirect(c.tail.B)
	}
	c.dropTail()
	return err
}

// dropTail gives the tail's buffer back. Its owner (the loop, or the
// writer) calls it.
func (c *conn) dropTail() {
	if c.workerIO == nil || c.tail == nil {
		return
	}
	c.tail.B = c.tail.B[:cap(c.tail.B)] // see ReplyWriter.release
	bufPool.Put(c.tail)
	c.tail = nil
	c.tailHeld.Store(0)
}

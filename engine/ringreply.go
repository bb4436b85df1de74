package engine

import "github.com/pktipc/pktipc/ring"

// A handler's reply on a ring connection (rings.go). Each Write fills
// records of the reply ring in place; the last record is held open
// (reserved, not yet committed) until the next Write or the end of the
// reply, so that it can be committed with "more" clear and a reply costs
// no record beyond its data. Commit publishes, so the client can read the
// first records of a large reply while the handler writes the rest.
//
// A handler that the server's watch runs (ringConn.serveWatched) must not
// wait for room, which would hold every ring of the watch: once the reply
// ring lacks room, the rest of its reply is spilled, kept in a buffer of
// the memory budget's, and the connection's goroutine puts it in the ring
// afterwards (sendSpill), before anything else of the connection. While
// the handler goes on, each reservation first moves what the ring has
// room for out of the spill (unspill), in order, and a reply that the
// client keeps up with goes back to the ring. As an inline reply on a
// socket queues at most about the outbound high-water mark beyond what
// the socket takes (ErrBackpressure), so does a spill; a reply cut there
// ends the connection, so that the client sees an error, not part of a
// reply.

// beginRing readies w for a reply on its ring connection; a one-way
// message's reply is dropped.
func (w *ReplyWriter) beginRing(oneWay bool) {
	w.err, w.n, w.rres, w.rlen, w.scratchOut, w.reserved = nil, 0, nil, 0, false, false
	w.oneWay = oneWay
}

// reserveRing commits the open record, if any, as a part of the reply
// with more to come, and reserves the next one, of n bytes: in the ring,
// or in the spill once the reply spills.
func (w *ReplyWriter) reserveRing(n int) ([]byte, error) {
	rc := w.ring
	if err := w.commitOpen(true); err != nil {
		return nil, err
	}
	if rc.spilling && rc.onWatch {
		if _, err := w.unspill(false); err != nil {
			return nil, err
		}
	}
	for stale := 0; ; stale++ {
		if rc.spilling || (rc.onWatch && !rc.out.Ready(n)) {
			return w.reserveSpill(n) // on the watch, nothing waits
		}
		if err := rc.waitRoom(n); err != nil {
			return nil, err
		}
		p, err := rc.out.Reserve(n)
		if err == ring.ErrTimeout && stale < ringStaleLimit {
			continue // the room Arm saw is gone (see ringConn.next)
		}
		if err == ring.ErrTimeout {
			return nil, errRingStale
		}
		if err != nil {
			return nil, err
		}
		w.rres, w.rlen = p, -1
		return p, nil
	}
}

// commitOpen ends the open record, if any: the ring's is published, with
// more as given; the spill's joins what the spill holds.
func (w *ReplyWriter) commitOpen(more bool) error {
	if w.rres == nil {
		return nil
	}
	n := max(w.rlen, 0)
	w.rres = nil
	if rc := w.ring; rc.spilling {
		rc.spill = rc.spill[:len(rc.spill)+n]
		return nil
	}
	return w.ring.out.Commit(n, more)
}

// reserveSpill reserves n bytes at the end of the spill, which grows in
// buffers of the memory budget's (as a gathered request does), while what
// it holds for the ring stays within the outbound high-water mark.
func (w *ReplyWriter) reserveSpill(n int) ([]byte, error) {
	rc := w.ring
	if n == 0 {
		rc.spilling = true
		w.rres, w.rlen = noBytes, -1 // not nil: Commit looks for a reservation
		return w.rres, nil
	}
	mark := rc.s.opts.highWater
	if len(rc.spill)-rc.spillAt+n > mark {
		return nil, ErrBackpressure
	}
	if len(rc.spill)+n > cap(rc.spill) && rc.spillAt > 0 {
		rc.spill = rc.spill[:copy(rc.spill, rc.spill[rc.spillAt:])]
		rc.spillAt = 0
	}
	if need := len(rc.spill) + n; need > cap(rc.spill) {
		b := &rc.s.budget
		nb := b.take(min(max(need, 2*cap(rc.spill)), mark)) // the arena rounds up
		if nb == nil {
			rc.s.stats.budgetClosed.Add(1)
			rc.s.log.Debug("engine: ring reply spilled beyond the memory budget; closing connection", "conn", rc.peer.ID)
			return nil, ErrBackpressure
		}
		nb = append(nb, rc.spill...)
		if rc.spill != nil {
			b.give(rc.spill)
		}
		rc.spill = nb
	}
	rc.spilling = true
	end := len(rc.spill) + n
	w.rres, w.rlen = rc.spill[len(rc.spill):end:end], -1
	return w.rres, nil
}

// noBytes is an empty reservation.
var noBytes = []byte{}

// unspill moves the spill's bytes into the reply ring while it has room
// for them, in records as writeRing makes them, each published with more
// set, or for the reply's end (last) the final one with more clear; once
// all are in, the spill's buffer goes back to the budget and the reply
// goes on in the ring. ended says that the final record went. It never
// waits. On the watch's goroutine, with no record open.
func (w *ReplyWriter) unspill(last bool) (ended bool, err error) {
	rc := w.ring
	for rc.spillAt < len(rc.spill) {
		k := min(len(rc.spill)-rc.spillAt, rc.chunk, ringPiece)
		if !rc.out.Ready(k) {
			return false, nil
		}
		p, err := rc.out.Reserve(k)
		if err == ring.ErrTimeout {
			return false, nil // the room Ready saw is gone (see ringConn.next): later
		}
		if err != nil {
			return false, err
		}
		copyMessage(p, rc.spill[rc.spillAt:rc.spillAt+k], &rc.s.rings.live)
		rc.spillAt += k
		ended = last && rc.spillAt == len(rc.spill)
		if err := rc.out.Commit(k, !ended); err != nil {
			return false, err
		}
	}
	w.dropSpill()
	return ended, nil
}

// sendSpill puts a spilled reply into the ring and ends it, waiting for
// room as any reply does, all of it under one write deadline from its
// start (roomDeadline), after which the idle one runs: the handler that
// spilled has returned, and its deadline, which the watch left in force,
// no longer applies. The spill's buffer goes back to the budget. On the
// connection's goroutine, after the watch handed the ring back.
func (w *ReplyWriter) sendSpill() error {
	rc := w.ring
	buf, p := rc.spill, rc.spill[rc.spillAt:]
	rc.spill, rc.spillAt, rc.spilling = nil, 0, false
	rc.spillSent = max(rc.s.now(), 1)
	rc.setWhy(whyWrite, rc.spillSent)
	defer func() {
		rc.spillSent = 0
		rc.setWhy(whyIdle, rc.s.clock.Load())
	}()
	_, err := w.writeRing(p) // counts p in Len again: nobody reads it now
	if buf != nil {
		rc.s.budget.give(buf) // p is in the ring (the last record still open)
	}
	if err != nil {
		return err
	}
	return w.finishRing()
}

// dropSpill gives the spill's buffer back to the budget and ends the
// spill; a reservation in it ends.
func (w *ReplyWriter) dropSpill() {
	rc := w.ring
	if rc.spilling {
		w.rres = nil
	}
	if rc.spill != nil {
		rc.s.budget.give(rc.spill)
	}
	rc.spill, rc.spillAt, rc.spilling = nil, 0, false
}

// dropRing ends a record left reserved by a handler that panicked, after
// the connection was killed: the ring refuses to publish it, and the
// reservation's hold on the mapping ends. A spill is dropped.
func (w *ReplyWriter) dropRing() {
	if w.ring.spilling {
		w.dropSpill()
		return
	}
	if w.rres != nil {
		_ = w.ring.out.Commit(0, true)
		w.rres = nil
	}
}

// writeRing copies p into the reply ring: one record when it fits one and
// the client reads replies in place (a reply of one record then costs it
// no copy) or it is at most ringPiece bytes; else records of ringPiece
// bytes (or the connection's chunk, if smaller), each published when the
// next is reserved, so that a client that copies replies out copies one
// while the next is copied in: a large reply costs about one copy's time
// instead of two.
func (w *ReplyWriter) writeRing(p []byte) (int, error) {
	chunk := min(w.ring.chunk, ringPiece)
	if len(p) <= w.ring.out.MaxRecord() && (w.ring.inPlace || len(p) <= ringPiece) {
		chunk = len(p)
	}
	done := 0
	for done < len(p) {
		n := min(len(p)-done, chunk)
		dst, err := w.reserveRing(n)
		if err != nil {
			w.err = err
			return done, err
		}
		copyMessage(dst, p[done:done+n], &w.ring.s.rings.live)
		w.rlen = n
		done += n
	}
	w.n += int64(done)
	return done, nil
}

// flushRing publishes what the reply holds so far. A record that Reserve
// gave out and Commit has not filled stays reserved: the handler's buffer
// is valid until its Commit. Of a spilled reply, what the ring has room
// for goes (unspill).
func (w *ReplyWriter) flushRing() error {
	if w.rlen < 0 {
		return nil
	}
	if err := w.commitOpen(true); err != nil {
		return err
	}
	if rc := w.ring; rc.spilling && rc.onWatch {
		_, err := w.unspill(false)
		return err
	}
	return nil
}

// finishRing ends the reply: the open record, or an empty one, is
// committed as the message's last. A spilled reply whose spill the ring
// cannot take yet ends in the spill, for sendSpill.
func (w *ReplyWriter) finishRing() error {
	if w.err != nil {
		return w.err
	}
	if rc := w.ring; rc.spilling {
		_ = w.commitOpen(true) // into the spill
		if rc.onWatch {
			if ended, err := w.unspill(true); err != nil || ended {
				return err
			}
		}
		if rc.spilling {
			return nil
		}
	}
	if w.rres == nil {
		if _, err := w.reserveRing(0); err != nil {
			return err
		}
	}
	return w.commitOpen(false)
}

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
// afterwards (sendSpill), before anything else of the connection. As an
// inline reply on a socket may queue up to the outbound high-water mark
// and no more (ErrBackpressure), so may a spill; a reply cut there ends
// the connection, so that the client sees an error, not part of a reply.

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
// buffers of the memory budget's (as a gathered request does), up to the
// outbound high-water mark.
func (w *ReplyWriter) reserveSpill(n int) ([]byte, error) {
	rc := w.ring
	need := len(rc.spill) + n
	if need > rc.s.opts.highWater {
		return nil, ErrBackpressure
	}
	if rc.spill == nil || need > cap(rc.spill) {
		b := &rc.s.budget
		nb := b.take(max(need, 2*cap(rc.spill), spillMin))
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
	w.rres, w.rlen = rc.spill[len(rc.spill):need:need], -1
	return w.rres, nil
}

// spillMin is the smallest buffer a spill takes, so that a reservation
// of no bytes is not nil.
const spillMin = 4 << 10

// sendSpill puts a spilled reply into the ring and ends it, waiting for
// room as any reply does (under the write deadline); the spill's buffer
// goes back to the budget. On the connection's goroutine, after the
// watch handed the ring back.
func (w *ReplyWriter) sendSpill() error {
	rc := w.ring
	p := rc.spill
	rc.spill, rc.spilling = nil, false
	defer rc.s.budget.give(p)
	n := w.n // counted when the handler wrote it
	_, err := w.writeRing(p)
	w.n = n
	if err != nil {
		return err
	}
	return w.finishRing()
}

// dropSpill gives a spill that will not be sent back to the budget; a
// reservation in it ends.
func (w *ReplyWriter) dropSpill() {
	rc := w.ring
	if rc.spilling {
		w.rres = nil
	}
	if rc.spill != nil {
		rc.s.budget.give(rc.spill)
	}
	rc.spill, rc.spilling = nil, false
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
// is valid until its Commit. A spilled reply waits for sendSpill.
func (w *ReplyWriter) flushRing() error {
	if w.rlen < 0 {
		return nil
	}
	return w.commitOpen(true)
}

// finishRing ends the reply: the open record, or an empty one, is
// committed as the message's last. A spilled reply ends in the spill and
// stays there for sendSpill.
func (w *ReplyWriter) finishRing() error {
	if w.err != nil {
		return w.err
	}
	if w.rres == nil && !w.ring.spilling {
		if _, err := w.reserveRing(0); err != nil {
			return err
		}
	}
	return w.commitOpen(false)
}

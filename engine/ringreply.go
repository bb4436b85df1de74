package engine

import "github.com/pktipc/pktipc/ring"

// A handler's reply on a ring connection (rings.go). Each Write fills
// records of the reply ring in place; the last record is held open
// (reserved, not yet committed) until the next Write or the end of the
// reply, so that it can be committed with "more" clear and a reply costs
// no record beyond its data. Commit publishes, so the client can read the
// first records of a large reply while the handler writes the rest.

// beginRing readies w for a reply on its ring connection; a one-way
// message's reply is dropped.
func (w *ReplyWriter) beginRing(oneWay bool) {
	w.err, w.n, w.rres, w.rlen, w.scratchOut, w.reserved = nil, 0, nil, 0, false, false
	w.oneWay = oneWay
}

// reserveRing commits the open record, if any, as a part of the reply
// with more to come, and reserves the next one, of n bytes.
func (w *ReplyWriter) reserveRing(n int) ([]byte, error) {
	rc := w.ring
	if w.rres != nil {
		err := rc.out.Commit(max(w.rlen, 0), true)
		w.rres = nil
		if err != nil {
			return nil, err
		}
	}
	for stale := 0; ; stale++ {
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

// dropRing ends a record left reserved by a handler that panicked, after
// the connection was killed: the ring refuses to publish it, and the
// reservation's hold on the mapping ends.
func (w *ReplyWriter) dropRing() {
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
// is valid until its Commit.
func (w *ReplyWriter) flushRing() error {
	if w.rres == nil || w.rlen < 0 {
		return nil
	}
	err := w.ring.out.Commit(max(w.rlen, 0), true)
	w.rres = nil
	return err
}

// finishRing ends the reply: the open record, or an empty one, is
// committed as the message's last.
func (w *ReplyWriter) finishRing() error {
	if w.err != nil {
		return w.err
	}
	if w.rres == nil {
		if _, err := w.reserveRing(0); err != nil {
			return err
		}
	}
	err := w.ring.out.Commit(max(w.rlen, 0), false)
	w.rres = nil
	return err
}

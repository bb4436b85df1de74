package engine

// replyBuffers is a Client's frame.BufferSource: it keeps the largest
// buffer a reply needed, up to clientKeep, so that a run of large replies
// reuses one instead of allocating each time. The assembler gives a
// buffer back only when the reply in it is no longer valid (the next Recv).
type replyBuffers struct{ kept []byte }

func (r *replyBuffers) Get(n int) []byte {
	if cap(r.kept) >= n {
		b := r.kept
		r.kept = nil
		return b[:0]
	}
	return make([]byte, 0, n)
}

func (r *replyBuffers) Put(b []byte) {
	if cap(b) <= clientKeep && cap(b) > cap(r.kept) {
		r.kept = b[:0]
	}
}

// pending is a request sent (or held) and not yet received.
type pending struct {
	gen  uint64 // the connection it was written on; 0 while held
	held []byte // a git server's request waiting for its own connection
	err  error  // set when its connection ended before its reply
	end  int    // a queued request's end in the Client's write buffer, until flushed
	drop bool   // a posted message (Client.Post): its reply and its error are dropped
	// posts: the Client's rpostSeq when the request went out; its reply
	// confirms the messages posted into the ring before it.
	posts uint64
}

// requestQueue is a FIFO of pending requests in a ring that grows to the
// deepest pipeline seen and is then reused without allocating. The ring's
// length is a power of two (or zero), so that an index wraps with a mask:
// a division, on every push and pop, would cost a round trip more than
// the rest of the queue's work.
type requestQueue struct {
	ring []pending
	head int
	n    int
}

func (q *requestQueue) push(p pending) {
	if q.n == len(q.ring) {
		ring := make([]pending, max(2*len(q.ring), 8))
		for i := range q.n {
			ring[i] = *q.at(i)
		}
		q.ring, q.head = ring, 0
	}
	*q.at(q.n) = p
	q.n++
}

// front returns the oldest entry, or nil. The pointer is valid until the
// next push or pop.
func (q *requestQueue) front() *pending {
	if q.n == 0 {
		return nil
	}
	return &q.ring[q.head]
}

// at returns the i-th oldest entry; the pointer is valid until the next
// push or pop.
func (q *requestQueue) at(i int) *pending { return &q.ring[(q.head+i)&(len(q.ring)-1)] }

// popBack removes the newest entry.
func (q *requestQueue) popBack() {
	q.n--
	*q.at(q.n) = pending{}
}

func (q *requestQueue) pop() {
	q.ring[q.head] = pending{}
	q.head = (q.head + 1) & (len(q.ring) - 1)
	q.n--
}

// fail gives err to every entry written on connection gen that has none,
// and reports whether one of them is a posted message's.
func (q *requestQueue) fail(gen uint64, err error) (posted bool) {
	for i := range q.n {
		p := q.at(i)
		if p.gen == gen && p.held == nil && p.err == nil {
			p.err = err
			posted = posted || p.drop
		}
	}
	return posted
}

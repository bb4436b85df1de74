package events

// item is one entry of the ready queue: an event, or (Kind tokenKind) a
// connection's turn to produce one.
type item struct {
	c  *conn
	ev Event
}

// queue is a FIFO ring of items that reuses its storage, so steady-state
// traffic queues without allocating.
type queue struct {
	buf  []item
	head int
	n    int
}

func (q *queue) len() int { return q.n }

func (q *queue) push(it item) {
	if q.n == len(q.buf) {
		nb := make([]item, max(64, 2*len(q.buf)))
		for i := 0; i < q.n; i++ {
			nb[i] = q.buf[(q.head+i)%len(q.buf)]
		}
		q.buf, q.head = nb, 0
	}
	q.buf[(q.head+q.n)%len(q.buf)] = it
	q.n++
}

func (q *queue) pop() (item, bool) {
	if q.n == 0 {
		return item{}, false
	}
	it := q.buf[q.head]
	q.buf[q.head] = item{}
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	return it, true
}

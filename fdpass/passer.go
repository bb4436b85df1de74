package fdpass

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Message is one received message.
//
// Data and FDs are owned by whoever received the Message: nothing in the
// passer refers to them after Recv or RecvInto returns. The receiver owns
// every descriptor in FDs and must close it (Close, or wrap it with Files)
// or keep it. A callback's Message (RecvFunc, OnRecv) is different: its
// slices are valid only until the callback returns, while the descriptors
// are the callback's to keep or close. A Message and its methods belong
// to one goroutine at a time.
type Message struct {
	Data []byte
	FDs  []int
}

// Close closes every descriptor in m.FDs and empties it. It returns the
// first close error. Contiguous runs are closed with one close_range call.
func (m *Message) Close() error {
	err := closeFDs(m.FDs)
	m.FDs = m.FDs[:0]
	return err
}

// Files wraps every descriptor of m.FDs in an *os.File, in order, and
// empties m.FDs: the files now own the descriptors. It allocates.
func (m *Message) Files() []*os.File {
	fs := make([]*os.File, len(m.FDs))
	for i, fd := range m.FDs {
		fs[i] = os.NewFile(uintptr(fd), fmt.Sprintf("fdpass:%d", fd))
	}
	m.FDs = m.FDs[:0]
	return fs
}

// Stats are cumulative counters of one Passer.
type Stats struct {
	SendCalls    uint64 // sendmmsg calls that sent at least one entry
	SendEntries  uint64 // sendmsg entries (one per fd-carrying chunk or raw byte, plus fd-less runs)
	FDsSent      uint64
	RecvCalls    uint64 // recvmsg calls that returned data
	FDsReceived  uint64
	Truncated    uint64 // messages failed with *TruncatedError
	TablePauses  uint64 // times reading paused because the descriptor table was full
	Backpressure uint64 // sendmmsg calls refused with ETOOMANYREFS (kept queued, retried)
}

type counters struct {
	sendCalls, sendEntries, fdsSent         atomic.Uint64
	recvCalls, fdsReceived, truncated, full atomic.Uint64
	backpressure                            atomic.Uint64
}

// item is one queued send. Items are pooled; their slices are reused.
type item struct {
	data   []byte
	fds    []int
	files  []*os.File // owners of fds when sent as files; kept alive until sent
	done   func(error)
	owned  bool
	chunks int // framed chunks (one sendmsg entry each when fd-carrying)
}

const (
	consWaiter = iota
	consCallback
)

const (
	stPending = iota
	stServed
	stCancelled
)

// consumer is one pending receive: a blocked RecvInto or a RecvFunc.
type consumer struct {
	kind  int
	state int
	dst   *Message
	fn    func(*Message, error)
	err   error
	ch    chan struct{} // waiter: one signal when served
	timer *time.Timer
}

// cbWork is one callback to run on the dispatcher goroutine.
type cbWork struct {
	fn      func(*Message, error)
	m       *inbound // nil for an error-only call
	err     error
	handler bool // fn is the OnRecv handler
}

// Passer passes descriptors over one connected Unix stream socket that it
// owns: it is the only reader and writer of the socket. All methods are
// safe for concurrent use, except that Close and Shutdown must not be
// called from a completion or receive callback (they wait for the
// goroutines that run those callbacks).
type Passer struct {
	opts   options
	conn   *net.UnixConn
	rc     syscall.RawConn
	sockfd int
	epoch  time.Time

	mu            sync.Mutex
	sendq         ring[*item]
	itemFree      []*item
	inflight      int // items queued and not yet completed
	shutdown      bool
	drained       chan struct{}
	drainedClosed bool
	failErr       error
	eof           bool
	recvq         ring[*inbound]
	inFree        []*inbound
	consumers     ring[*consumer]
	cancelled     int // consumers in the queue whose receive gave up (stCancelled)
	consFree      []*consumer
	cbq           ring[cbWork]
	handler       func(*Message, error)
	handlerDone   bool
	unclaimedFDs  int
	unclaimedByts int
	readerPaused  bool

	wakeW chan struct{}
	wakeR chan struct{}
	wakeD chan struct{}
	done  chan struct{} // closed when the passer fails or closes
	wg    sync.WaitGroup

	stats counters
	r     readerState // reader goroutine only
	w     writerState // writer goroutine only
}

// New takes ownership of conn, a connected Unix stream socket, and starts
// the passer's goroutines (reader, writer, callback dispatcher). Close
// releases them. conn must not be read or written by anyone else: a plain
// read over descriptor-carrying bytes makes the kernel drop the descriptors.
// On error conn is left open and still the caller's.
func New(conn *net.UnixConn, opts ...Option) (*Passer, error) {
	if conn == nil {
		return nil, fmt.Errorf("%w: nil conn", ErrInvalid)
	}
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("fdpass: %w", err)
	}
	p := &Passer{
		opts:    o,
		conn:    conn,
		rc:      rc,
		epoch:   time.Now(),
		drained: make(chan struct{}),
		wakeW:   make(chan struct{}, 1),
		wakeR:   make(chan struct{}, 1),
		wakeD:   make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	if err := p.platformInit(); err != nil {
		return nil, err
	}
	p.wg.Add(3)
	go p.readLoop()
	go p.writeLoop()
	go p.dispatchLoop()
	return p, nil
}

// Mode reports the passer's wire shape. Safe for concurrent use.
func (p *Passer) Mode() Mode { return p.opts.mode }

// Stats returns the passer's counters. Safe for concurrent use.
func (p *Passer) Stats() Stats {
	s := &p.stats
	return Stats{
		SendCalls: s.sendCalls.Load(), SendEntries: s.sendEntries.Load(), FDsSent: s.fdsSent.Load(),
		RecvCalls: s.recvCalls.Load(), FDsReceived: s.fdsReceived.Load(),
		Truncated: s.truncated.Load(), TablePauses: s.full.Load(), Backpressure: s.backpressure.Load(),
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// SendFDs queues one message of data plus descriptors and returns without
// blocking. Safe for concurrent use; messages keep the order in which the
// SendFDs/Send calls returned.
//
// data is copied; the caller may reuse it at once. Unless KeepOpen is set
// the passer takes ownership of fds (which must then be distinct) and
// closes them after sending; with KeepOpen the caller must keep them open
// until done runs, and may pass one descriptor several times.
//
// done (may be nil) is called exactly once, on the passer's writer
// goroutine, in queue order: with nil once sendmsg has put the whole
// message in the kernel (which does not mean the peer has received it), or
// with the error that failed the passer. done must not block for long and
// must not call Close or Shutdown.
//
// In Raw mode data must be empty and each descriptor travels as its own
// one-byte message; done runs after the last. If SendFDs returns an error,
// nothing was queued, done is not called and fds remain the caller's.
func (p *Passer) SendFDs(fds []int, data []byte, done func(error)) error {
	return p.send(fds, nil, data, done)
}

// Send is SendFDs for *os.File values. The passer reads each descriptor
// through SyscallConn, never Fd, so a non-blocking file stays non-blocking
// (its O_NONBLOCK flag is shared with the receiver). Unless KeepOpen is
// set the passer owns the files and closes them after sending; with
// KeepOpen the caller must not close them before done runs. Send
// allocates; SendFDs does not. Safe for concurrent use.
func (p *Passer) Send(files []*os.File, data []byte, done func(error)) error {
	var small [16]int
	fds := small[:0]
	for _, f := range files {
		fd, err := fileFD(f)
		if err != nil {
			return err
		}
		fds = append(fds, fd)
	}
	return p.send(fds, files, data, done)
}

// SendChan is SendFDs with a channel: the returned channel (buffered, one
// value) receives the completion. It allocates the channel. Safe for
// concurrent use.
func (p *Passer) SendChan(fds []int, data []byte) (<-chan error, error) {
	ch := make(chan error, 1)
	if err := p.send(fds, nil, data, func(err error) { ch <- err }); err != nil {
		return nil, err
	}
	return ch, nil
}

func fileFD(f *os.File) (int, error) {
	if f == nil {
		return -1, fmt.Errorf("%w: nil *os.File", ErrInvalid)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("fdpass: %s: %w", f.Name(), err)
	}
	fd := -1
	if err := rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		return -1, fmt.Errorf("fdpass: %s: %w", f.Name(), err)
	}
	return fd, nil
}

func (p *Passer) send(fds []int, files []*os.File, data []byte, done func(error)) error {
	for _, fd := range fds {
		if fd < 0 {
			return fmt.Errorf("%w: descriptor %d", ErrInvalid, fd)
		}
	}
	n := 1
	if p.opts.mode == Raw {
		if len(data) > 0 {
			return ErrRawData
		}
		if len(fds) == 0 {
			return fmt.Errorf("%w: raw mode sends at least one descriptor", ErrInvalid)
		}
		n = len(fds)
	} else {
		if len(fds) > p.opts.maxFDsPerMessage {
			return fmt.Errorf("%w: %d descriptors, limit %d", ErrTooLarge, len(fds), p.opts.maxFDsPerMessage)
		}
		if len(data) > p.opts.maxMessageSize {
			return fmt.Errorf("%w: %d data bytes, limit %d", ErrTooLarge, len(data), p.opts.maxMessageSize)
		}
	}
	p.mu.Lock()
	if err := p.sendErrLocked(); err != nil {
		p.mu.Unlock()
		return err
	}
	// Under the lock: once the passer has failed its socket number may
	// belong to someone else.
	for _, fd := range fds {
		if fd == p.sockfd {
			p.mu.Unlock()
			return ErrSelfPass
		}
	}
	if p.sendq.len()+n > p.opts.maxQueue {
		p.mu.Unlock()
		return ErrQueueFull
	}
	owned := !p.opts.keepOpen
	if p.opts.mode == Raw {
		for i, fd := range fds {
			it := p.getItemLocked()
			it.fds = append(it.fds, fd)
			if files != nil {
				it.files = append(it.files, files[i])
			}
			it.owned, it.chunks = owned, 1
			if i == len(fds)-1 {
				it.done = done
			}
			p.sendq.push(it)
		}
	} else {
		it := p.getItemLocked()
		it.data = append(it.data, data...)
		it.fds = append(it.fds, fds...)
		it.files = append(it.files, files...)
		it.done, it.owned, it.chunks = done, owned, chunkCount(len(fds))
		p.sendq.push(it)
	}
	p.inflight += n
	p.mu.Unlock()
	signal(p.wakeW)
	return nil
}

func (p *Passer) sendErrLocked() error {
	if p.failErr != nil {
		return p.failErr
	}
	if p.shutdown {
		return ErrClosed
	}
	return nil
}

func (p *Passer) getItemLocked() *item {
	if n := len(p.itemFree); n > 0 {
		it := p.itemFree[n-1]
		p.itemFree = p.itemFree[:n-1]
		return it
	}
	return &item{}
}

// recycleItemsLocked returns items to the pool, dropping large buffers so
// a burst of big messages does not pin memory.
func (p *Passer) recycleItemsLocked(items []*item) {
	for _, it := range items {
		if cap(it.data) > 64<<10 {
			it.data = nil
		}
		it.data = it.data[:0]
		it.fds = it.fds[:0]
		clear(it.files)
		it.files = it.files[:0]
		it.done = nil
		p.itemFree = append(p.itemFree, it)
	}
}

// finishItems completes items in order: closes owned descriptors and runs
// the completion callbacks. Writer goroutine only, without p.mu.
func (p *Passer) finishItems(items []*item, err error) {
	for _, it := range items {
		if it.owned {
			// Recycled items keep an empty, non-nil files slice.
			if len(it.files) > 0 {
				for _, f := range it.files {
					f.Close()
				}
			} else {
				closeFDs(it.fds)
			}
		}
		if it.done != nil {
			it.done(err)
		}
	}
	p.mu.Lock()
	p.recycleItemsLocked(items)
	p.inflight -= len(items)
	if p.shutdown && p.inflight == 0 && !p.drainedClosed {
		p.drainedClosed = true
		close(p.drained)
	}
	p.mu.Unlock()
}

// RecvInto waits for the next message and stores it in m, reusing the
// capacity of m.Data and m.FDs (whose descriptors must already have been
// taken: RecvInto overwrites the slice). Receivers are served in the order
// they called, together with RecvFunc callbacks. A zero deadline waits
// forever; past the deadline it returns an error matching
// os.ErrDeadlineExceeded. A message whose descriptors were truncated
// returns its data in m and a *TruncatedError. After the peer's orderly
// close and once every queued message is taken it returns io.EOF. Safe for
// concurrent use; does not allocate in steady state.
func (p *Passer) RecvInto(deadline time.Time, m *Message) error {
	p.mu.Lock()
	c := p.getConsumerLocked()
	c.kind, c.state, c.dst, c.err = consWaiter, stPending, m, nil
	p.consumers.push(c)
	p.dispatchLocked()
	if c.state == stPending && !deadline.IsZero() && !time.Now().Before(deadline) {
		p.cancelLocked(c)
		p.mu.Unlock()
		return fmt.Errorf("fdpass: receive: %w", os.ErrDeadlineExceeded)
	}
	p.mu.Unlock()
	var tc <-chan time.Time
	if !deadline.IsZero() {
		c.timer.Reset(time.Until(deadline))
		tc = c.timer.C
	}
	select {
	case <-c.ch:
	case <-tc:
		p.mu.Lock()
		if c.state == stPending {
			p.cancelLocked(c)
			p.mu.Unlock()
			return fmt.Errorf("fdpass: receive: %w", os.ErrDeadlineExceeded)
		}
		p.mu.Unlock()
		<-c.ch // served while the timer fired; the signal is buffered
	}
	if tc != nil {
		c.timer.Stop()
	}
	err := c.err
	p.mu.Lock()
	c.dst, c.err = nil, nil
	p.consFree = append(p.consFree, c)
	p.mu.Unlock()
	return err
}

// Recv is RecvInto with a fresh Message. It allocates the message's
// slices. Safe for concurrent use.
func (p *Passer) Recv(deadline time.Time) (Message, error) {
	var m Message
	err := p.RecvInto(deadline, &m)
	return m, err
}

// RecvFunc queues a one-shot receive callback, served in order with
// blocking receivers (AnyEvent::FDpasser's push_recv_fh). fn runs on the
// passer's dispatcher goroutine with the next message, or once with a nil
// message and the error that ended receiving (io.EOF after an orderly
// close, ErrClosed, a protocol error). A truncated message comes with its
// data and a *TruncatedError. m's slices are valid until fn returns; the
// descriptors in m.FDs are fn's to close or keep. fn may call RecvFunc
// again but not Close. Once the passer has failed or closed, RecvFunc
// returns that error instead and fn never runs. Safe for concurrent use.
func (p *Passer) RecvFunc(fn func(m *Message, err error)) error {
	if fn == nil {
		return fmt.Errorf("%w: nil callback", ErrInvalid)
	}
	p.mu.Lock()
	if p.failErr != nil {
		// The dispatcher is gone; report at once instead of never.
		err := p.failErr
		p.mu.Unlock()
		return err
	}
	c := p.getConsumerLocked()
	c.kind, c.state, c.fn = consCallback, stPending, fn
	p.consumers.push(c)
	p.dispatchLocked()
	p.mu.Unlock()
	return nil
}

// OnRecv installs a persistent handler for messages that arrive while no
// blocking receiver or RecvFunc callback is waiting; nil removes it.
// Messages already queued go to it first, in arrival order. It runs on the
// dispatcher goroutine with the same contract as RecvFunc's callback, and
// is called once with a nil message and the terminal error (not when
// installed after the passer failed). Safe for concurrent use.
func (p *Passer) OnRecv(fn func(m *Message, err error)) {
	p.mu.Lock()
	if p.failErr != nil {
		p.handlerDone = true // the dispatcher is gone; nothing to deliver
	}
	p.handler = fn
	p.dispatchLocked()
	p.mu.Unlock()
}

// cancelLocked marks a pending waiter's receive given up. It stays queued
// until dispatch or a compaction takes it out: once cancelled waiters are
// half the queue, the queue is compacted, so that a receiver polling with
// short deadlines behind one that waits long cannot grow it without bound.
func (p *Passer) cancelLocked(c *consumer) {
	c.state = stCancelled
	p.cancelled++
	if p.cancelled <= p.consumers.len()/2 {
		return
	}
	for n := p.consumers.len(); n > 0; n-- {
		q := p.consumers.pop()
		if q.state == stCancelled {
			p.recycleCancelledLocked(q)
		} else {
			p.consumers.push(q)
		}
	}
}

// recycleCancelledLocked frees a cancelled consumer taken off the queue.
func (p *Passer) recycleCancelledLocked(c *consumer) {
	p.cancelled--
	c.dst = nil
	p.consFree = append(p.consFree, c)
}

func (p *Passer) getConsumerLocked() *consumer {
	if n := len(p.consFree); n > 0 {
		c := p.consFree[n-1]
		p.consFree = p.consFree[:n-1]
		return c
	}
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &consumer{ch: make(chan struct{}, 1), timer: t}
}

// popRecvLocked takes the oldest queued message and updates the
// unclaimed accounting, waking a paused reader when there is room again.
func (p *Passer) popRecvLocked() *inbound {
	m := p.recvq.pop()
	p.unclaimedFDs -= len(m.fds)
	p.unclaimedByts -= len(m.data)
	if p.readerPaused && !p.overLimitsLocked() {
		p.readerPaused = false
		signal(p.wakeR)
	}
	return m
}

func (p *Passer) overLimitsLocked() bool {
	return p.unclaimedFDs >= p.opts.maxUnclaimedFDs || p.unclaimedByts >= p.opts.maxUnclaimedBytes
}

func (p *Passer) recycleInboundLocked(m *inbound) {
	if cap(m.data) > 64<<10 {
		m.data = nil
	}
	m.reset()
	p.inFree = append(p.inFree, m)
}

// recvTermErrLocked is the error for receivers once nothing is queued:
// the failure, or io.EOF after the peer's orderly close.
func (p *Passer) recvTermErrLocked() error {
	if p.failErr != nil {
		return p.failErr
	}
	if p.eof {
		return io.EOF
	}
	return nil
}

// dispatchLocked hands queued messages to consumers in order, then the
// handler, and fails pending consumers once receiving has ended.
func (p *Passer) dispatchLocked() {
	for p.recvq.len() > 0 {
		var c *consumer
		for p.consumers.len() > 0 {
			c = p.consumers.pop()
			if c.state == stCancelled {
				p.recycleCancelledLocked(c)
				c = nil
				continue
			}
			break
		}
		if c == nil {
			if p.handler == nil {
				break
			}
			m := p.popRecvLocked()
			p.cbq.push(cbWork{fn: p.handler, m: m, err: m.err, handler: true})
			signal(p.wakeD)
			continue
		}
		m := p.popRecvLocked()
		if c.kind == consWaiter {
			c.dst.Data = append(c.dst.Data[:0], m.data...)
			c.dst.FDs = append(c.dst.FDs[:0], m.fds...)
			c.err = m.err
			c.state = stServed
			p.recycleInboundLocked(m)
			c.ch <- struct{}{}
		} else {
			p.cbq.push(cbWork{fn: c.fn, m: m, err: m.err})
			c.fn = nil
			p.consFree = append(p.consFree, c)
			signal(p.wakeD)
		}
	}
	if p.recvq.len() > 0 {
		return
	}
	err := p.recvTermErrLocked()
	if err == nil {
		return
	}
	for p.consumers.len() > 0 {
		c := p.consumers.pop()
		switch {
		case c.state == stCancelled:
			p.recycleCancelledLocked(c)
		case c.kind == consWaiter:
			c.err = err
			c.state = stServed
			c.ch <- struct{}{}
		default:
			p.cbq.push(cbWork{fn: c.fn, err: err})
			c.fn = nil
			p.consFree = append(p.consFree, c)
			signal(p.wakeD)
		}
	}
	if p.handler != nil && !p.handlerDone {
		p.handlerDone = true
		p.cbq.push(cbWork{fn: p.handler, err: err, handler: true})
		signal(p.wakeD)
	}
}

// publish queues messages completed by the reader and reports whether the
// unclaimed limits are reached. Reader goroutine only.
func (p *Passer) publish(ms []*inbound) bool {
	now := time.Since(p.epoch).Nanoseconds()
	p.mu.Lock()
	wasEmpty := p.recvq.len() == 0
	for _, m := range ms {
		if m.err != nil {
			p.stats.truncated.Add(1)
		}
		if p.failErr != nil {
			closeFDs(m.fds)
			p.recycleInboundLocked(m)
			continue
		}
		m.at = now
		p.recvq.push(m)
		p.unclaimedFDs += len(m.fds)
		p.unclaimedByts += len(m.data)
	}
	p.dispatchLocked()
	if wasEmpty && p.recvq.len() > 0 && p.opts.maxUnclaimedAge > 0 {
		signal(p.wakeD) // arm the age timer
	}
	p.refillLocked()
	over := p.overLimitsLocked()
	p.mu.Unlock()
	return over
}

// refillLocked moves recycled messages to the reader's private pool so
// the decoder rarely needs the lock and, in steady state, never allocates.
func (p *Passer) refillLocked() {
	for len(p.r.free) < maxReadsPerWake && len(p.inFree) > 0 {
		n := len(p.inFree) - 1
		p.r.free = append(p.r.free, p.inFree[n])
		p.inFree = p.inFree[:n]
	}
}

// waitRoom blocks the reader while too much received data waits for
// receivers. It returns false when the passer is done.
func (p *Passer) waitRoom() bool {
	for {
		p.mu.Lock()
		if p.failErr != nil {
			p.mu.Unlock()
			return false
		}
		if !p.overLimitsLocked() {
			p.readerPaused = false
			p.r.budgetFDs = p.opts.maxUnclaimedFDs - p.unclaimedFDs
			p.r.budgetBytes = p.opts.maxUnclaimedBytes - p.unclaimedByts
			p.mu.Unlock()
			return true
		}
		p.readerPaused = true
		p.mu.Unlock()
		select {
		case <-p.wakeR:
		case <-p.done:
			return false
		}
	}
}

// setEOF records the peer's orderly close. Reader goroutine only.
func (p *Passer) setEOF() {
	p.mu.Lock()
	p.eof = true
	p.dispatchLocked()
	p.mu.Unlock()
}

// fail ends the passer with err (the first error wins): queued messages
// and their descriptors are dropped, pending receivers get err, the socket
// is closed so the reader and writer stop. The writer fails queued sends.
func (p *Passer) fail(err error) {
	p.mu.Lock()
	if p.failErr != nil {
		p.mu.Unlock()
		return
	}
	p.failErr = err
	for p.recvq.len() > 0 {
		m := p.popRecvLocked()
		closeFDs(m.fds)
		p.recycleInboundLocked(m)
	}
	// Messages assigned to callbacks but not yet handed over: close their
	// descriptors; one-shot callbacks get the error instead.
	for i, n := 0, p.cbq.len(); i < n; i++ {
		w := p.cbq.pop()
		if w.m != nil {
			closeFDs(w.m.fds)
			p.recycleInboundLocked(w.m)
			w.m = nil
			if w.handler {
				continue // the handler hears the terminal error once
			}
			w.err = err
		}
		p.cbq.push(w)
	}
	p.dispatchLocked()
	p.mu.Unlock()
	close(p.done)
	p.conn.Close()
	signal(p.wakeW)
	signal(p.wakeD)
	if !errors.Is(err, net.ErrClosed) {
		p.opts.logger.Debug("fdpass: passer failed", "err", err)
	}
}

// Close fails every pending and later call with ErrClosed, closes the
// socket, every queued-but-unsent descriptor the passer owns and every
// received-but-unclaimed descriptor, waits for the passer's goroutines to
// end (pending completion callbacks run with ErrClosed first), and
// returns. It is idempotent and safe for concurrent use, but must not be
// called from a callback.
func (p *Passer) Close() error {
	p.fail(ErrClosed)
	p.wg.Wait()
	return nil
}

// Shutdown stops accepting sends, waits until every queued message has
// been handed to the kernel and its completion has run, or until ctx is
// done, then closes the passer. It returns ctx's error if the queue did not
// drain in time. Safe for concurrent use; not from a callback.
func (p *Passer) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.shutdown = true
	if p.inflight == 0 && !p.drainedClosed {
		p.drainedClosed = true
		close(p.drained)
	}
	p.mu.Unlock()
	var err error
	select {
	case <-p.drained:
	case <-p.done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.Close()
	return err
}

// dispatchLoop runs receive callbacks in order and enforces
// MaxUnclaimedAge.
func (p *Passer) dispatchLoop() {
	defer p.wg.Done()
	age := p.opts.maxUnclaimedAge
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	view := &Message{}
	for {
		p.mu.Lock()
		for p.cbq.len() == 0 {
			if p.failErr != nil {
				p.mu.Unlock()
				timer.Stop()
				return
			}
			armed := false
			if age > 0 && p.recvq.len() > 0 {
				wait := time.Duration(p.recvq.peek().at) + age - time.Since(p.epoch)
				if wait <= 0 {
					p.mu.Unlock()
					p.fail(fmt.Errorf("%w: oldest message waited over %v", ErrUnclaimed, age))
					p.mu.Lock()
					continue
				}
				timer.Reset(wait)
				armed = true
			}
			p.mu.Unlock()
			select {
			case <-p.wakeD:
			case <-p.done:
			case <-timer.C:
			}
			if armed {
				timer.Stop()
			}
			p.mu.Lock()
		}
		w := p.cbq.pop()
		p.mu.Unlock()
		if w.m != nil {
			view.Data, view.FDs = w.m.data, w.m.fds
			w.fn(view, w.err)
			view.Data, view.FDs = nil, nil
			p.mu.Lock()
			p.recycleInboundLocked(w.m)
			p.mu.Unlock()
		} else {
			w.fn(nil, w.err)
		}
	}
}

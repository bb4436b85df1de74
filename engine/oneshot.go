package engine

import (
	"bytes"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/bytebufferpool"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/uds"
)

// The git-style path. A git client connects, writes its request and waits;
// by the time the accept loop takes the connection, the request is usually
// in the socket already. Such a connection is served where it was
// accepted, as a blocking C server serves it: read, handle, write, close,
// without a hand-off to an event loop (a descriptor duplicate, an epoll
// registration and two wake-ups, whose scheduling made the tail of a
// connection's latency). A request whose handler runs inline
// (WithInlineHandlers or WithInlineFilter) is served on the accept loop;
// one whose handler may block goes to a worker with its descriptor
// (oneshotpool.go), since the accept loop must not block. The persistent
// handshake and connections whose request is not whole yet go to the
// loops. A reply the socket does not take at once is finished by a
// goroutine of its own, bounded by the write deadline, so one slow reader
// never stalls the accept loop.

// oneShotPeek is how much of a new connection's input the accept loop
// looks at for a whole request: git's ordinary requests fit.
const oneShotPeek = 64 << 10

// oneShotGrace is how long the accept loop waits for the request of a
// connection that has sent nothing, or part of it, yet, when the server
// is not crowded, before it hands the connection to a loop: git's client
// writes its request right after connecting, and a connection served
// here costs a fraction of one enrolled in a loop. A silent or slow
// client costs the accept loop this much once, one that shut its writing
// side after a part nothing more, and nothing when other connections wait
// to be accepted or under pressure (the lobby).
const oneShotGrace = 500 * time.Microsecond

// oneShot is the accept loop's state for the git-style path; only the
// accept loop uses it.
type oneShot struct {
	peek  []byte
	asm   *frame.Assembler
	reply shotBuf
	sink  []byte // what a served request's bytes are read into and dropped
	// peeked is how many bytes the last peek saw.
	peeked int
	// in is awaitRequest's wait, run by the listening socket's RawConn
	// (lnRC) through wait, made once so that a wait allocates nothing.
	in   inputWait
	lnRC syscall.RawConn
	wait func(lfd uintptr)
}

// inputWait is a wait of the accept loop for a new connection's input
// (awaitInput): its arguments, then its results.
type inputWait struct {
	fd     int
	events int16
	d      time.Duration
	// news: the connection raised events, hung up or failed; queued:
	// another connection waits to be accepted.
	news, queued bool
}

func (w *inputWait) poll(lfd uintptr) { awaitInput(w, int(lfd)) }

// lingerers owns the goroutines that finish one-shot replies.
//
// Invariant (mu): every such goroutine's connection is in conns until the
// goroutine ends; closed is set once, when the server closes, after which
// none starts; close sets past deadlines on all conns, so each goroutine
// ends at once.
type lingerers struct {
	mu     sync.Mutex
	conns  map[*net.UnixConn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// peekNew judges what a new connection has sent so far, with the accept
// loop's buffer: the verdict, and for peekReady the wire length of the
// whole request when it lies within the buffer (0 otherwise).
func (s *Server) peekNew(fd int) (peekVerdict, int) {
	o := &s.oneshot
	if o.peek == nil {
		o.peek = make([]byte, oneShotPeek)
	}
	n, err := recvPeek(fd, o.peek)
	o.peeked = 0
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return peekWait, 0
	case err != nil || n == 0:
		return peekGone, 0
	}
	o.peeked = n
	return judgeWhole(o.peek[:n], n == len(o.peek))
}

// partWait is how long the accept loop sleeps before it looks again at a
// new connection that sent part of its request: git's client writes its
// data packets and the flush that ends them in separate writes, which
// follow each other within microseconds.
const partWait = 20 * time.Microsecond

// awaitRequest gives a new connection whose request is not whole yet
// (peekWait) up to oneShotGrace to send the rest, and judges it again.
// While it sent nothing, readiness says when to look; once it sent part,
// the socket stays readable, so the loop looks every partWait, and stops
// waiting when the peer shut its writing side (the rest cannot come).
// Either wait ends as soon as another connection waits to be accepted: a
// slow client must not hold up the ones behind it. It gives up, too, when
// the wait cannot be made.
func (s *Server) awaitRequest(fd int) (peekVerdict, int) {
	o := &s.oneshot
	if o.lnRC == nil {
		rc, err := s.ln.SyscallConn()
		if err != nil {
			return peekWait, 0
		}
		o.lnRC, o.wait = rc, o.in.poll
	}
	deadline := time.Now().Add(oneShotGrace)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return peekWait, 0
		}
		o.in.fd = fd
		if o.peeked == 0 {
			o.in.events, o.in.d = inputData, left
		} else {
			o.in.events, o.in.d = inputEnd, min(left, partWait)
		}
		if o.lnRC.Control(o.wait) != nil || o.in.queued {
			return peekWait, 0
		}
		if o.peeked == 0 && !o.in.news {
			return peekWait, 0 // nothing came within the grace
		}
		if o.peeked > 0 && o.in.news {
			return peekWait, 0 // the peer shut its writing side: the rest cannot come
		}
		if v, end := s.peekNew(fd); v != peekWait {
			return v, end
		}
	}
}

// judgeWhole looks at the start of a connection's input, b (full says
// that b filled the peek buffer), and gives its verdict and, for a whole
// request, the wire length of it.
func judgeWhole(b []byte, full bool) (peekVerdict, int) {
	off := 0
	for {
		kind, _, n, err := frame.Decode(b[off:])
		switch {
		case err != nil:
			return peekBad, 0
		case kind == frame.NeedMore && full:
			return peekLarge, 0
		case kind == frame.NeedMore:
			return peekWait, 0
		case kind != frame.Data || n == frame.HeaderSize:
			return peekReady, off + n // a flush, or another end of a message for git
		}
		off += n
	}
}

// serveOneShot serves the whole request in the first end bytes of the
// accept loop's peek buffer, on the accept loop or, for a handler that
// runs on the workers, on a worker (oneshotpool.go), and reports served;
// it reports false, touching nothing, when the request must go to a loop.
func (s *Server) serveOneShot(fd int, cred uds.Cred, end int) (served bool) {
	o := &s.oneshot
	if o.asm == nil {
		o.asm = frame.NewAssembler(frame.SimpleIPC, s.opts.maxRequest)
	}
	o.asm.Reset()
	msg, _, done, err := o.asm.Next(o.peek[:end])
	if err != nil || !done || (s.opts.persistent && bytes.Equal(msg, helloRequest)) {
		return false
	}
	if !s.opts.inline && !s.filterInline(msg) {
		s.poolOneShot(fd, cred, msg, end)
		return true
	}
	if !s.admitCred(cred, func() { _ = sysClose(fd) }) {
		return true
	}
	lingers := false
	defer func() {
		if !lingers {
			s.adm.unadmit(cred)
		}
	}()
	c := s.newConn(Peer{ID: s.stats.accepted.Add(1), Cred: cred})
	if s.stopping.Load() {
		closeShot(fd, end, &o.sink)
		return true
	}
	s.stats.requests.Add(1)
	s.stats.oneShot.Add(1)
	c.prepareHandler(false)
	c.reply.beginOneShot(&o.reply.ByteBuffer, fd)
	herr, panicked := s.call(c, msg)
	c.cancelHandler(net.ErrClosed)
	w := &c.reply
	if panicked || w.err != nil {
		w.release()
		closeShot(fd, end, &o.sink) // no terminator: the client sees an incomplete reply
		return true
	}
	if errors.Is(herr, ErrQuit) {
		s.requestQuit()
	}
	w.buf.B = frame.AppendFlush(w.buf.B)
	n, err := writeNow(fd, w.buf.B)
	switch {
	case !consume(fd, end, &o.sink):
		_ = sysClose(fd)
	case n < len(w.buf.B) && err == nil:
		lingers = s.linger(fd, cred, w.buf.B[n:])
	default:
		_ = sysClose(fd)
	}
	w.release()
	o.reply.done(w.n)
	return true
}

// A one-shot request is read from its socket (it was only peeked) after
// the reply is written, not before the handler runs. Reading it frees
// the client's send buffer, and the kernel then wakes whatever waits on
// the client's socket: the client itself, asleep until the reply comes,
// which wakes for nothing and sleeps again. Once the reply has woken it,
// nothing waits there. It is read at all because closing a socket with
// unread input resets the connection: the client would see ECONNRESET
// rather than the end of the reply.

// closeShot reads and drops the first end bytes of fd's input (the
// request, peeked so far) and closes fd.
func closeShot(fd, end int, sink *[]byte) {
	consume(fd, end, sink)
	_ = sysClose(fd)
}

// consume reads and drops the first n bytes of fd's input, which are
// there already.
func consume(fd int, n int, sink *[]byte) bool {
	if cap(*sink) < n {
		*sink = make([]byte, n)
	}
	got := 0
	for got < n {
		m, err := sysRead(uintptr(fd), (*sink)[got:n])
		if err == syscall.EINTR {
			continue
		}
		if err != nil || m <= 0 {
			break
		}
		got += m
	}
	return got == n
}

// writeNow writes what the socket fd takes of b without waiting.
func writeNow(fd int, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := sysWrite(uintptr(fd), b[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			if err != syscall.EAGAIN {
				return n, err
			}
			break
		}
		n += m
	}
	return n, nil
}

// writeConn is writeNow on a net.UnixConn.
func writeConn(uc *net.UnixConn, b []byte) (int, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	n := 0
	if cerr := rc.Control(func(fd uintptr) { n, err = writeNow(int(fd), b) }); cerr != nil {
		return 0, cerr
	}
	return n, err
}

// linger finishes a one-shot reply the socket fd did not take at once, on
// a goroutine of its own, then closes the connection. It copies rest, and
// owns fd from the call on. The connection keeps its place under the caps
// until it closes: a client that never reads must not hold connections
// beyond them. It reports whether the reply lingers; then the connection's
// admission is settled here and given back when it closes, and otherwise
// it is the caller's to give back.
func (s *Server) linger(fd int, cred uds.Cred, rest []byte) bool {
	uc, err := fdConn(fd)
	if err != nil {
		return false // the client sees an incomplete reply
	}
	l := &s.lingering
	// The deadline before the registration: close sets a past one on
	// every registered connection, and must not be overtaken.
	if d := s.opts.writeTimeout; d > 0 {
		_ = uc.SetWriteDeadline(time.Now().Add(d))
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		_ = uc.Close()
		return false
	}
	if l.conns == nil {
		l.conns = make(map[*net.UnixConn]struct{})
	}
	l.conns[uc] = struct{}{}
	l.wg.Add(1)
	l.mu.Unlock()
	b := bytes.Clone(rest)
	s.budget.used.Add(int64(len(b)))
	s.adm.settle()
	go func() {
		defer l.wg.Done()
		if _, err := uc.Write(b); errors.Is(err, os.ErrDeadlineExceeded) {
			s.stats.timeouts[whyWrite].Add(1)
		}
		s.budget.used.Add(-int64(len(b)))
		l.mu.Lock()
		delete(l.conns, uc)
		l.mu.Unlock()
		_ = uc.Close()
		s.adm.forget(cred)
	}()
	return true
}

func (l *lingerers) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// close ends every lingering reply at once and waits for their goroutines.
func (l *lingerers) close() {
	l.mu.Lock()
	l.closed = true
	for uc := range l.conns {
		_ = uc.SetWriteDeadline(time.Unix(1, 0))
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// beginOneShot starts a reply written on uc by the accept loop, in buf,
// its own buffer.
func (w *ReplyWriter) beginOneShot(buf *bytebufferpool.ByteBuffer, fd int) {
	w.buf = buf
	w.buf.B = w.buf.B[:0]
	w.err, w.n, w.inline, w.base, w.sock, w.oneShot, w.waits = nil, 0, true, 0, fd, true, false
}

// flushOneShot writes what the socket takes of the reply so far and keeps
// the rest; past the high-water mark the peer is not reading. On a
// worker it writes it all, waiting for room.
func (w *ReplyWriter) flushOneShot() error {
	if w.waits { // a worker's: it may wait for room
		err := w.c.s.writeShot(w.c, w.buf.B)
		w.buf.B = w.buf.B[:0]
		w.sentAt = w.c.s.now()
		if err != nil {
			return net.ErrClosed
		}
		return nil
	}
	n, err := writeNow(w.sock, w.buf.B)
	if err != nil {
		return net.ErrClosed
	}
	w.buf.B = w.buf.B[:copy(w.buf.B, w.buf.B[n:])]
	if len(w.buf.B) > w.c.s.opts.highWater {
		return ErrBackpressure
	}
	return nil
}

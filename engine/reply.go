package engine

import (
	"errors"
	"fmt"
	"net"
	"time"
	"unsafe"

	"github.com/valyala/bytebufferpool"

	"github.com/pktipc/pktipc/frame"
)

// replyFlushSize is how many encoded reply bytes collect before they are
// handed to the socket in the middle of a handler: large enough that a
// streamed reply costs few system calls, small enough to bound the copy.
const replyFlushSize = 256 << 10

// replyBatchBytes bounds the inline replies that wait in the loop's reply
// buffer for the replies to the requests behind them (process), so that
// pipelined requests are answered in one write.
const replyBatchBytes = 64 << 10

// streamFlushAfter: a pooled handler's Write is sent at once when the last
// send was at least this long ago, so a handler that produces slowly (git's
// "slow": a line every 10 ms) streams, while bursts of small writes (git's
// "chunk") are coalesced into few writes.
const streamFlushAfter = int64(time.Millisecond)

var bufPool bytebufferpool.Pool

// A ReplyWriter sends a handler's reply. Each Write becomes its own
// pkt-line packets (split at 65516 bytes), exactly as each call of git's
// reply_cb does; the server appends the terminating flush after the handler
// returns. Only the handler that received it may use it, and only until the
// handler returns.
type ReplyWriter struct {
	c       *conn
	buf     *bytebufferpool.ByteBuffer
	err     error // sticky: once a write failed, the reply is abandoned
	n       int64 // payload bytes written
	inline  bool
	sock    int // a one-shot reply's socket (oneshot.go), when oneShot
	oneShot bool
	waits   bool  // a one-shot reply on a worker: writes wait for room
	base    int   // outbound bytes queued when an inline reply began
	start   int   // where an inline reply began in the loop's buffer, behind batched replies
	sentAt  int64 // when a pooled reply last went to the event loop

	// On a ring connection (ringreply.go): its state, the record reserved
	// and not yet committed (nil: none), and how much of it the reply
	// filled (-1: Reserve gave it out and Commit has not come).
	ring *ringConn
	rres []byte
	rlen int

	scratch    []byte // Reserve's buffer where it cannot lend the transport's
	scratchOut bool   // the last Reserve gave out scratch, not a ring record
	reserved   bool   // a Reserve that no Commit has ended: Commit has a buffer to send

	// oneWay: the request is a one-way message (Client.Post), whose reply
	// nobody reads; every write is dropped.
	oneWay bool
}

// OneWay reports whether the request is a one-way message (Client.Post):
// its client reads no reply, and what the handler writes is dropped, so a
// handler may skip building a reply. The handler that received w calls it.
func (w *ReplyWriter) OneWay() bool { return w.oneWay }

// Write sends p as the next part of the reply. It copies p, so the caller
// may reuse p at once. On the event loop (WithInlineHandlers) it never
// blocks and returns ErrBackpressure when the peer is not reading; on a
// worker it blocks while the connection's outbound buffer is above its
// high-water mark, until the write timeout. On a worker, writes that follow
// the previous send within a millisecond are held and sent together (call
// Flush to send at once); on the loop everything goes out when the handler
// returns or 256 KiB have collected. On a shared-memory ring it blocks
// while the reply ring is full, until the write timeout, except on the
// server's ring watch, where it never blocks (WithInlineHandlers). After
// an error the reply is abandoned: the client gets no terminator and sees
// an incomplete reply.
func (w *ReplyWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if len(p) == 0 {
		return 0, nil // git writes nothing for an empty chunk, never 0004
	}
	if w.oneWay {
		w.n += int64(len(p))
		return len(p), nil
	}
	if w.ring != nil {
		return w.writeRing(p)
	}
	w.buf.B = frame.AppendData(w.buf.B, p)
	w.n += int64(len(p))
	if len(w.buf.B) >= replyFlushSize || (!w.inline && w.c.s.now()-w.sentAt >= streamFlushAfter) {
		if err := w.flush(); err != nil {
			w.err = err
			return 0, err
		}
	}
	return len(p), nil
}

// WriteUncopied is Write without Write's copy of a large p (32 KiB or
// more): p's packets go to the socket from where p lies, with writev and
// their headers beside them, and only what the socket does not take at
// once is copied (on the event loop) or waited for (on a worker). p must
// not change until WriteUncopied returns, and is free afterwards, as with
// Write. Unlike Write's, its argument escapes to the heap: pass memory
// that lives there anyway (the request, a buffer the handler keeps), and
// use Write for small parts and buffers on the stack. On a shared-memory
// ring, and for small p, it is Write.
func (w *ReplyWriter) WriteUncopied(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if writevSupported && w.ring == nil && !w.oneShot && len(p) >= gatherMin {
		if w.inline {
			return w.writeGathered(p)
		}
		if w.c.direct && !w.c.rescued() {
			return w.writeDirectGathered(p)
		}
	}
	return w.Write(p)
}

// Flush sends what the reply holds so far. On the event loop it writes
// what the socket takes at once and keeps the rest for when the peer
// reads (the connection's tail), never waiting.
func (w *ReplyWriter) Flush() error {
	if w.err != nil {
		return w.err
	}
	if w.oneWay {
		return nil
	}
	if w.ring != nil {
		if err := w.flushRing(); err != nil {
			w.err = err
			return err
		}
		return nil
	}
	if err := w.flush(); err != nil {
		w.err = err
		return err
	}
	return nil
}

// WriteString is Write for a string.
func (w *ReplyWriter) WriteString(s string) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if len(s) == 0 {
		return 0, nil
	}
	// Write only reads p and copies it, so viewing the string's bytes
	// without a copy is safe and keeps WriteString free of allocations.
	return w.Write(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// Reserve returns a buffer of n bytes in which the handler builds the next
// part of its reply; Commit sends the first bytes of it. On a ring
// connection, when n fits one record of the reply ring, the buffer is the
// ring's shared memory itself: the reply is written where the client
// reads it, with no copy at all (unless the handler runs on the ring
// watch once this reply's ring lacked room: then it is the reply's spill,
// sent later, and Reserve can fail with ErrBackpressure;
// WithInlineHandlers). Elsewhere it is a scratch buffer that
// Commit copies as Write does. The buffer is valid until Commit, the next
// Reserve or Write, or the handler's return; a Reserve without Commit
// sends nothing.
func (w *ReplyWriter) Reserve(n int) ([]byte, error) {
	if w.err != nil {
		return nil, w.err
	}
	if n < 0 {
		return nil, fmt.Errorf("engine: Reserve(%d): negative size", n)
	}
	if w.ring != nil && !w.oneWay && n <= w.ring.out.MaxRecord() {
		p, err := w.reserveRing(n)
		if err != nil {
			w.err = err
		}
		w.scratchOut, w.reserved = false, err == nil
		return p, err
	}
	if w.ring != nil && w.rres != nil && w.rlen < 0 {
		w.rlen = 0 // a ring record reserved and not committed: it stays empty
	}
	w.scratchOut, w.reserved = true, true
	if cap(w.scratch) < n {
		w.scratch = make([]byte, n)
	}
	w.scratch = w.scratch[:n]
	return w.scratch, nil
}

// Commit sends the first n bytes of the buffer the last Reserve returned
// as the next part of the reply, as Write would send them. Without a
// Reserve since the last Commit it sends nothing and returns an error, as
// it does when the buffer was a ring record that a Write since gave up:
// the bytes it would send are not the handler's.
func (w *ReplyWriter) Commit(n int) error {
	if w.err != nil {
		return w.err
	}
	if !w.reserved {
		return errors.New("engine: Commit without a Reserve")
	}
	w.reserved = false
	if w.ring != nil && !w.scratchOut {
		if w.rres == nil || w.rlen >= 0 {
			return errors.New("engine: Commit after a Write gave up the reserved buffer")
		}
		if n < 0 || n > len(w.rres) {
			return fmt.Errorf("engine: Commit(%d) beyond the %d bytes reserved", n, len(w.rres))
		}
		w.rlen = n
		w.n += int64(n)
		return nil
	}
	if n < 0 || n > len(w.scratch) {
		return fmt.Errorf("engine: Commit(%d) beyond the %d bytes reserved", n, len(w.scratch))
	}
	_, err := w.Write(w.scratch[:n])
	return err
}

// Len returns how many payload bytes the reply holds so far.
func (w *ReplyWriter) Len() int64 { return w.n }

func (w *ReplyWriter) begin(inline bool) {
	if inline {
		// The loop writes or copies an inline reply before it serves
		// anything else, so one buffer per loop serves them all: no pool,
		// whose calibration drops buffers of the sizes it sees least.
		// Inline replies flush at replyFlushSize, which bounds it.
		l := w.c.loop
		if l.reply == nil {
			l.reply = new(bytebufferpool.ByteBuffer)
		}
		w.buf = l.reply
	} else {
		w.buf = bufPool.Get()
	}
	if !inline || !w.c.batched {
		w.buf.B = w.buf.B[:0]
	}
	w.start = len(w.buf.B)
	w.err, w.n, w.inline, w.base, w.oneShot, w.reserved = nil, 0, inline, 0, false, false
	if inline {
		w.base = w.c.outbound()
	} else {
		w.sentAt = w.c.s.now() - streamFlushAfter // the first write goes out at once
	}
}

func (w *ReplyWriter) release() {
	if w.inline || w.oneShot {
		w.buf, w.oneShot, w.waits = nil, false, false // the loop's, the accept loop's or a worker's
		return
	}
	if w.buf != nil {
		// bytebufferpool sizes what it keeps by len at Put; the reply was
		// sent and truncated, so show it the capacity the reply needed, or
		// it learns that replies are empty and drops every grown buffer.
		w.buf.B = w.buf.B[:cap(w.buf.B)]
		bufPool.Put(w.buf)
		w.buf = nil
	}
}

func (w *ReplyWriter) flush() error {
	if len(w.buf.B) == 0 {
		return nil
	}
	switch {
	case w.oneShot:
		return w.flushOneShot()
	case w.inline:
		return w.flushInline()
	}
	_, err := w.c.handOff(w.buf.B, false)
	w.buf.B = w.buf.B[:0] // gnet wrote or copied it
	w.sentAt = w.c.s.now()
	return err
}

// flushInline runs on the event loop: it writes what the socket takes and
// copies the rest into the connection's tail (tail.go).
func (w *ReplyWriter) flushInline() error {
	c := w.c
	if c.closed.Load() {
		return net.ErrClosed
	}
	err := c.sendInline(w.buf.B)
	w.buf.B = w.buf.B[:0]
	w.start = 0
	if err != nil || c.closed.Load() {
		return net.ErrClosed // the loop closes the connection on ours (gnet on its own)
	}
	// A reply may queue up to the mark beyond what was queued when it
	// began; no request is served while more than the mark is queued
	// (afterReply). So one connection never holds more than twice the mark,
	// and the replies of one batch (replyBatchBytes) that the loop writes
	// before it looks again.
	if c.outbound()-w.base > c.s.opts.highWater {
		return ErrBackpressure
	}
	return nil
}

// writeGathered sends a large part of an inline reply from where it lies:
// what the reply holds so far (batched replies before it included), then
// p's packets, in writev calls, with nothing copied that the socket takes at
// once. What it does not take is copied into the connection's tail, so p
// is free when Write returns. It runs on the event loop.
func (w *ReplyWriter) writeGathered(p []byte) (int, error) {
	c := w.c
	if c.closed.Load() {
		w.err = net.ErrClosed
		return 0, w.err
	}
	g := &c.loop.gw
	g.set(w.buf.B, p, false)
	var err error
	if c.outbound() == 0 {
		_, err = g.writeSome(uintptr(c.gc.Fd()), &c.loop.iov)
	}
	if err == nil {
		g.rest(func(b []byte) {
			if err == nil {
				err = c.sendInline(b)
			}
		})
	}
	g.release()
	w.buf.B = w.buf.B[:0]
	w.start = 0
	if err != nil || c.closed.Load() {
		w.err = net.ErrClosed // gnet closes the connection on its write errors; the loop does on ours
		return 0, w.err
	}
	w.n += int64(len(p))
	if c.outbound()-w.base > c.s.opts.highWater {
		w.err = ErrBackpressure
		return 0, w.err
	}
	return len(p), nil
}

// writeDirectGathered sends a large part of a pooled reply from where it
// lies, on the worker's duplicate of the socket: what the reply holds so
// far, then p's packets, in writev calls, waiting for room until the write
// timeout. It runs on the worker.
func (w *ReplyWriter) writeDirectGathered(p []byte) (int, error) {
	c := w.c
	if err := c.writeTailFirst(nil); err != nil {
		w.err = err
		return 0, err
	}
	c.wgw.set(w.buf.B, p, false)
	err := c.writeDirectGathered()
	c.wgw.release()
	w.buf.B = w.buf.B[:0]
	w.sentAt = c.s.now()
	if err != nil {
		w.err = err
		return 0, err
	}
	w.n += int64(len(p))
	return len(p), nil
}

// rescued reports whether onClose left a duplicate of the socket for a
// half-closed peer (the reply then goes through handOff).
func (c *conn) rescued() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rescue != nil
}

// writeRescued finishes a pooled reply on a connection that gnet closed
// because the peer half-closed it (shutdown(SHUT_WR) after its request):
// git still answers such a peer, so the reply goes out through a duplicate
// of the socket, bounded by the write timeout.
func (c *conn) writeRescued(rc *net.UnixConn, b []byte) error {
	if d := c.s.opts.writeTimeout; d > 0 {
		_ = rc.SetWriteDeadline(time.Now().Add(d))
	}
	_, err := rc.Write(b)
	return err
}

package engine

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/valyala/bytebufferpool"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/uds"
)

// The git-style path for handlers that run on the workers. The accept
// loop, which must not block, takes the whole request off the bare
// descriptor as for an inline handler, and gives both to a worker; the
// worker runs the handler, writes the reply with plain system calls and
// closes the descriptor. Nothing is duplicated or enrolled in an event
// loop, so the connection costs what it costs a blocking C server, plus
// one hand-off to a worker; only a reply the socket does not take at
// once waits for room in Go's netpoller, on a duplicate, within the write
// deadline. Such a connection counts against the caps from its accept
// to its close. The reaper (reapShots) ends one at its handler deadline
// and cancels the handler of one whose client hung up (a tick's poll of
// the descriptors, as no event loop watches them; a half close is no
// hang-up: git's client may shut its writing side and still read), and
// Close ends every one (shotSet.close).

// shotSet owns the descriptors of pooled one-shot connections while
// workers serve them.
//
// Invariant (connSet's mu): a connection is in conns from its hand-off
// until its worker is done with the descriptor, which is closed only after
// the worker took it out (remove); so the reaper and close, which shut a
// descriptor down only under mu and only while it is in conns, never
// reach a closed (or reused) number.
type shotSet struct {
	connSet
	polled []*conn // the reaper's scratch: conns in the order of poll
	poll   hangupPoll
}

// endShot cancels c's handler with cause and shuts its socket down, so that a
// worker waiting to write gives up and the client sees the end at once.
// Under mu, with c in conns.
func (c *conn) endShot(cause error) {
	c.cancelHandler(cause)
	_ = sysShutdown(c.shotFD)
}

// close ends every connection still served: no new one is added.
func (ss *shotSet) close() {
	ss.closeAll(func(c *conn) { c.endShot(ErrServerClosed) })
}

// relieveTries bounds the reliefs a pooled one-shot request asks for
// before it does without.
const relieveTries = 4

// poolOneShot hands the whole request msg, the first end bytes of fd's
// input, to a worker with fd, which it owns from the call on. On the
// accept loop.
func (s *Server) poolOneShot(fd int, cred uds.Cred, msg []byte, end int) {
	if !s.admitCred(cred, func() { _ = sysClose(fd) }) {
		return
	}
	c := s.newShotConn(Peer{ID: s.stats.accepted.Add(1), Cred: cred})
	c.shot, c.shotFD, c.shotIn = true, fd, end
	c.req = bufPool.Get()
	c.req.B = append(c.req.B[:0], msg...) // msg lies in the accept loop's buffers
	c.reqMsg = c.req.B
	// The copy waits for a worker: the memory budget covers the buffer
	// holding it. Without room, the connection that holds the most is
	// closed for it, as for a connection on a loop (relieve): a small
	// request is never dropped for a larger one's sake. Only when this
	// request would be the largest is it closed without a reply, as one
	// over the queue would be (relieve counts it). Room is looked for
	// again after each relief: one that lost a race with the victim's own
	// loop freed nothing.
	need := int64(cap(c.req.B))
	for tries := 0; !s.budget.makeRoom(need); tries++ {
		if tries == relieveTries || !s.relieve(c, need) {
			s.dropShot(c, &s.oneshot.sink)
			return
		}
	}
	c.reqHeld = cap(c.req.B)
	s.budget.used.Add(int64(c.reqHeld))
	// Whole before the reaper can see it: context, deadline.
	c.prepareHandler(false)
	c.setDeadline(s.now(), whyHandler)
	if s.stopping.Load() || !s.shots.add(c) {
		s.dropShot(c, &s.oneshot.sink)
		return
	}
	s.stats.requests.Add(1)
	s.stats.oneShot.Add(1)
	select {
	case s.jobs <- c:
	default:
		// Unreachable while the queue holds a request per admitted
		// connection; if it were full, do as git does: close without a
		// reply.
		s.shots.remove(c)
		s.dropShot(c, &s.oneshot.sink)
		s.stats.overloaded.Add(1)
	}
}

// dropShot ends a pooled one-shot connection that is out of the set (or
// never entered it): its request, descriptor (read first, with sink: see
// closeShot), handler context and count.
func (s *Server) dropShot(c *conn, sink *[]byte) {
	s.dropShotRequest(c)
	closeShot(c.shotFD, c.shotIn, sink)
	c.cancelHandler(net.ErrClosed)
	s.adm.unadmit(c.peer.Cred)
}

// dropShotRequest releases a pooled one-shot request's copy and gives its
// bytes back to the budget; once or more. On the accept loop before the
// hand-off, on the worker after.
func (s *Server) dropShotRequest(c *conn) {
	s.budget.used.Add(-int64(c.reqHeld))
	c.reqHeld = 0
	c.dropRequest()
}

// serveShot runs a pooled one-shot request's handler and finishes its
// connection, with buf and sink, the worker's, for the reply and for
// reading the request off the socket. On the worker.
func (s *Server) serveShot(c *conn, buf *shotBuf, sink *[]byte) {
	w := &c.reply
	w.beginOneShot(&buf.ByteBuffer, c.shotFD)
	// A worker's reply: parts go out as the handler writes them (those
	// within a millisecond of the last send together), as on the loops'
	// pooled path, not all at its end as the accept loop's.
	w.inline, w.waits = false, true
	w.sentAt = s.now() - streamFlushAfter
	// A connection still queued when the server began to stop (Shutdown,
	// a quit) or closed is closed unserved, as git closes the connections
	// it has not started on: a stop waits for requests in progress, not
	// for a queue.
	started := c.ctx.Err() == nil && !s.stopping.Load()
	var herr error
	panicked := false
	if started {
		herr, panicked = s.call(c, c.reqMsg)
	}
	s.dropShotRequest(c)
	// A handler whose context ended (its deadline, Close) gets no
	// terminator, as on the loops: the client must not take a reply cut
	// short for a whole one.
	if started && !panicked && w.err == nil && c.ctx.Err() == nil {
		if errors.Is(herr, ErrQuit) {
			s.requestQuit()
		}
		w.buf.B = frame.AppendFlush(w.buf.B)
		_ = s.writeShot(c, w.buf.B)
	}
	w.release()
	buf.done(w.n)
	s.shots.remove(c)
	if c.shotWait != nil {
		_ = c.shotWait.Close()
		c.shotWait = nil
	}
	s.dropShot(c, sink)
}

// shotBuf is the buffer the accept loop, or a worker, writes its one-shot
// replies in. One grown for a large reply (over shotReplyKeep) is kept
// while large replies keep coming, since a fresh one for each would be
// allocated, cleared and collected every time, and dropped after
// shotBufSmallRuns small replies in a row, so that a burst of large
// replies leaves no large buffer behind for long. Its owner alone uses it.
type shotBuf struct {
	bytebufferpool.ByteBuffer
	small int // small replies in a row while the buffer is large
}

const (
	shotReplyKeep    = 64 << 10
	shotBufSmallRuns = 64
)

// done ends a reply of n payload bytes (a worker's went out in parts,
// so B does not show its size).
func (b *shotBuf) done(n int64) {
	switch {
	case cap(b.B) <= shotReplyKeep:
	case n > shotReplyKeep:
		b.small = 0
	default:
		if b.small++; b.small >= shotBufSmallRuns {
			b.B, b.small = nil, 0
		}
	}
	b.B = b.B[:0]
}

// writeShot writes all of b on c's one-shot socket; when the socket is
// full, it waits for room in Go's netpoller, on a duplicate of the socket
// made the first time (c.shotWait), up to the write timeout: a worker
// waiting for a slow reader holds no thread. On the worker.
func (s *Server) writeShot(c *conn, b []byte) error {
	n, err := writeNow(c.shotFD, b)
	if err != nil || n == len(b) {
		return err
	}
	if c.shotWait == nil {
		dup, err := sysDup(c.shotFD)
		if err != nil {
			return err
		}
		if c.shotWait, err = fdConn(dup); err != nil {
			return err
		}
	}
	if d := s.opts.writeTimeout; d > 0 {
		_ = c.shotWait.SetWriteDeadline(time.Now().Add(d))
	}
	if _, err = c.shotWait.Write(b[n:]); errors.Is(err, os.ErrDeadlineExceeded) {
		s.stats.timeouts[whyWrite].Add(1)
	}
	return err
}

// reapShots ends the pooled one-shot connections whose handler deadline
// passed, and cancels the handlers of those whose client hung up. On the
// reaper.
func (s *Server) reapShots(now int64) {
	d := int64(s.opts.handlerTimeout)
	ss := &s.shots
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.conns) == 0 {
		return
	}
	ss.polled = ss.polled[:0]
	for c := range ss.conns {
		if c.expired.Load() != 0 {
			continue // ended already
		}
		if d > 0 && now-c.dl.load().since >= d && c.expired.CompareAndSwap(0, int32(whyHandler)+1) {
			s.stats.timeouts[whyHandler].Add(1)
			c.endShot(whyHandler.exceeded())
			continue
		}
		ss.polled = append(ss.polled, c)
	}
	gone := ss.poll.check(ss.polled)
	for i, c := range ss.polled {
		if gone[i] && c.expired.CompareAndSwap(0, -1) {
			c.cancelHandler(errPeerGone)
		}
	}
	clear(ss.polled)
}

// errPeerGone is the cause a pooled one-shot handler's context gets when
// its client hung up.
var errPeerGone = fmt.Errorf("engine: the client closed the connection: %w", net.ErrClosed)

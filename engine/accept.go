package engine

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/pktipc/pktipc/uds"
)

// Accept back-off on EMFILE/ENFILE and other resource errors (as net/http
// does: a full descriptor table clears as other connections close).
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// acceptLoop accepts connections until the server stops, backing off
// while accepting or enrolling fails, and passes each to route. It is the
// accept goroutine, started by Serve.
func (s *Server) acceptLoop() {
	defer s.wg.Done()
	defer close(s.acceptExit)
	spare := openSpare()
	defer func() {
		if spare != nil {
			_ = spare.Close()
		}
	}()
	var delay time.Duration
	for {
		fd, cred, err := s.ln.AcceptFD()
		if err != nil {
			if s.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			if fdExhausted(err) {
				s.stats.acceptExhausted.Add(1)
				spare = s.shed(spare)
			}
			delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
			if s.logAcc.allow(s.now()) {
				s.log.Warn("engine: accept failed; backing off", "err", err, "delay", delay)
			}
			if !s.sleep(delay) {
				return
			}
			continue
		}
		delay = 0
		if fdErr := s.route(fd, cred); fdErr {
			delay = acceptBackoffMin
			if !s.sleep(delay) {
				return
			}
		}
	}
}

// route decides where a new connection goes: closed at once (over a cap
// with nothing to evict, or gone already), served here on its bare
// descriptor (its whole request came with it: oneshot.go), into the lobby
// (no request yet, near a cap: lobby.go), or to an event loop; the last
// two, and ring connections, get a net.UnixConn first. It reports whether
// that, or enrolling, failed for lack of descriptors. On the accept loop,
// which owns fd.
func (s *Server) route(fd int, cred uds.Cred) (fdErr bool) {
	pressured, full := s.adm.crowded(cred.UID)
	pressured = pressured || s.lobby.waiting(cred.UID)
	if full { // nothing to evict: whatever it sends, it cannot come in
		s.stats.overCap.Add(1)
		_ = sysClose(fd)
		return false
	}
	verdict, end := s.peekNew(fd)
	if verdict == peekWait && !pressured {
		// git's client writes its request right after connecting: a
		// moment's wait keeps it on the git-style path. It ends when
		// anyone else waits to be accepted: a burst of silent
		// connections must not slow the loop down.
		verdict, end = s.awaitRequest(fd)
	}
	switch {
	case verdict == peekGone: // git's probe: dropped silently
		s.stats.accepted.Add(1)
		_ = sysClose(fd)
		return false
	case verdict == peekReady:
		if ask, ok := s.peekedRingHello(end); ok && s.opts.persistent {
			return s.adoptRing(fd, cred, end, ask)
		}
		if s.serveOneShot(fd, cred, end) {
			return false
		}
	case verdict == peekWait && pressured:
		uc, err := fdConn(fd)
		if err != nil {
			return s.connFailed(err)
		}
		if !s.enterLobby(uc, cred) {
			_ = uc.Close()
		}
		return false
	}
	uc, err := fdConn(fd)
	if err != nil {
		return s.connFailed(err)
	}
	// A whole request that was not served here (a handshake, say) is
	// vouched for: it is the loop's to read, not a silent client's.
	return s.admitAndEnroll(uc, cred, verdict == peekReady)
}

// fdConn makes a net.UnixConn of an accepted descriptor, which it closes
// (the conn holds a duplicate).
func fdConn(fd int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), "")
	c, err := net.FileConn(f)
	_ = f.Close()
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		_ = c.Close()
		return nil, fmt.Errorf("engine: accepted a %T", c)
	}
	return uc, nil
}

// connFailed counts a connection lost because fdConn failed, and reports
// whether the descriptor table is full (the accept loop backs off).
func (s *Server) connFailed(err error) (fdErr bool) {
	if fdExhausted(err) {
		s.stats.acceptExhausted.Add(1)
		return true
	}
	if s.logAcc.allow(s.now()) {
		s.log.Warn("engine: a new connection failed", "err", err)
	}
	return false
}

// admitAndEnroll counts uc against the caps (evicting a connection without
// a whole request at a cap) and hands it to an event loop, or closes it;
// vouched says that uc's whole first request was seen in its input, so
// that it is never evicted (conn.vouched). It reports whether enrolling
// failed for lack of descriptors. It runs on the accept loop and on lobby
// goroutines.
func (s *Server) admitAndEnroll(uc *net.UnixConn, cred uds.Cred, vouched bool) (fdErr bool) {
	if !s.admitNew(uc, cred) {
		return false
	}
	c := s.newConn(Peer{ID: s.stats.accepted.Add(1), Cred: cred})
	c.vouched = vouched
	// gnet picks the loop; any of them may be in a solo wait.
	if err := s.enroll(uc, c); err != nil {
		// EnrollContext closed uc.
		s.adm.unadmit(cred)
		if fdExhausted(err) {
			s.stats.acceptExhausted.Add(1)
			return true
		}
	}
	return false
}

// admitNew counts a new connection of cred against the caps, closing the
// connection that admission evicts to make room; false means uc was
// refused, and closed. Any goroutine.
func (s *Server) admitNew(uc *net.UnixConn, cred uds.Cred) bool {
	return s.admitCred(cred, func() { _ = uc.Close() })
}

// admitCred is admitNew for any connection: refuse closes it. Any
// goroutine.
func (s *Server) admitCred(cred uds.Cred, refuse func()) bool {
	ok, victim := s.adm.admit(cred)
	if victim != nil {
		s.stats.evicted.Add(1)
		_ = victim.gc.Close()
	}
	if !ok {
		s.stats.overCap.Add(1) // counted before the client can see the close
		refuse()
		return false
	}
	return true
}

// shed implements the spare-descriptor trick: with the
// table full, free the spare, accept the waiting client and close it at
// once so it gets a prompt EOF instead of hanging, then re-reserve.
func (s *Server) shed(spare *os.File) *os.File {
	if spare == nil {
		return openSpare()
	}
	_ = spare.Close()
	if s.ln.SetDeadline(time.Now().Add(time.Millisecond)) == nil {
		if uc, _, err := s.ln.AcceptUnix(); err == nil {
			s.stats.shed.Add(1)
			_ = uc.Close()
		}
		_ = s.ln.SetDeadline(time.Time{})
	}
	return openSpare()
}

func openSpare() *os.File {
	f, err := os.Open(os.DevNull)
	if err != nil {
		return nil
	}
	return f
}

// sleep waits d unless the server stops first.
func (s *Server) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.stopCh:
		return false
	case <-t.C:
		return true
	}
}

// rateLimit allows one event per second.
type rateLimit struct{ last atomic.Int64 }

func (r *rateLimit) allow(now int64) bool {
	last := r.last.Load()
	if last != 0 && now-last < int64(time.Second) {
		return false
	}
	return r.last.CompareAndSwap(last, now)
}

package engine

import (
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/uds"
)

// The lobby. Under pressure (a uid's connections, or all of them, at three
// quarters of their cap) a new connection joins an event loop at once only
// if its request is already there; otherwise it waits in the lobby, parked
// in Go's netpoller, until it shows a whole request, and is closed if it
// has not within lobbyWait. A client
// that has written its request (every git client, and pktipc's handshake)
// leaves the lobby at once and is admitted, evicting a connection that has
// not completed a request if a cap is reached; silent, partial and
// trickling clients never cost a loop anything, and a client that
// reconnects whenever it is closed is held for lobbyWait each time instead
// of churning through the loops. While a uid has connections waiting, its
// newcomers keep coming to the lobby, even if its loops' share dropped: the
// crowd stays out of the loops. The lobby holds twice as many connections
// as the caps allow on the loops; a newcomer to a full lobby takes the
// place of the oldest waiter of its uid (or of any uid, when the lobby is
// full in total).
const (
	// lobbyWait is how long, on average, a connection may wait in the
	// lobby for its request: as long as the first-byte deadline under
	// pressure, and long enough that a crowd reconnecting whenever it is
	// closed spends most of its time waiting, not reconnecting.
	lobbyWait = time.Duration(pressureFirstByteTimeout)
	// lobbyPeek is how much of a waiting connection's input is looked at:
	// a request that fills it with well-formed packets is taken as a
	// large request on its way, and admitted. Small, because every waiter
	// holds one on its stack.
	lobbyPeek = 512
	// lobbyShare: the lobby holds twice as many connections as the caps
	// allow on the loops. A waiter costs a descriptor and a parked
	// goroutine (about 10 KiB); a crowd larger than the lobby churns,
	// each newcomer closing the oldest waiter.
	lobbyShare = 2
)

// lobby owns the connections that wait under pressure.
//
// Invariant (mu): every waiter is in the list (oldest first) and counted
// in perUID and n until its goroutine takes it out with leave; evict closes
// a waiter's socket, which ends its wait, and its goroutine then leaves.
// closed is set once when the server stops; after it, enter refuses.
type lobby struct {
	maxTotal, maxPerUID int

	mu         sync.Mutex
	head, tail *waiter
	n          int
	perUID     map[uint32]int
	closed     bool
	wg         sync.WaitGroup // one per waiter goroutine
}

type waiter struct {
	uc         *net.UnixConn
	cred       uds.Cred
	prev, next *waiter
	gone       bool // left the list
}

func newLobby(maxTotal, maxPerUID int) *lobby {
	return &lobby{maxTotal: lobbyShare * maxTotal, maxPerUID: lobbyShare * maxPerUID, perUID: make(map[uint32]int)}
}

// waiting reports whether connections of uid wait in the lobby. Any
// goroutine.
func (l *lobby) waiting(uid uint32) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.perUID[uid] > 0
}

// enter puts uc in the lobby and starts its wait; it reports false when
// the server is stopping (the caller closes uc). Runs on the accept loop.
func (s *Server) enterLobby(uc *net.UnixConn, cred uds.Cred) bool {
	l := s.lobby
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	var out *waiter
	switch {
	case l.perUID[cred.UID] >= l.maxPerUID:
		for w := l.head; w != nil; w = w.next {
			if w.cred.UID == cred.UID {
				out = w
				break
			}
		}
	case l.n >= l.maxTotal:
		out = l.head
	}
	if out != nil {
		l.unlinkLocked(out)
	}
	w := &waiter{uc: uc, cred: cred, prev: l.tail}
	if l.tail != nil {
		l.tail.next = w
	} else {
		l.head = w
	}
	l.tail = w
	l.n++
	l.perUID[cred.UID]++
	l.wg.Add(1)
	l.mu.Unlock()
	if out != nil {
		s.stats.lobbyClosed.Add(1)
		_ = out.uc.Close() // its goroutine sees the close and ends
	}
	s.stats.lobbied.Add(1)
	go s.wait(w)
	return true
}

// wait runs a waiter's goroutine: it waits for a whole request, then
// admits the connection to a loop, or closes it.
func (s *Server) wait(w *waiter) {
	l := s.lobby
	defer l.wg.Done()
	// Waits end at spread-out times, so that a crowd that reconnects when
	// closed does not come back all at once and overflow the backlog.
	wait := lobbyWait/2 + rand.N(lobbyWait)
	ok := waitForRequest(w.uc, time.Now().Add(wait))
	l.mu.Lock()
	evicted := w.gone
	l.unlinkLocked(w)
	closed := l.closed
	l.mu.Unlock()
	if !ok || evicted || closed {
		if !evicted {
			s.stats.lobbyClosed.Add(1)
		}
		_ = w.uc.Close()
		return
	}
	s.stats.lobbyAdmitted.Add(1)
	s.admitAndEnroll(w.uc, w.cred)
}

func (l *lobby) unlinkLocked(w *waiter) {
	if w.gone {
		return
	}
	w.gone = true
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		l.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		l.tail = w.prev
	}
	w.prev, w.next = nil, nil
	l.n--
	if l.perUID[w.cred.UID]--; l.perUID[w.cred.UID] <= 0 {
		delete(l.perUID, w.cred.UID)
	}
}

// close empties the lobby and waits for its goroutines: no waiter is
// admitted after it. Runs once, while the server stops.
func (l *lobby) close() {
	l.mu.Lock()
	l.closed = true
	var socks []*net.UnixConn
	for w := l.head; w != nil; w = w.next {
		socks = append(socks, w.uc)
	}
	l.mu.Unlock()
	for _, uc := range socks {
		_ = uc.Close()
	}
	l.wg.Wait()
}

// waitForRequest waits until uc's input holds a whole request, or
// lobbyPeek bytes of well-formed packets (a large request on its way); it
// reports false at the deadline, at a malformed packet, and when the peer
// hangs up or the socket is closed. Nothing is consumed.
func waitForRequest(uc *net.UnixConn, deadline time.Time) bool {
	rc, err := uc.SyscallConn()
	if err != nil || uc.SetReadDeadline(deadline) != nil {
		return false
	}
	var buf [lobbyPeek]byte
	verdict := peekWait
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, err := recvPeek(int(fd), buf[:])
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN:
				return false // the netpoller waits for more
			case err != nil || n == 0:
				verdict = peekGone
				return true
			}
			verdict = judgeRequest(buf[:n], n == len(buf))
			return verdict != peekWait
		}
	})
	_ = uc.SetReadDeadline(time.Time{})
	return err == nil && verdict == peekReady
}

type peekVerdict int

const (
	peekWait  peekVerdict = iota // well-formed so far; more is needed
	peekReady                    // a whole request, or a large one on its way
	peekBad                      // malformed
	peekGone                     // the peer hung up (git's probe), or the socket failed
)

// judgeRequest looks at the start of a connection's input, b; full says
// that b filled the peek buffer.
func judgeRequest(b []byte, full bool) peekVerdict {
	for {
		kind, _, n, err := frame.Decode(b)
		switch {
		case err != nil:
			return peekBad
		case kind == frame.NeedMore && full:
			return peekReady
		case kind == frame.NeedMore:
			return peekWait
		case kind != frame.Data || n == frame.HeaderSize:
			return peekReady // a flush, or another end of a message for git
		}
		b = b[n:]
	}
}

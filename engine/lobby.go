package engine

import (
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"time"

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
	// large request on its way, and admitted. Small, because a waiter
	// with a goroutine of its own holds one on its stack.
	lobbyPeek = 512
	// lobbyShare: the lobby holds twice as many connections as the caps
	// allow on the loops. A waiter costs a descriptor and a place in the
	// poller's set (a parked goroutine, about 10 KiB, where there is no
	// poller); a crowd larger than the lobby churns, each newcomer closing
	// the oldest waiter.
	lobbyShare = 2
)

// lobby owns the connections that wait under pressure.
//
// Invariant (mu): every waiter is in the list (oldest first) and counted
// in perUID and n until the goroutine that waits for it takes it out
// (settle), or a newcomer evicts it: it leaves the list, then its socket
// is closed. closed is set once when the server stops; after it, enter
// refuses.
//
// Where the platform allows (lobby_linux.go), one goroutine waits for
// every waiter (poll); elsewhere, or when the poller cannot be made, each
// waiter has a goroutine of its own parked in Go's netpoller (wait).
// Either way the goroutine that saw a waiter's wait end settles it.
type lobby struct {
	maxTotal, maxPerUID int

	mu         sync.Mutex
	head, tail *waiter
	n          int
	perUID     map[uint32]int
	closed     bool
	wg         sync.WaitGroup // the poller's goroutine, and one per waiter it does not hold
	poll       *lobbyPoll     // made at the first waiter; nil: a goroutine per waiter
	pollTried  bool
}

type waiter struct {
	uc         *net.UnixConn
	cred       uds.Cred
	until      time.Time // when its wait ends without a request
	fd         int32     // uc's descriptor, for the poller
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
	// Waits end at spread-out times, so that a crowd that reconnects when
	// closed does not come back all at once and overflow the backlog.
	w := &waiter{uc: uc, cred: cred, until: time.Now().Add(lobbyWait/2 + rand.N(lobbyWait)), fd: -1, prev: l.tail}
	if l.tail != nil {
		l.tail.next = w
	} else {
		l.head = w
	}
	l.tail = w
	l.n++
	l.perUID[cred.UID]++
	if !l.pollTried {
		l.pollTried = true
		l.poll = newLobbyPoll() // nil where it cannot be made
	}
	polled, startPoll := l.poll != nil && l.poll.add(w), false
	if polled && !l.poll.running {
		l.poll.running, startPoll = true, true
	}
	if !polled || startPoll {
		l.wg.Add(1)
	}
	l.mu.Unlock()
	if out != nil {
		s.stats.lobbyClosed.Add(1)
		_ = out.uc.Close() // its wait sees the close (or its poller drops it) and ends
	}
	s.stats.lobbied.Add(1)
	if startPoll {
		go s.pollLobby()
	}
	if !polled {
		go s.wait(w)
	}
	return true
}

// wait runs a waiter's own goroutine: it waits for a whole request, then
// settles w.
func (s *Server) wait(w *waiter) {
	defer s.lobby.wg.Done()
	s.settle(w, waitForRequest(w.uc, w.until))
}

// settle ends w's wait with what its input showed (v): it admits w's
// connection to a loop when that is a whole request (vouched for, see
// conn.vouched) or a large one on its way, and w is still in the lobby,
// else closes it, unless it was evicted, whose evictor closed it. On the
// goroutine that saw the wait end.
func (s *Server) settle(w *waiter, v peekVerdict) {
	l := s.lobby
	l.mu.Lock()
	evicted := w.gone
	l.unlinkLocked(w)
	closed := l.closed
	l.mu.Unlock()
	if evicted {
		return
	}
	if (v != peekReady && v != peekLarge) || closed {
		s.stats.lobbyClosed.Add(1)
		_ = w.uc.Close()
		return
	}
	s.stats.lobbyAdmitted.Add(1)
	s.admitAndEnroll(w.uc, w.cred, v == peekReady)
}

func (l *lobby) unlinkLocked(w *waiter) {
	if w.gone {
		return
	}
	w.gone = true
	if l.poll != nil {
		l.poll.remove(w)
	}
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
	if l.poll != nil {
		l.poll.interrupt()
	}
	l.mu.Unlock()
	for _, uc := range socks {
		_ = uc.Close()
	}
	l.wg.Wait()
	if l.poll != nil {
		l.poll.close()
	}
}

// waitForRequest waits until uc's input holds a whole request (peekReady),
// or lobbyPeek bytes of well-formed packets (peekLarge); it reports
// peekBad at a malformed packet, and peekGone at the deadline, when the
// peer hangs up and when the socket is closed. Nothing is consumed.
func waitForRequest(uc *net.UnixConn, deadline time.Time) peekVerdict {
	rc, err := uc.SyscallConn()
	if err != nil || uc.SetReadDeadline(deadline) != nil {
		return peekGone
	}
	var buf [lobbyPeek]byte
	verdict := peekWait
	err = rc.Read(func(fd uintptr) bool {
		verdict = peekRequest(int(fd), &buf)
		return verdict != peekWait // peekWait: the netpoller waits for more
	})
	_ = uc.SetReadDeadline(time.Time{})
	if err != nil {
		return peekGone
	}
	return verdict
}

// peekRequest looks at what the socket fd holds, without consuming it,
// into buf, and judges it (judgeWhole); peekGone when the peer hung up
// or the socket failed.
func peekRequest(fd int, buf *[lobbyPeek]byte) peekVerdict {
	for {
		n, err := recvPeek(fd, buf[:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return peekWait
		case err != nil || n == 0:
			return peekGone
		}
		v, _ := judgeWhole(buf[:n], n == len(buf))
		return v
	}
}

type peekVerdict int

const (
	peekWait  peekVerdict = iota // well-formed so far; more is needed
	peekReady                    // a whole request
	peekLarge                    // well-formed packets fill the look: a large request on its way
	peekBad                      // malformed
	peekGone                     // the peer hung up (git's probe), or the socket failed
)

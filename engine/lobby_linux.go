package engine

import (
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// lobbyTick is how often the lobby's poller looks for waits that ended
// without a request: waits last seconds, so ending them up to a tick late
// costs nothing, and the poller sleeps between ticks.
const lobbyTick = 50 * time.Millisecond

// lobbyPoll waits for every waiter of a lobby on one goroutine
// (Server.pollLobby), where a goroutine per waiter would cost a stack each
// for a crowd of silent connections. The waiters' sockets are in an epoll
// set of its own, edge-triggered: a socket reports once that bytes came or
// its peer hung up, and a look that finds half a request waits for the
// next bytes. The set's descriptor is readable while events wait in it,
// so the goroutine waits for it in Go's netpoller, with a deadline for the
// next tick, and holds no thread meanwhile.
//
// Invariant (lobby.mu): byFD maps the descriptor of every waiter in the
// set to it; a waiter leaves the set (remove) when it leaves the list,
// before its socket is closed or admitted, so a descriptor number the
// kernel gives out again never reaches a waiter that left. running says
// that the goroutine runs; the lobby's wg counts it. events and buf are
// the goroutine's alone.
type lobbyPoll struct {
	ep      int
	f       *os.File // ep, waited for in the netpoller
	rc      syscall.RawConn
	byFD    map[int32]*waiter
	running bool

	events [64]unix.EpollEvent
	buf    [lobbyPeek]byte
}

// newLobbyPoll makes the epoll set, or returns nil if it cannot (no
// descriptor left): waiters then wait on goroutines of their own.
func newLobbyPoll() *lobbyPoll {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	// Non-blocking before os.NewFile, which then hands it to the netpoller.
	if err := unix.SetNonblock(ep, true); err != nil {
		_ = unix.Close(ep)
		return nil
	}
	f := os.NewFile(uintptr(ep), "pktipc-lobby")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil
	}
	return &lobbyPoll{ep: ep, f: f, rc: rc, byFD: make(map[int32]*waiter)}
}

// add puts w's socket in the set; false if it cannot be (the caller gives
// w a goroutine instead). Under lobby.mu.
func (p *lobbyPoll) add(w *waiter) bool {
	rc, err := w.uc.SyscallConn()
	if err != nil {
		return false
	}
	if cerr := rc.Control(func(fd uintptr) { w.fd = int32(fd) }); cerr != nil {
		return false
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: w.fd}
	if err := unix.EpollCtl(p.ep, unix.EPOLL_CTL_ADD, int(w.fd), &ev); err != nil {
		w.fd = -1
		return false
	}
	p.byFD[w.fd] = w
	return true
}

// remove takes w's socket out of the set, if it is there. Under lobby.mu,
// before the socket is closed or handed on.
func (p *lobbyPoll) remove(w *waiter) {
	if w.fd < 0 || p.byFD[w.fd] != w {
		return
	}
	delete(p.byFD, w.fd)
	_ = unix.EpollCtl(p.ep, unix.EPOLL_CTL_DEL, int(w.fd), nil)
}

// interrupt wakes the goroutine at once, for the lobby's close. Under
// lobby.mu.
func (p *lobbyPoll) interrupt() { _ = p.f.SetReadDeadline(time.Unix(1, 0)) }

// close releases the set, once its goroutine has ended.
func (p *lobbyPoll) close() { _ = p.f.Close() }

// pollLobby is the lobby poller's goroutine: it settles each waiter whose
// socket shows a whole request (admitted), a bad one or a hang-up
// (closed), and, every tick, those whose wait ended; it ends when no
// waiter is left in the set, or the lobby closes.
func (s *Server) pollLobby() {
	l := s.lobby
	p := l.poll
	defer l.wg.Done()
	for {
		l.mu.Lock()
		if l.closed || len(p.byFD) == 0 {
			left := make([]*waiter, 0, len(p.byFD))
			for _, w := range p.byFD {
				left = append(left, w)
			}
			p.running = false
			l.mu.Unlock()
			for _, w := range left { // the lobby closed their sockets
				s.settle(w, peekGone)
			}
			return
		}
		l.mu.Unlock()
		_ = p.f.SetReadDeadline(time.Now().Add(lobbyTick))
		n := 0
		_ = p.rc.Read(func(uintptr) bool {
			n, _ = unix.EpollWait(p.ep, p.events[:], 0)
			return n > 0 // else the netpoller waits for the set, until the tick
		})
		for i := range max(n, 0) {
			fd := p.events[i].Fd
			l.mu.Lock()
			w := p.byFD[fd]
			l.mu.Unlock()
			if w == nil {
				continue // settled or evicted since
			}
			// An eviction may close the socket meanwhile; settle then
			// finds w gone and drops the look, which at worst was at a
			// socket that took the number since.
			if v := peekRequest(int(fd), &p.buf); v != peekWait {
				s.settle(w, v)
			}
		}
		s.settleExpired(p)
	}
}

// settleExpired closes the waiters of the set whose wait has ended. On the
// poller's goroutine.
func (s *Server) settleExpired(p *lobbyPoll) {
	l := s.lobby
	now := time.Now()
	var due []*waiter
	l.mu.Lock()
	for w := l.head; w != nil; w = w.next {
		if w.fd >= 0 && p.byFD[w.fd] == w && !now.Before(w.until) {
			due = append(due, w)
		}
	}
	l.mu.Unlock()
	for _, w := range due {
		s.settle(w, peekGone)
	}
}

//go:build linux

package events

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pktipc/pktipc/uds"
)

// loop is the platform part of a Loop.
//
// Ownership. Four kinds of state, four owners:
//   - callMu's holder, the one goroutine inside WaitEvent, owns evbuf, the
//     spin plan and the sleep fields, and alone sleeps on the epoll set;
//   - waitMu's holder (WaitEvent, except while it sleeps or spins, or a
//     goroutine in CloseConn, AddSwitch, Detach or Close) owns every
//     connection's read side, rearm, last, the context registration and
//     the actual close(2) of descriptors;
//   - mu guards the ready queue, the slot table, the counters, sleeping,
//     closed, the timers' settings and each conn's queued and closed
//     flags; it is never held across a system call that can block
//     (closed is written holding waitMu too, so either lock reads it);
//   - each conn's wmu guards its write side (see conn).
//
// Lock order: callMu, waitMu, a conn's wmu, mu. A goroutine posting an
// event from a write holds wmu and takes mu briefly.
type loop struct {
	opts options

	epfd     int
	parkfd   int // see parkInit; -1 until first needed
	parkFile *os.File
	parkRaw  syscall.RawConn
	sleepFn  func(uintptr) bool
	sleepN   int
	sleepErr error
	sleepDL  time.Time
	wakefd   int

	callMu  sync.Mutex // serialises WaitEvent callers; guards evbuf
	evbuf   []unix.EpollEvent
	waitMu  sync.Mutex
	rearm   []*conn // externals reported by the last WaitEvent, re-armed at the next
	last    time.Time
	ctxReg  context.Context
	ctxOff  func() bool
	scratch []byte // transform output, reused
	// sincePoll counts events returned since epoll was last asked;
	// roundLeft counts the queue items left of the round it started.
	sincePoll int
	roundLeft int
	spin      spinPlan

	mu       sync.Mutex
	slots    []*conn
	free     []int32
	seq      uint64
	q        queue
	nconns   int
	sleeping bool
	closed   bool
	capped   []*conn // listeners paused at the connection cap
	watchers sync.WaitGroup
	idle     time.Duration
	period   time.Duration
	nextTick time.Time
}

// slotBits is how many low bits of a ConnID give its slot.
const slotBits = 24

func newLoop(o options) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		unix.Close(wfd)
		unix.Close(epfd)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	l := &loop{opts: o, epfd: epfd, parkfd: -1, wakefd: wfd, evbuf: make([]unix.EpollEvent, 128), last: time.Now()}
	l.sleepFn = l.epollNow
	return l, nil
}

// parkInit makes the descriptor a Loop parks on in Go's netpoller: a
// second epoll set holding only the Loop's own, armed (one-shot) only
// while the Loop is parked, so that otherwise the runtime never hears of
// the Loop's traffic.
func (l *loop) parkInit() error {
	pfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("epoll_create1", err)
	}
	ev := unix.EpollEvent{Events: 0}
	if err := unix.EpollCtl(pfd, unix.EPOLL_CTL_ADD, l.epfd, &ev); err != nil {
		unix.Close(pfd)
		return os.NewSyscallError("epoll_ctl", err)
	}
	if err := unix.SetNonblock(pfd, true); err != nil {
		unix.Close(pfd)
		return os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(pfd), "events-park")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return err
	}
	l.parkfd, l.parkFile, l.parkRaw = pfd, f, rc
	return nil
}

// epollNow is the RawConn.Read callback of a park: a look that does not
// wait; false lets the netpoller wait.
func (l *loop) epollNow(uintptr) bool {
	l.sleepN, l.sleepErr = unix.EpollWait(l.epfd, l.evbuf, 0)
	if l.sleepErr == unix.EINTR {
		l.sleepN, l.sleepErr = 0, nil
	}
	return l.sleepN > 0 || l.sleepErr != nil
}

// threadSleepers counts the Loops of the process asleep in epoll_wait(2).
var threadSleepers atomic.Int32

// sleep waits up to timeout ms (-1: no limit) for epoll to report
// something. The caller has let go of waitMu; only the WaitEvent goroutine
// sleeps.
//
// A thread asleep in epoll_wait(2) wakes as fast as a C loop's, but it
// keeps its P until the runtime's monitor takes it back, which can take
// milliseconds: while every P is held that way, the process's other
// goroutines wait. So at most GOMAXPROCS-1 Loops of a process sleep in
// epoll_wait; the others park on the epoll descriptor in Go's netpoller,
// which holds no thread but costs a second epoll round per wake-up.
func (l *loop) sleep(timeout int) (int, error) {
	if threadSleepers.Add(1) <= int32(max(1, runtime.GOMAXPROCS(0)-1)) {
		n, err := unix.EpollWait(l.epfd, l.evbuf, timeout)
		threadSleepers.Add(-1)
		if err == unix.EINTR {
			n, err = 0, nil
		}
		return n, err
	}
	threadSleepers.Add(-1)
	if l.parkFile == nil {
		if err := l.parkInit(); err != nil {
			return 0, err
		}
	}
	var dl time.Time
	if timeout >= 0 {
		dl = time.Now().Add(time.Duration(timeout) * time.Millisecond)
	}
	if dl != l.sleepDL {
		l.parkFile.SetReadDeadline(dl)
		l.sleepDL = dl
	}
	arm := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT}
	if err := unix.EpollCtl(l.parkfd, unix.EPOLL_CTL_MOD, l.epfd, &arm); err != nil {
		return 0, os.NewSyscallError("epoll_ctl", err)
	}
	l.sleepN, l.sleepErr = 0, nil
	err := l.parkRaw.Read(l.sleepFn)
	// The report that woke us is taken, which disarms the one-shot
	// registration; if none came (a deadline, or the look found events
	// first) it is disarmed by hand: the netpoller hears nothing of the
	// Loop until it parks next.
	var drain [1]unix.EpollEvent
	if n, _ := unix.EpollWait(l.parkfd, drain[:], 0); n <= 0 {
		var off unix.EpollEvent
		unix.EpollCtl(l.parkfd, unix.EPOLL_CTL_MOD, l.epfd, &off)
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		err = nil
	}
	if err != nil {
		return 0, err
	}
	return l.sleepN, l.sleepErr
}

// add gives c a slot and an ID and registers fd with epoll.
func (l *loop) add(c *conn, events uint32) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	if c.kind == kindConn && l.nconns >= l.opts.maxConns {
		l.mu.Unlock()
		return &ConnError{Op: "add", Err: fmt.Errorf("%w: connection cap of %d reached", unix.EMFILE, l.opts.maxConns)}
	}
	var slot int32
	if n := len(l.free); n > 0 {
		slot = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		if len(l.slots) >= 1<<slotBits {
			l.mu.Unlock()
			return &ConnError{Op: "add", Err: unix.EMFILE}
		}
		slot = int32(len(l.slots))
		l.slots = append(l.slots, nil)
	}
	l.seq++
	c.id = ConnID(l.seq<<slotBits | uint64(slot))
	c.slot = slot
	c.l = l
	l.slots[slot] = c
	if c.kind == kindConn {
		l.nconns++
	}
	// Registered before mu is let go: Close and CloseConn, which find
	// connections under mu, see c only once it is registered, and never
	// close its descriptor while a failed registration's caller still
	// owns it.
	ev := c.epollEvent(events)
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		l.releaseLocked(c)
		l.mu.Unlock()
		return &ConnError{Conn: c.id, Op: "epoll_ctl", Err: err}
	}
	l.mu.Unlock()
	return nil
}

// release frees c's slot; it reports false when c was released already.
// Callers hold waitMu or have not published c.
func (l *loop) release(c *conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.releaseLocked(c)
}

// releaseLocked is release, under mu.
func (l *loop) releaseLocked(c *conn) bool {
	if c.closed {
		return false
	}
	c.closed = true
	if l.slots[c.slot] == c {
		l.slots[c.slot] = nil
		l.free = append(l.free, c.slot)
		if c.kind == kindConn {
			l.nconns--
			for _, ln := range l.capped {
				l.pushTokenLocked(ln)
			}
			l.capped = l.capped[:0]
		}
	}
	return true
}

// lookup returns the live conn with id, or nil.
func (l *loop) lookup(id ConnID) *conn {
	slot := int(id & (1<<slotBits - 1))
	l.mu.Lock()
	defer l.mu.Unlock()
	if slot >= len(l.slots) {
		return nil
	}
	if c := l.slots[slot]; c != nil && c.id == id && !c.closed {
		return c
	}
	return nil
}

// post appends an event to the ready queue and wakes a sleeping
// WaitEvent. Safe from any goroutine; callers may hold a wmu.
func (l *loop) post(c *conn, ev Event) {
	l.mu.Lock()
	l.q.push(item{c: c, ev: ev})
	l.wakeLocked()
	l.mu.Unlock()
}

// pushToken queues c's turn to produce an event from its input (or, for a
// listener, to accept), unless one is queued already.
func (l *loop) pushToken(c *conn) {
	l.mu.Lock()
	l.pushTokenLocked(c)
	l.mu.Unlock()
}

func (l *loop) pushTokenLocked(c *conn) {
	if c.queued || c.closed {
		return
	}
	c.queued = true
	l.q.push(item{c: c, ev: Event{Kind: tokenKind}})
	l.wakeLocked()
}

func (l *loop) wakeLocked() {
	if l.sleeping && l.wakefd >= 0 {
		l.sleeping = false
		var one = [8]byte{1}
		rawIO(unix.SYS_WRITE, l.wakefd, one[:])
	}
}

// tokenKind marks a queue item that is a connection's turn, not an event.
const tokenKind Kind = 0xff

// waitEvent is WaitEvent. It holds waitMu except while it sleeps in
// epoll_wait, so CloseConn, AddSwitch and Detach from other goroutines
// wait at most for one event's worth of work.
func (l *loop) waitEvent(ctx context.Context) (Event, error) {
	l.callMu.Lock()
	defer l.callMu.Unlock()
	l.waitMu.Lock()
	defer l.waitMu.Unlock()
	for _, c := range l.rearm {
		c.arm()
	}
	clear(l.rearm)
	l.rearm = l.rearm[:0]
	for {
		if err := ctx.Err(); err != nil {
			return Event{FD: -1}, err
		}
		ev, ok, err := l.next()
		if err != nil || ok {
			return ev, err
		}
		// Nothing ready: sleep in epoll until I/O, a post, a timer or ctx.
		now := time.Now()
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return Event{FD: -1}, ErrClosed
		}
		if l.q.len() > 0 {
			l.mu.Unlock()
			continue
		}
		timeout := l.timeoutLocked(now, ctx)
		l.mu.Unlock()
		waiters.Add(1)
		if l.opts.spin > 0 && timeout != 0 && l.spin.plan() {
			l.waitMu.Unlock()
			n, err, hit := l.spinWait(now, timeout)
			l.waitMu.Lock()
			if err != errNoSpin {
				l.spin.record(hit)
			}
			if hit {
				waiters.Add(-1)
				if err := l.polled(n, err); err != nil {
					return Event{FD: -1}, err
				}
				continue
			}
		}
		l.mu.Lock()
		if l.q.len() > 0 || l.closed {
			l.mu.Unlock()
			waiters.Add(-1)
			continue
		}
		l.sleeping = true
		l.mu.Unlock()
		l.watchCtx(ctx)
		l.waitMu.Unlock()
		n, err := l.sleep(timeout)
		waiters.Add(-1)
		l.waitMu.Lock()
		l.mu.Lock()
		l.sleeping = false
		l.mu.Unlock()
		if err := l.polled(n, err); err != nil {
			return Event{FD: -1}, err
		}
	}
}

// spinWait polls epoll without sleeping for up to the spin limit (less
// when a timer is due sooner) and reports whether something came: an
// epoll report or a post. The caller has let go of waitMu.
func (l *loop) spinWait(now time.Time, timeout int) (int, error, bool) {
	limit := l.opts.spin
	if timeout > 0 {
		limit = min(limit, time.Duration(timeout)*time.Millisecond)
	}
	// Loops of one process that spin at once share the CPUs with the
	// peers they wait for: at most half of them may spin, and none while
	// more Loops wait than that, when the CPUs are better left to the
	// goroutines and peers that will answer them.
	budget := int32(max(1, runtime.GOMAXPROCS(0)/2))
	if waiters.Load() > budget {
		return 0, errNoSpin, false
	}
	if spinners.Add(1) > budget {
		spinners.Add(-1)
		return 0, errNoSpin, false
	}
	defer spinners.Add(-1)
	end := now.Add(limit)
	for {
		n, err := unix.EpollWait(l.epfd, l.evbuf, 0)
		if n > 0 || err != nil && err != unix.EINTR {
			return n, err, true
		}
		l.mu.Lock()
		posted := l.q.len() > 0 || l.closed
		l.mu.Unlock()
		if posted {
			return 0, nil, true
		}
		if time.Now().After(end) {
			return 0, nil, false
		}
		runtime.Gosched()
	}
}

// spinPlan decides whether a wait spins first: while at least a quarter of
// recent spins caught an event (a local peer answers faster than a thread
// wakes), and otherwise once in spinProbeEvery waits, to notice when it
// would again. Only the WaitEvent goroutine uses it.
type spinPlan struct {
	rate  int // hits per 1024, a moving average
	waits int
}

const spinProbeEvery = 16

// spinners counts the Loops of the process spinning now, waiters those
// waiting (spinning or asleep).
var spinners, waiters atomic.Int32

// errNoSpin is spinWait's answer when the process's budget leaves no
// room to spin: no verdict on whether spinning would have paid.
var errNoSpin = errors.New("events: no spin")

func (p *spinPlan) plan() bool {
	p.waits++
	return p.rate >= 256 || p.waits%spinProbeEvery == 0
}

func (p *spinPlan) record(hit bool) {
	v := 0
	if hit {
		v = 1024
	}
	p.rate += (v - p.rate) / 8
}

// pollEvery is how many events may be returned from the ready queue
// before the Loop looks at epoll again, once a round of it is done.
const pollEvery = 16

// poll asks epoll, without waiting, what became ready, and queues it.
// The caller holds waitMu.
func (l *loop) poll() error {
	n, err := unix.EpollWait(l.epfd, l.evbuf, 0)
	return l.polled(n, err)
}

// polled queues what epoll_wait reported. The caller holds waitMu.
func (l *loop) polled(n int, err error) error {
	if err != nil && err != unix.EINTR {
		return os.NewSyscallError("epoll_wait", err)
	}
	l.dispatch(l.evbuf[:max(n, 0)])
	if n == len(l.evbuf) && n < 4096 {
		l.evbuf = make([]unix.EpollEvent, 2*n)
	}
	l.sincePoll = 0
	l.mu.Lock()
	l.roundLeft = l.q.len()
	l.mu.Unlock()
	return nil
}

// next returns the next event if one is ready: a due periodic timer
// first (so it fires on time under load), then the ready queue in order,
// then a due idle timer. The caller holds waitMu.
func (l *loop) next() (Event, bool, error) {
	// After Close no timer fires, and epoll's descriptor, closed and
	// perhaps someone else's by now, is not polled (timerDue looks).
	now := time.Now()
	ev, ok, closed := l.timerDue(now)
	if closed {
		return Event{FD: -1}, false, ErrClosed
	}
	if ok {
		l.last = now
		return ev, true, nil
	}
	for {
		if l.sincePoll >= pollEvery && l.roundLeft <= 0 {
			// The queue has not run dry for a while: look for sockets that
			// became ready meanwhile, so a newcomer waits one round of the
			// busy ones, not until they are drained.
			l.poll()
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return Event{FD: -1}, false, ErrClosed
		}
		it, ok := l.q.pop()
		l.roundLeft--
		if !ok {
			l.mu.Unlock()
			break
		}
		if it.ev.Kind == tokenKind {
			it.c.queued = false
		}
		l.mu.Unlock()
		if it.ev.Kind != tokenKind {
			if it.ev.Kind == External {
				if it.c.closed {
					continue
				}
				l.rearm = append(l.rearm, it.c)
			}
			l.last = time.Now()
			l.sincePoll++
			return it.ev, true, nil
		}
		if ev, ok := l.turn(it.c); ok {
			l.last = time.Now()
			l.sincePoll++
			return ev, true, nil
		}
	}
	if ev, ok := l.idleDue(time.Now()); ok {
		return ev, true, nil
	}
	return Event{}, false, nil
}

// timeoutLocked computes epoll's timeout in ms: until the next timer or
// ctx's deadline, -1 for none.
func (l *loop) timeoutLocked(now time.Time, ctx context.Context) int {
	var until time.Duration = -1
	take := func(d time.Duration) {
		if d < 0 {
			d = 0
		}
		if until < 0 || d < until {
			until = d
		}
	}
	if l.idle > 0 {
		take(l.last.Add(l.idle).Sub(now))
	}
	if l.period > 0 {
		take(l.nextTick.Sub(now))
	}
	if dl, ok := ctx.Deadline(); ok {
		take(dl.Sub(now))
	}
	if until < 0 {
		return -1
	}
	// Round up so a timer is never checked before it is due.
	return int((until + time.Millisecond - 1) / time.Millisecond)
}

// timerDue returns a Periodic event when its time has come, or closed
// once the Loop is closed.
func (l *loop) timerDue(now time.Time) (ev Event, ok, closed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return Event{}, false, true
	}
	if l.period > 0 && !now.Before(l.nextTick) {
		missed := int(now.Sub(l.nextTick) / l.period)
		l.nextTick = l.nextTick.Add(time.Duration(missed+1) * l.period)
		return Event{Kind: Timer, Timer: Periodic, Missed: missed, FD: -1}, true, false
	}
	return Event{}, false, false
}

func (l *loop) idleDue(now time.Time) (Event, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.idle > 0 && !now.Before(l.last.Add(l.idle)) && l.q.len() == 0 {
		l.last = now
		return Event{Kind: Timer, Timer: Idle, FD: -1}, true
	}
	return Event{}, false
}

// watchCtx arranges for ctx's cancellation to wake epoll. The
// registration is kept while the same ctx comes back, so a caller that
// passes one context to every WaitEvent registers once.
func (l *loop) watchCtx(ctx context.Context) {
	if ctx == l.ctxReg || ctx.Done() == nil {
		return
	}
	if l.ctxOff != nil {
		l.ctxOff()
	}
	l.ctxReg = ctx
	l.ctxOff = context.AfterFunc(ctx, func() {
		l.mu.Lock()
		l.sleeping = true
		l.wakeLocked()
		l.mu.Unlock()
	})
}

// dispatch turns epoll's reports into queue entries.
func (l *loop) dispatch(evs []unix.EpollEvent) {
	for i := range evs {
		e := &evs[i]
		if e.Fd < 0 {
			var b [8]byte
			rawIO(unix.SYS_READ, l.wakefd, b[:])
			continue
		}
		l.mu.Lock()
		var c *conn
		if int(e.Fd) < len(l.slots) {
			c = l.slots[e.Fd]
		}
		if c == nil || c.closed || uint32(c.id>>slotBits) != uint32(e.Pad) {
			l.mu.Unlock()
			continue
		}
		l.mu.Unlock()
		switch c.kind {
		case kindListener:
			l.pushToken(c)
		case kindExternal:
			l.post(c, Event{Kind: External, Conn: c.id, FD: c.fd})
		case kindConn:
			if e.Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLRDHUP|unix.EPOLLERR) != 0 {
				c.readable = true
				l.pushToken(c)
			}
			if e.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				c.kick()
			}
		}
	}
}

// turn lets c produce its next event, if it has one.
func (l *loop) turn(c *conn) (Event, bool) {
	if c.closed {
		return Event{}, false
	}
	switch c.kind {
	case kindListener:
		return l.accept(c)
	case kindConn:
		return c.produce()
	}
	return Event{}, false
}

// accept takes one connection from a listener.
func (l *loop) accept(ln *conn) (Event, bool) {
	l.mu.Lock()
	if l.nconns >= l.opts.maxConns {
		l.capped = append(l.capped, ln)
		l.mu.Unlock()
		return Event{}, false
	}
	l.mu.Unlock()
	fd, _, err := ln.ln.TryAcceptFD()
	if err != nil {
		if errors.Is(err, net.ErrClosed) {
			return Event{}, false
		}
		// Descriptor exhaustion and its kin: back off and come back (the
		// client waits in the backlog meanwhile); report once per episode.
		if ln.retry == nil {
			ln.retry = time.AfterFunc(acceptBackoff, func() { l.pushToken(ln) })
		} else {
			ln.retry.Reset(acceptBackoff)
		}
		if ln.failing {
			return Event{}, false
		}
		ln.failing = true
		l.opts.logger.Warn("events: accept failed; retrying", "path", ln.ln.Path(), "err", err)
		return Event{Kind: Error, Conn: ln.id, FD: -1, Err: &ConnError{Conn: ln.id, Op: "accept", Err: err}}, true
	}
	if fd < 0 {
		ln.failing = false
		return Event{}, false
	}
	ln.failing = false
	c := newConn(fd, kindConn, ln.format)
	c.lnID = ln.id
	if err := l.add(c, connEvents); err != nil {
		unix.Close(fd)
		return Event{Kind: Error, Conn: ln.id, FD: -1, Err: err}, true
	}
	l.pushToken(ln)
	return Event{Kind: Connection, Conn: c.id, Listener: ln.id, FD: -1}, true
}

// acceptBackoff is how long a listener rests after an accept failure.
const acceptBackoff = 50 * time.Millisecond

// connEvents is what a connection is watched for; EPOLLOUT is added only
// while frames wait (conn.watchOut).
const connEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET

// closeConn ends c: its writers are woken and fail, its queued messages
// are reported dropped, its descriptor is closed (an external one is only
// forgotten) and, when report is set, Disconnection is posted with cause.
// Its switch partner ends with it and is reported. The caller holds waitMu.
func (l *loop) closeConn(c *conn, cause error, report bool) {
	if !l.release(c) {
		return
	}
	peer := c.peer.Swap(nil)
	if peer != nil {
		peer.peer.Store(nil)
	}
	if c.kind == kindConn {
		// Shut down first: a Write blocked in poll on this socket wakes
		// and lets go of wmu.
		unix.Shutdown(c.fd, unix.SHUT_RDWR)
		c.wmu.Lock()
		c.dropQueueLocked(cause)
		c.wmu.Unlock()
	}
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	switch c.kind {
	case kindListener:
		if c.retry != nil {
			c.retry.Stop()
		}
		if c.stop != nil {
			close(c.stop)
		}
		c.ln.Close()
		c.releaseLock()
	case kindConn:
		unix.Close(c.fd)
		c.freeRead()
	}
	if report {
		l.post(c, Event{Kind: Disconnection, Conn: c.id, FD: -1, Err: cause})
	}
	if peer != nil {
		l.closeConn(peer, cause, true)
	}
}

// close is Loop.Close.
func (l *loop) close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.sleeping = true
	l.wakeLocked()
	l.mu.Unlock()
	l.callMu.Lock()
	defer l.callMu.Unlock()
	l.waitMu.Lock()
	defer l.waitMu.Unlock()
	if l.ctxOff != nil {
		l.ctxOff()
	}
	l.mu.Lock()
	all := make([]*conn, 0, len(l.slots))
	for _, c := range l.slots {
		if c != nil {
			all = append(all, c)
		}
	}
	l.mu.Unlock()
	for _, c := range all {
		c.peer.Store(nil)
		l.closeConn(c, ErrClosed, false)
	}
	l.stopWatchers()
	// A context's callback may still run after Close: it finds no
	// descriptor to write to.
	l.mu.Lock()
	wfd := l.wakefd
	l.wakefd = -1
	l.mu.Unlock()
	unix.Close(wfd)
	if l.parkFile != nil {
		l.parkFile.Close()
	}
	return unix.Close(l.epfd)
}

// closeID is CloseConn. WaitEvent lets go of waitMu while it sleeps,
// so this waits at most for the event being produced.
func (l *loop) closeID(id ConnID) error {
	l.waitMu.Lock()
	defer l.waitMu.Unlock()
	c := l.lookup(id)
	if c == nil {
		return fmt.Errorf("%w: %d", ErrUnknownConn, id)
	}
	l.closeConn(c, fmt.Errorf("%w: closed by the application", ErrClosed), false)
	return nil
}

// listen is Loop.Listen.
func (l *loop) listen(name string, f Format) (ConnID, error) {
	path, err := l.path(name)
	if err != nil {
		return 0, err
	}
	var lock *os.File
	if l.opts.layout == LibIPCLayout {
		// The lock lives beside the socket, so the directory comes first
		// (uds.Listen then checks it is private).
		if err := os.Mkdir(filepath.Dir(path), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return 0, err
		}
		if lock, err = flockPath(path + ".lock"); err != nil {
			return 0, err
		}
	}
	ln, err := uds.Listen(path, l.opts.listenOpts...)
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		return 0, err
	}
	c := &conn{kind: kindListener, ln: ln, format: f, lock: lock, fd: -1, stop: make(chan struct{})}
	rc, err := ln.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) { c.fd = int(fd) })
	}
	// Under waitMu, so that a Close running meanwhile either finds the
	// Loop closed here or finds the listener published with its watcher
	// counted, and then stops and waits for it.
	l.waitMu.Lock()
	if err == nil {
		err = l.add(c, unix.EPOLLIN|unix.EPOLLET)
	}
	if err != nil {
		l.waitMu.Unlock()
		ln.Close()
		c.releaseLock()
		return 0, err
	}
	l.watchers.Add(1)
	go l.watchStolen(c)
	l.waitMu.Unlock()
	// Clients may be waiting already.
	l.pushToken(c)
	return c.id, nil
}

// watchStolen reports, as an Error event, a service whose socket path was
// taken over or removed: it serves nobody new, and its owner should know.
func (l *loop) watchStolen(c *conn) {
	defer l.watchers.Done()
	select {
	case <-c.ln.Stolen():
		err := c.ln.StolenErr()
		l.opts.logger.Warn("events: service socket stolen", "path", c.ln.Path(), "err", err)
		l.post(c, Event{Kind: Error, Conn: c.id, FD: -1, Err: &ConnError{Conn: c.id, Op: "listen", Err: err}})
	case <-c.stop:
	}
}

// stopWatchers waits for the listeners' watchers, which closeConn has
// told to stop.
func (l *loop) stopWatchers() { l.watchers.Wait() }

// flockPath takes LibIPC's single-instance lock.
//
// The lock is made before uds.Listen checks the directory (a second
// instance must find it taken, not the first one's socket), so it checks
// the directory itself, no further than it must not write where another
// user chose: the directory is no symlink, and it belongs to this user or
// to root; the lock is made in it by name (openat), never through a
// symlink planted there.
func flockPath(path string) (*os.File, error) {
	dir := filepath.Dir(path)
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: dir, Err: err}
	}
	if euid := uint32(os.Geteuid()); st.Uid != euid && st.Uid != 0 {
		return nil, fmt.Errorf("%w: run directory %s belongs to uid %d, not to this user (%d) or root", uds.ErrInsecureDir, dir, st.Uid, euid)
	}
	fd, err := unix.Openat(dfd, filepath.Base(path), unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if err == unix.EWOULDBLOCK {
			return nil, fmt.Errorf("%w: %s", ErrLocked, path)
		}
		return nil, &os.PathError{Op: "flock", Path: path, Err: err}
	}
	return f, nil
}

// connect is Loop.Connect.
func (l *loop) connect(ctx context.Context, name string, f Format) (ConnID, error) {
	path, err := l.path(name)
	if err != nil {
		return 0, err
	}
	uc, err := uds.Dial(ctx, path, l.opts.dialOpts...)
	if err != nil {
		return 0, err
	}
	defer uc.Close()
	rc, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return 0, err
	}
	if derr != nil {
		return 0, os.NewSyscallError("fcntl", derr)
	}
	return l.adopt(fd, f)
}

// adopt is AddConn.
func (l *loop) adopt(fd int, f Format) (ConnID, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return 0, os.NewSyscallError("fcntl", err)
	}
	c := newConn(fd, kindConn, f)
	if err := l.add(c, connEvents); err != nil {
		unix.Close(fd)
		return 0, err
	}
	return c.id, nil
}

// addExternal is AddExternal.
func (l *loop) addExternal(fd int) (ConnID, error) {
	if fd < 0 {
		return 0, &ConnError{Op: "add external", Err: unix.EBADF}
	}
	c := &conn{kind: kindExternal, fd: fd}
	if err := l.add(c, unix.EPOLLIN|unix.EPOLLONESHOT); err != nil {
		return 0, err
	}
	return c.id, nil
}

// arm re-enables an external descriptor's one-shot readiness report.
func (c *conn) arm() {
	if c.closed {
		return
	}
	ev := c.epollEvent(unix.EPOLLIN | unix.EPOLLONESHOT)
	unix.EpollCtl(c.l.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev)
}

// addSwitch is AddSwitch.
func (l *loop) addSwitch(a, b ConnID, in, out Transform) error {
	l.waitMu.Lock()
	defer l.waitMu.Unlock()
	ca, cb := l.lookup(a), l.lookup(b)
	if ca == nil || cb == nil || ca.kind != kindConn || cb.kind != kindConn || a == b {
		return fmt.Errorf("%w: switch %d <-> %d", ErrUnknownConn, a, b)
	}
	if ca.peer.Load() != nil || cb.peer.Load() != nil {
		return ErrSwitched
	}
	ca.peer.Store(cb)
	cb.peer.Store(ca)
	ca.xform, cb.xform = in, out
	// Messages already buffered on either side now cross the switch.
	l.pushToken(ca)
	l.pushToken(cb)
	return nil
}

// setTimer is SetTimer.
func (l *loop) setTimer(k TimerKind, d time.Duration) {
	l.mu.Lock()
	switch k {
	case Idle:
		l.idle = d
	case Periodic:
		l.period = d
		l.nextTick = time.Now().Add(d)
	}
	l.sleeping = true
	l.wakeLocked()
	l.mu.Unlock()
}

// path resolves a service name.
func (l *loop) path(name string) (string, error) {
	dir := l.opts.runDir
	if dir == "" {
		dir = RunDir(l.opts.layout)
	}
	return ServicePath(dir, name)
}

// stats is Loop.Stats.
func (l *loop) stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{Conns: l.nconns, Queued: l.q.len()}
}

// detach is Detach.
func (l *loop) detach(id ConnID) (*net.UnixConn, error) {
	l.waitMu.Lock()
	defer l.waitMu.Unlock()
	c := l.lookup(id)
	if c == nil || c.kind != kindConn {
		return nil, unknown(id, "detach")
	}
	if c.peer.Load() != nil {
		return nil, &ConnError{Conn: id, Op: "detach", Err: ErrSwitched}
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.rs < c.re || c.asm != nil && c.asm.Buffered() > 0 || c.outHead < len(c.outq) {
		return nil, &ConnError{Conn: id, Op: "detach", Err: ErrBuffered}
	}
	if c.wclosed {
		// A write failed: the socket is shut down, and the Loop reports
		// its end.
		return nil, &ConnError{Conn: id, Op: "detach", Err: ErrClosed}
	}
	// Frames written but not yet reported are reported, as when a
	// connection ends.
	for ev, ok := c.nextTx(); ok; ev, ok = c.nextTx() {
		l.post(c, ev)
	}
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	l.release(c)
	c.wclosed = true
	c.freeRead()
	f := os.NewFile(uintptr(c.fd), "events")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, &ConnError{Conn: id, Op: "detach", Err: err}
	}
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		nc.Close()
		return nil, &ConnError{Conn: id, Op: "detach", Err: errors.New("not a Unix socket")}
	}
	return uc, nil
}

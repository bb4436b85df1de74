package engine

import (
	"sync"

	"github.com/pktipc/pktipc/uds"
)

// Connection pressure. A server at its connection cap makes room for a new
// connection by evicting the oldest one that has not completed a request
// (silent, partial and trickling clients), so that a client with a whole
// request is never refused while such connections hold the slots. Near a
// cap, the first-byte and request deadlines tighten, so that such clients
// also give their slots back sooner.
const (
	// pressureNum/pressureDen: a uid's connections, or all of them, are
	// under pressure from this fraction of their cap.
	pressureNum, pressureDen = 3, 4
	// pressureFirstByteTimeout and pressureRequestTimeout replace longer
	// first-byte and request timeouts under pressure. A local client sends
	// its request within microseconds of connecting, and a request at the
	// default size cap crosses a Unix socket in tens of milliseconds; a
	// crowd that reconnects whenever it is closed comes back less often
	// the longer they are.
	pressureFirstByteTimeout = 2_000_000_000 // ns
	pressureRequestTimeout   = 3_000_000_000 // ns
)

// admission owns the connection counts behind the caps, the set of open
// connections, and the order in which unproven connections are evicted.
//
// Invariant (mu): total counts every connection admitted and not yet let
// go, whether it waits to be enrolled in a loop (pending), is open, or is
// closing; perUID counts the same per peer uid. A connection is let go
// exactly once: by release when it closes, or earlier by admit when it is
// evicted to make room (counted turns false; its close follows). unproven
// links, oldest first, the open connections that are counted and have not
// completed a request, nor came with one whole (vouched, which never join
// it); a connection leaves it when it proves itself, is evicted, or
// closes. The conn fields counted, inList, prev and next belong to
// admission and change only under mu; provenLoop is its loop's.
type admission struct {
	maxTotal, maxPerUID int

	mu       sync.Mutex
	total    int
	pending  int
	perUID   map[uint32]int
	open     map[*conn]struct{}
	draining map[*conn]struct{} // drains the reaper looks at: no write watch
	head     *conn              // oldest unproven
	tail     *conn
}

func newAdmission(maxTotal, maxPerUID int) *admission {
	return &admission{
		maxTotal:  maxTotal,
		maxPerUID: maxPerUID,
		perUID:    make(map[uint32]int),
		open:      make(map[*conn]struct{}),
		draining:  make(map[*conn]struct{}),
	}
}

// admit counts a new connection of cred against the caps. At a cap it
// evicts the oldest unproven connection (of the same uid, at the uid's cap)
// and returns it: the caller closes it. ok is false when nothing could be
// evicted: the new connection is refused. Any goroutine.
func (a *admission) admit(cred uds.Cred) (ok bool, victim *conn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	uidFull := a.perUID[cred.UID] >= a.maxPerUID
	if uidFull || a.total >= a.maxTotal {
		if victim = a.victimLocked(cred.UID, uidFull); victim == nil {
			return false, nil
		}
		a.unlink(victim)
		a.uncount(victim)
	}
	a.total++
	a.perUID[cred.UID]++
	a.pending++
	return true, victim
}

// unadmit gives back the count of a connection that never opened.
func (a *admission) unadmit(cred uds.Cred) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pending--
	a.total--
	a.dec(cred.UID)
}

// settle records that a connection admitted for rings, or a one-shot
// connection whose reply lingers, is open: it is no longer pending, and it
// never joins open (such connections are counted, never evicted: a ring
// completed a handshake, a lingering reply answers a request served).
// forget gives its count back when it closes.
func (a *admission) settle() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pending--
}

func (a *admission) forget(cred uds.Cred) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	a.dec(cred.UID)
}

// register records c as open, and unproven unless it was vouched for (its
// whole first request came with it: it is proven already); it runs in
// OnOpen, on c's loop.
func (a *admission) register(c *conn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pending--
	a.open[c] = struct{}{}
	c.counted = true
	if c.vouched {
		c.provenLoop = true // prove has nothing to do
		return
	}
	c.prev, c.next = a.tail, nil
	if a.tail != nil {
		a.tail.next = c
	} else {
		a.head = c
	}
	a.tail = c
	c.inList = true
}

// prove takes c out of the eviction order: it completed a request. It runs
// on c's loop; after the first call it costs nothing.
func (a *admission) prove(c *conn) {
	if c.provenLoop {
		return
	}
	c.provenLoop = true
	a.mu.Lock()
	defer a.mu.Unlock()
	a.unlink(c)
}

// release forgets c; it runs in OnClose.
func (a *admission) release(c *conn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.open, c)
	delete(a.draining, c)
	a.unlink(c)
	if c.counted {
		a.uncount(c)
	}
}

func (a *admission) unlink(c *conn) {
	if !c.inList {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		a.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		a.tail = c.prev
	}
	c.prev, c.next, c.inList = nil, nil, false
}

func (a *admission) uncount(c *conn) {
	c.counted = false
	a.total--
	a.dec(c.peer.Cred.UID)
}

func (a *admission) dec(uid uint32) {
	if a.perUID[uid]--; a.perUID[uid] <= 0 {
		delete(a.perUID, uid)
	}
}

// pressuredLocked reports whether connections of uid are near a cap.
func (a *admission) pressuredLocked(uid uint32) bool {
	return a.total*pressureDen >= a.maxTotal*pressureNum ||
		a.perUID[uid]*pressureDen >= a.maxPerUID*pressureNum
}

// crowded reports whether connections of uid are near a cap, where a new
// one waits in the lobby, and whether they are at a cap with no connection
// to evict, where a new one is refused at once.
func (a *admission) crowded(uid uint32) (pressured, full bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	uidFull := a.perUID[uid] >= a.maxPerUID
	if uidFull || a.total >= a.maxTotal {
		full = a.victimLocked(uid, uidFull) == nil
	}
	return a.pressuredLocked(uid), full
}

// victimLocked is the connection admit would evict for a newcomer of uid:
// the oldest unproven one, of uid when uidFull.
func (a *admission) victimLocked(uid uint32, uidFull bool) *conn {
	for c := a.head; c != nil; c = c.next {
		if !uidFull || c.peer.Cred.UID == uid {
			return c
		}
	}
	return nil
}

func (a *admission) openCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.open)
}

func (a *admission) watchDrain(c *conn) {
	a.mu.Lock()
	a.draining[c] = struct{}{}
	a.mu.Unlock()
}

func (a *admission) unwatchDrain(c *conn) {
	a.mu.Lock()
	delete(a.draining, c)
	a.mu.Unlock()
}

package engine

import "sync"

// connSet holds connections that no event loop watches while a goroutine
// of the server works for them (pooled one-shot requests: shotSet;
// rescued replies: rescueSet), so that the reaper can end them at their
// deadlines, Close can end them all, and openConns can count them.
//
// Invariant (mu): conns holds what add put in and remove has not taken
// out; closed is set once, by closeAll, and nothing is added after it.
// The sets that embed connSet say who adds and removes, and what ending
// a connection under mu may touch.
type connSet struct {
	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
}

// add records c, or reports false once the set is closed.
func (cs *connSet) add(c *conn) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		return false
	}
	if cs.conns == nil {
		cs.conns = make(map[*conn]struct{})
	}
	cs.conns[c] = struct{}{}
	return true
}

// remove takes c out, if it is in.
func (cs *connSet) remove(c *conn) {
	cs.mu.Lock()
	delete(cs.conns, c)
	cs.mu.Unlock()
}

func (cs *connSet) count() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.conns)
}

// closeAll closes the set and calls end for every connection in it, under
// mu: nothing is added afterwards.
func (cs *connSet) closeAll(end func(*conn)) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.closed = true
	for c := range cs.conns {
		end(c)
	}
}

package engine

// rescueSet owns the rescued connections: gnet closed them at their
// peer's half close, and the goroutine that owned their reply (a pooled
// worker, a tail's writer) finishes it on a duplicate of the socket
// (onClose, serveLeftover). No loop and no admission count watches them
// any more, so the set does: the reaper ends one at its deadline, Close
// ends every one, and openConns counts them, so that Shutdown waits for
// them.
//
// Invariant (connSet's mu): a connection is in conns from just before
// onClose may rescue it until letGo, on the goroutine that owned the
// reply, takes it out, after it marked the worker gone (an onClose in
// between then finds nothing to rescue and takes it out itself); end runs
// only under mu with the connection in conns, and c.mu then orders it
// against letGo closing the rescue socket. Lock order: mu, then c.mu.
type rescueSet struct{ connSet }

// close ends every rescued connection: nothing is added afterwards.
func (rs *rescueSet) close() {
	rs.closeAll(func(c *conn) { c.endRescue(ErrServerClosed) })
}

// reapRescues ends the rescued connections whose deadline (the handler's, or the
// reply's write) has passed at now. On the reaper.
func (s *Server) reapRescues(now int64) {
	rs := &s.rescues
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for c := range rs.conns {
		d := c.dl.load()
		if t := s.timeout(d.why, false); t > 0 && now-d.since >= t && c.expired.CompareAndSwap(0, int32(d.why)+1) {
			s.stats.timeouts[d.why].Add(1)
			c.endRescue(d.why.exceeded())
		}
	}
}

// endRescue cancels c's handler with cause and shuts its socket down, so
// that a write waiting for room fails at once and the client sees the
// end; the goroutine that owns the reply then lets c go. Under the set's
// mu, with c in it.
func (c *conn) endRescue(cause error) {
	c.cancelHandler(cause)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.rescue != nil:
		if rc, err := c.rescue.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) { _ = sysShutdown(int(fd)) })
		}
	case c.wf != nil:
		_ = sysShutdown(c.wfd) // a tail's writer: the same socket
	}
}

package engine

import (
	"context"
	"os"
	"sync/atomic"
	"time"
)

// Waiting for a peer to read, without polling. gnet has no "outbound
// drained" event, so a connection whose replies wait for its peer to read
// them (phaseDraining, or a worker held back by the high-water mark) gets a
// writeWatch: a goroutine parked on the writability of a duplicate of the
// socket in Go's netpoller. The netpoller is edge-triggered, and the kernel
// signals write space each time the peer's reads free some, so the
// goroutine wakes only when the peer reads, and costs nothing while it does
// not. At each wake-up it asks the connection's loop to look at gnet's
// outbound buffer (conn.checkDrain), which ends the watch once the buffer
// is low enough.
//
// The watch is armed before each check is asked for, so write space freed
// between the loop's look and the next wait is not lost: the netpoller keeps
// an edge that comes after arming until the wait.

// A writeWatch belongs to one drain episode of one connection. The loop
// starts it (conn.watchWrite) and ends it (conn.unwatchWrite: stop, then a
// past deadline wakes the goroutine); the goroutine owns f and closes it
// when it returns. Server.Close waits for every watch goroutine.
type writeWatch struct {
	c    *conn
	f    *os.File
	stop atomic.Bool
}

// watchWrite starts a watch for c unless one runs. Without a duplicate of
// the socket (descriptor table full) the reaper looks at c every tick
// instead. It runs on the loop.
func (c *conn) watchWrite() {
	if c.watch != nil {
		return
	}
	fd, err := c.gc.Dup()
	if err != nil {
		c.s.stats.drainFallbacks.Add(1)
		c.pollDrain = true
		c.s.watchDrain(c)
		return
	}
	w := &writeWatch{c: c, f: os.NewFile(uintptr(fd), "pktipc-drain")}
	c.watch = w
	c.s.watchers.Add(1)
	go w.run()
}

// unwatchWrite ends c's watch, if any. It runs on the loop.
func (c *conn) unwatchWrite() {
	if c.pollDrain {
		c.pollDrain = false
		c.s.unwatchDrain(c)
	}
	if w := c.watch; w != nil {
		c.watch = nil
		w.stop.Store(true)
		_ = w.f.SetWriteDeadline(time.Unix(1, 0))
	}
}

func (w *writeWatch) run() {
	defer w.c.s.watchers.Done()
	defer w.f.Close()
	rc, err := w.f.SyscallConn()
	if err != nil {
		w.c.s.askDrainCheck(w.c)
		return
	}
	for !w.stop.Load() {
		ask := true
		err := rc.Write(func(uintptr) bool {
			if ask {
				// Armed: ask for a look, then wait for the next edge.
				ask = false
				w.c.s.askDrainCheck(w.c)
				return false
			}
			return true
		})
		if err != nil {
			return // stopped (past deadline), or the descriptor failed
		}
	}
}

// askDrainCheck has c's loop run checkDrain. Any goroutine.
func (s *Server) askDrainCheck(c *conn) {
	if b := c.loop.bell; b != nil {
		b.ring(bellJob{c: c, check: true})
		return
	}
	_ = c.onLoop(c.drain)
}

type drainTask struct{ c *conn }

// Run checks, on the connection's loop, whether its outbound buffer drained.
func (d drainTask) Run(context.Context) error { d.c.checkDrain(); return nil }

// closeWhenRead closes c once its peer has read what gnet still holds for
// it, under the write deadline from now. On c's loop.
func (c *conn) closeWhenRead(now int64) {
	c.closeAfter = true
	c.startDrain(now)
}

func (c *conn) startDrain(now int64) {
	c.setPhase(phaseDraining)
	c.setDeadline(now, whyWrite)
	c.watchWrite()
}

// checkDrain runs on the loop when the connection's peer has read some of
// what waits for it (its writeWatch woke): gnet has no "outbound drained"
// callback.
func (c *conn) checkDrain() {
	c.s.stats.drainChecks.Add(1)
	if c.closed.Load() {
		c.unwatchWrite()
		return
	}
	out := c.gc.OutboundBuffered()
	if c.ackWaiting {
		if out <= c.s.opts.highWater {
			c.ackWaiting = false
			c.unwatchWrite()
			// The handler's time runs from its start: waits for its
			// peer to read must not extend it.
			c.setDeadline(c.hstart, whyHandler)
			c.ack <- ackMsg{c.ackSeq, nil}
		}
		return
	}
	if c.phase != phaseDraining {
		c.unwatchWrite()
		return
	}
	if c.closeAfter {
		if out == 0 {
			c.unwatchWrite()
			_ = c.gc.Close()
		}
		return
	}
	if out <= c.s.opts.highWater/2 {
		c.unwatchWrite()
		now := c.s.now()
		c.toIdle(now)
		if c.process(now) == closeConn || !c.account() {
			_ = c.gc.Close()
		}
		return
	}
	if !c.account() {
		_ = c.gc.Close()
	}
}

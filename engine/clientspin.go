package engine

import (
	"runtime"
	"sync/atomic"
	"time"
)

// Client spinning. A local round trip is often shorter than the cost of
// parking a goroutine in the netpoller and waking it again, so a Client
// waiting for a reply first polls its socket for a while. How long is
// learned per Client (spinPlan); how many Clients of the process may spin at
// once is a process-wide budget (SetSpinningClients), because spinning
// clients share the CPUs with the servers they wait for.

const (
	// spinMinHitRate (of 1024) is the share of replies that must come
	// within the spin limit for the client to keep spinning; spinFloor is
	// the shortest spin it plans.
	spinMinHitRate = 256
	spinFloor      = 5 * time.Microsecond
	// spinProbeEvery: a client whose replies are too slow to spin for still
	// spins once in this many waits, to notice when they speed up.
	spinProbeEvery = 16
)

// clientWaits counts the Clients of the process that wait for a reply
// (or, on rings, for room) and those that spin now; spinLimit is the
// budget for both (0: half of GOMAXPROCS, at least one).
var (
	clientWaits waitGauge
	spinLimit   atomic.Int32
)

// SetSpinningClients sets the process-wide budget of Clients that may spin
// while they wait for a reply: no Client spins while more Clients of the
// process wait than n, and at most n spin at once. n <= 0 restores the
// default, half of GOMAXPROCS (at least one), read at each wait. It returns
// the previous setting. Safe for concurrent use.
func SetSpinningClients(n int) int {
	return int(spinLimit.Swap(int32(max(n, 0))))
}

func spinBudget() int32 {
	if n := spinLimit.Load(); n > 0 {
		return n
	}
	return int32(max(1, runtime.GOMAXPROCS(0)/2))
}

// spinPlan decides how long each reply wait of one Client may spin. Reply
// times on a busy machine are often bimodal (the server was running, or it
// had to be woken), so the plan follows how often a spin catches the reply
// rather than the mean wait: it spins while at least a quarter of the
// replies come within the limit, for four times their usual wait (capped at
// the limit), and otherwise tries once in spinProbeEvery waits. Only the
// Client's owner goroutine uses it. Times are monotonic ns from the
// Client's epoch.
type spinPlan struct {
	limit   int64 // the longest spin (WithClientSpin); 0 never spins
	until   int64 // end of the current wait's spin; 0 = do not spin
	sentAt  int64 // when the only request in flight was sent
	hitWait int64 // moving average of the waits a spin would catch
	hitRate int32 // moving fraction (of 1024) of waits within the limit
	probe   uint8 // counts skipped spins
	slot    bool  // this wait holds one of the process's spinner slots
}

func newSpinPlan(limit time.Duration) spinPlan {
	return spinPlan{limit: int64(limit), hitRate: 1024} // spin until replies prove slow
}

// sent records when a request went out; inflight counts it.
func (p *spinPlan) sent(now int64, inflight int) {
	if inflight == 1 {
		p.sentAt = now
	}
}

// plan sets until for the next wait. A Client with several requests in
// flight never spins: its replies come back to back anyway.
func (p *spinPlan) plan(now int64, inflight int) {
	p.until = 0
	if p.limit <= 0 || inflight != 1 {
		return
	}
	if p.hitRate < spinMinHitRate {
		if p.probe++; p.probe%spinProbeEvery != 0 {
			return
		}
	}
	limit := spinBudget()
	if !clientWaits.trySpin(limit, limit) {
		return
	}
	p.slot = true
	budget := p.limit
	if p.hitWait > 0 {
		budget = min(max(4*p.hitWait, int64(spinFloor)), budget)
	}
	p.until = now + budget
}

// end ends the current wait's spin and gives back its slot.
func (p *spinPlan) end() {
	p.until = 0
	if p.slot {
		p.slot = false
		clientWaits.unspin()
	}
}

// learn folds the wait for a reply that just came into the statistics.
func (p *spinPlan) learn(now int64, inflight int) {
	if inflight != 1 || p.sentAt <= 0 {
		return
	}
	wait := now - p.sentAt
	hit := int32(0)
	if wait <= p.limit {
		hit = 1024
		if p.hitWait == 0 {
			p.hitWait = wait
		}
		p.hitWait += (wait - p.hitWait) / 8
	}
	p.hitRate += (hit - p.hitRate) / 8
}

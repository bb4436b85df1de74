package engine

import "sync/atomic"

// counters are the server's statistics, updated atomically.
type counters struct {
	accepted        atomic.Uint64
	overCap         atomic.Uint64
	acceptExhausted atomic.Uint64
	shed            atomic.Uint64
	requests        atomic.Uint64
	protocolErrors  atomic.Uint64
	overloaded      atomic.Uint64
	panics          atomic.Uint64
	rescued         atomic.Uint64
	timeouts        [whyWrite + 1]atomic.Uint64
	spinHits        atomic.Uint64
	spinMisses      atomic.Uint64
	soloReads       atomic.Uint64
	batched         atomic.Uint64
	poolBatched     atomic.Uint64
	drainFallbacks  atomic.Uint64
	drainChecks     atomic.Uint64
	evicted         atomic.Uint64
	budgetClosed    atomic.Uint64
	oneShot         atomic.Uint64
	lobbied         atomic.Uint64
	lobbyAdmitted   atomic.Uint64
	lobbyClosed     atomic.Uint64
}

// Stats is a snapshot of a server's counters.
type Stats struct {
	Accepted         uint64 // connections accepted and admitted
	Denied           uint64 // refused by the peer-credential policy, before any read
	OverCap          uint64 // closed at once for exceeding a connection cap
	AcceptExhausted  uint64 // accept or enroll failed for lack of descriptors
	Shed             uint64 // clients closed by the spare-descriptor trick
	Open             int    // connections open now: on the event loops, on rings, and one-shot ones on workers (not Lingering)
	Lingering        int    // one-shot connections whose reply waits for the peer to read
	Requests         uint64 // requests handed to the handler
	ProtocolErrors   uint64 // malformed or oversized requests
	Overloaded       uint64 // closed because the worker queue was full
	Panics           uint64 // handler panics contained
	Rescued          uint64 // pooled replies finished after the peer half-closed
	FirstByteTimeout uint64
	RequestTimeout   uint64
	IdleTimeout      uint64
	HandlerTimeout   uint64
	WriteTimeout     uint64
	BusyPollHits     uint64 // spins that caught the next request
	BusyPollMisses   uint64 // spins that did not
	SoloReads        uint64 // requests read by a loop waiting on their connection alone (WithSoloWait)
	Batched          uint64 // inline replies held to leave in one write with the replies after them
	PoolBatched      uint64 // pooled requests that joined an earlier one's batch, for its worker to serve in turn
	DrainChecks      uint64 // looks at a connection's outbound buffer after its peer read
	DrainFallbacks   uint64 // drains watched by the reaper's tick: no descriptor to watch with
	Evicted          uint64 // connections without a whole request closed to make room at a cap
	BudgetClosed     uint64 // connections closed, or refused a buffer, for the memory budget
	OneShot          uint64 // requests served on the bare descriptor, by the accept loop or a worker (git-style, whole on arrival)
	Lobbied          uint64 // connections that waited in the lobby (near a cap)
	LobbyAdmitted    uint64 // ... and showed a whole request in time
	LobbyClosed      uint64 // ... and were closed: no request in time, or their place taken
	Buffered         int64  // bytes buffered for connections now (the memory budget's use)
	BufferCache      int64  // large buffers kept for reuse now
	BufferReleasing  int64  // bytes of connections closed for the budget that their loops have yet to release
}

// Stats returns the server's counters. Safe for concurrent use.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Accepted:         c.accepted.Load(),
		Denied:           s.ln.Denied(),
		OverCap:          c.overCap.Load(),
		AcceptExhausted:  c.acceptExhausted.Load(),
		Shed:             c.shed.Load(),
		Open:             s.openConns(),
		Lingering:        s.lingering.count(),
		Requests:         c.requests.Load(),
		ProtocolErrors:   c.protocolErrors.Load(),
		Overloaded:       c.overloaded.Load(),
		Panics:           c.panics.Load(),
		Rescued:          c.rescued.Load(),
		Batched:          c.batched.Load(),
		PoolBatched:      c.poolBatched.Load(),
		FirstByteTimeout: c.timeouts[whyFirstByte].Load(),
		RequestTimeout:   c.timeouts[whyRequest].Load(),
		IdleTimeout:      c.timeouts[whyIdle].Load(),
		HandlerTimeout:   c.timeouts[whyHandler].Load(),
		WriteTimeout:     c.timeouts[whyWrite].Load(),
		BusyPollHits:     c.spinHits.Load(),
		BusyPollMisses:   c.spinMisses.Load(),
		SoloReads:        c.soloReads.Load(),
		DrainChecks:      c.drainChecks.Load(),
		DrainFallbacks:   c.drainFallbacks.Load(),
		Evicted:          c.evicted.Load(),
		BudgetClosed:     c.budgetClosed.Load(),
		OneShot:          c.oneShot.Load(),
		Lobbied:          c.lobbied.Load(),
		LobbyAdmitted:    c.lobbyAdmitted.Load(),
		LobbyClosed:      c.lobbyClosed.Load(),
		Buffered:         s.budget.used.Load(),
		BufferCache:      s.budget.cachedBytes(),
		BufferReleasing:  s.budget.releasing.Load(),
	}
}

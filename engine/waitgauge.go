package engine

import "sync/atomic"

// waitGauge counts the waits of a group (the process's Clients, a server's
// ring connections) that are under way, and how many of them spin now,
// in one word: the waits in its low half, the spins in its high half. A
// wait that spins enters and leaves with one atomic add each, where two
// counters would take two each: on a short round trip, each locked add on
// the path counts. Any goroutine; each
// add is undone by the goroutine that made it, so neither half goes
// below zero and no borrow crosses between them.
type waitGauge struct{ v atomic.Int64 }

// gaugeSpin is one spin in a waitGauge.
const gaugeSpin = 1 << 32

// waits is the number of waits under way.
func (g *waitGauge) waits() int32 { return int32(g.v.Load()) }

// spins is the number of waits spinning now.
func (g *waitGauge) spins() int32 { return int32(g.v.Load() >> 32) }

// add moves the gauge by d (waits, plus gaugeSpin per spin) and returns
// the new waits and spins.
func (g *waitGauge) add(d int64) (waits, spins int32) {
	v := g.v.Add(d)
	return int32(v), int32(v >> 32)
}

// A gaugeWait is one wait's place in a waitGauge: entered with enter, and
// left with leave, which gives back what it still holds.
type gaugeWait struct {
	g     *waitGauge
	held  int64 // 1, plus gaugeSpin while it holds a spin
	crowd bool  // more than ringCrowd waits were under way, itself included
	spin  bool  // it holds a spin place
}

// enter counts a ring wait in g. A wait in a crowd goes to the group's
// watch when it has one (watch), so it takes no spin place; any other
// wait takes one with the same add, where the budget allows: at most
// spinMax spins, and no spin while more than ringSpinCrowd waits per
// place are under way (see ringSpinCrowd). spinMax <= 0: never spins.
func (g *waitGauge) enter(watch bool, spinMax int32) gaugeWait {
	w := gaugeWait{g: g, held: 1}
	if spinMax <= 0 || (watch && g.waits() >= ringCrowd) {
		// No spin, or (most likely) a crowd's wait, for the watch.
		waits, _ := g.add(1)
		w.crowd = waits > ringCrowd
		if !w.crowd && spinMax > 0 {
			w.takeSpin(spinMax) // the crowd left meanwhile
		}
		return w
	}
	waits, spins := g.add(1 + gaugeSpin)
	w.crowd = waits > ringCrowd
	if (w.crowd && watch) || spins > spinMax || waits > ringSpinCrowd*spinMax {
		g.unspin()
		return w
	}
	w.held, w.spin = 1+gaugeSpin, true
	return w
}

// takeSpin takes a spin place for the entered wait w, which holds none,
// within spinMax (see enter); w.spin says whether it did.
func (w *gaugeWait) takeSpin(spinMax int32) {
	if w.g.trySpin(spinMax, ringSpinCrowd*spinMax) {
		w.held += gaugeSpin
		w.spin = true
	}
}

// trySpin takes a spin place, for a wait not counted in g (or counted
// apart): one of at most spinMax, and none while more than maxWaits waits
// are under way. The caller gives it back with unspin.
func (g *waitGauge) trySpin(spinMax, maxWaits int32) bool {
	if spinMax <= 0 || g.waits() > maxWaits {
		return false
	}
	if _, spins := g.add(gaugeSpin); spins > spinMax {
		g.add(-gaugeSpin)
		return false
	}
	return true
}

// unspin gives back a place trySpin took.
func (g *waitGauge) unspin() { g.add(-gaugeSpin) }

// unspin gives back w's spin place, before a wait that does not spin.
func (w *gaugeWait) unspin() {
	if w.spin {
		w.spin = false
		w.held -= gaugeSpin
		w.g.unspin()
	}
}

// leave ends w: one add gives back the wait and any spin place it holds.
func (w *gaugeWait) leave() { w.g.add(-w.held) }

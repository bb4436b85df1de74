package ring

import "sync/atomic"

// MaxNap is the most Readers one Napper.Nap sleeps on: the kernel's limit
// for one wait on many futexes, less the Napper's own word.
const MaxNap = 127

// A Napper lets one goroutine that watches many rings, each through a
// Reader it holds (Reader.Hold), sleep until any of them has something for
// Next, instead of spinning over them or handing each back to a waiter of
// its own: one system call waits on every ring's futex, and the writer of
// the first record to come wakes it as it would wake that ring's own
// sleeping owner. Another goroutine ends a nap with Wake, for work that no
// ring announces (a ring handed to the watcher, its stop). The zero value
// is ready to use.
type Napper struct {
	st atomic.Pointer[napState] // made at the first use, never changed
}

// napState is what a Napper gives the kernel the addresses of: on the
// heap, where they stay put, whatever the Napper's own place (a stack
// moves).
//
// Invariant: bell is raised (non-zero) by Wake and lowered by Nap, which
// sleeps only while it reads zero there; Nap alone uses waiters.
type napState struct {
	bell    atomic.Uint32
	waiters [MaxNap + 1]futexWaitv
}

// futexWaitv is the kernel's struct futex_waitv: one word of a wait on
// many.
type futexWaitv struct {
	val   uint64
	uaddr uint64
	flags uint32
	_     uint32
}

// state returns n's state, making it at the first call.
func (n *Napper) state() *napState {
	if st := n.st.Load(); st != nil {
		return st
	}
	n.st.CompareAndSwap(nil, new(napState))
	return n.st.Load()
}

// Wake ends the Nap in progress, or the next one as soon as it starts.
// Any goroutine; it costs a system call, so a caller wakes a Napper only
// when it knows it to be napping.
func (n *Napper) Wake() {
	st := n.state()
	st.bell.Store(1)
	futexWakePrivate(&st.bell)
}

package engine

import "github.com/panjf2000/gnet/v2/pkg/pool/goroutine"

// gnet's goroutine package makes a worker pool when it is imported, which
// gnet submits to only on Windows. The pool keeps two goroutines that
// wake on timers (twice a second, to update its clock, and to purge idle
// workers), and an idle Go process woken that often pays for it: on a
// virtual machine each wake-up costs a few hundred microseconds of CPU.
// Nothing submits to the pool on Linux, so its timers are stopped here.
func init() {
	goroutine.DefaultWorkerPool.Release()
}

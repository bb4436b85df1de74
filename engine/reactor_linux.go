package engine

import "github.com/panjf2000/gnet/v2/pkg/pool/goroutine"

// gnet's goroutine package makes a worker pool when it is imported, which
// gnet submits to on Linux only from EventLoop.Register and Enroll; the
// engine enrols connections through gnet's Client instead and never uses
// the pool. The pool keeps two goroutines that wake on timers (twice a
// second to update its clock, and to purge idle workers), and an idle Go
// process woken that often pays for it: on a virtual machine each wake-up
// costs a few hundred microseconds of CPU. So its timers are stopped
// here. A program that calls those gnet methods itself beside the engine
// finds the pool closed.
func init() {
	goroutine.DefaultWorkerPool.Release()
}

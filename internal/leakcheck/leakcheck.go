// Package leakcheck holds test helpers that fail a test when it leaks
// descriptors or goroutines. It is imported only by _test.go files.
package leakcheck

import (
	"os"
	"runtime"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// GoleakOptions are the ignores every package's TestMain passes to goleak.
// gnet starts two goroutines of its global ants pool at package init; they
// live for the whole process and are not ours to join.
var GoleakOptions = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
	goleak.IgnoreAnyFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
}

// VerifyTestMain runs the package's tests and then fails if any goroutine
// outlived them. Call it from TestMain.
func VerifyTestMain(m *testing.M) {
	goleak.VerifyTestMain(m, GoleakOptions...)
}

// Find reports the goroutines still running beyond the test binary's
// own, with GoleakOptions: for a TestMain that runs m.Run itself (it
// sets the package up and tears it down around the run) and checks
// after it.
func Find() error {
	return goleak.Find(GoleakOptions...)
}

// CountFDs returns the number of open descriptors of this process, read from
// /proc/self/fd. It returns -1 where /proc is not available.
func CountFDs() int {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return -1
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return -1
	}
	return len(names) - 1 // the descriptor of d itself
}

// Check records the descriptor count and fails the test at cleanup if the
// count has not returned to it, or if goroutines started during the test are
// still running. Finalizers may close descriptors, so it collects garbage and
// waits up to two seconds for the counts to settle before failing.
func Check(t testing.TB) {
	t.Helper()
	before := CountFDs()
	ignore := append([]goleak.Option{goleak.IgnoreCurrent()}, GoleakOptions...)
	t.Cleanup(func() {
		t.Helper()
		if err := goleak.Find(ignore...); err != nil {
			t.Errorf("leaked goroutines: %v", err)
		}
		if before < 0 {
			return
		}
		deadline := time.Now().Add(2 * time.Second)
		for {
			runtime.GC()
			after := CountFDs()
			if after <= before {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("leaked %d file descriptors (%d before, %d after)", after-before, before, after)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

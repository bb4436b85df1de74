package engine

import (
	"testing"

	"github.com/panjf2000/gnet/v2/pkg/pool/goroutine"
)

// TestGnetPoolStopped: the worker pool gnet makes at import, unused on
// Linux, is closed, so its timers do not wake an idle process.
func TestGnetPoolStopped(t *testing.T) {
	if !goroutine.DefaultWorkerPool.IsClosed() {
		t.Fatal("gnet's default worker pool is open: its timers wake the process twice a second")
	}
}

package uds

import (
	"os"
	"testing"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

func TestMain(m *testing.M) {
	if runChild() {
		return // runChild exits; this is for the compiler
	}
	// Start the runtime's poller now so that its descriptors are not
	// counted as leaked by the first test that uses the net package.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	leakcheck.VerifyTestMain(m)
}

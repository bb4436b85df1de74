package perf

import (
	"io"
	"os"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// helperEnv selects a helper mode when the test binary is re-executed as a
// child process.
const helperEnv = "PERF_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "burn":
		// Spend CPU, say so, then wait for the parent to close stdin.
		burn(50 * time.Millisecond)
		os.Stdout.WriteString("burnt\n")
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	case "":
	default:
		os.Exit(3)
	}
	leakcheck.VerifyTestMain(m)
}

// burnSink keeps burn's arithmetic from being optimised away.
var burnSink uint64

// burn spins on the CPU for about d of wall time.
func burn(d time.Duration) {
	var x uint64
	for end := time.Now().Add(d); time.Now().Before(end); {
		for i := 0; i < 10000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	burnSink = x
}

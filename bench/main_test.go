package bench

import (
	"os"
	"testing"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

func TestMain(m *testing.M) {
	RunChildIfRequested()
	// Children are this test binary; under -race each would sleep a second
	// at exit (the race runtime's default), which only slows the suite.
	if os.Getenv("GORACE") == "" {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	if runFakeTestToolIfRequested() {
		os.Exit(0)
	}
	leakcheck.VerifyTestMain(m)
}

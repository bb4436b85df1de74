package bench

import (
	"fmt"
	"syscall"
)

// ensureFiles raises the soft RLIMIT_NOFILE of this process to at least
// need descriptors, up to the hard limit, and makes children (the servers,
// the C and git clients) inherit it. Go raises the soft limit at start-up
// already, but gives children the original one unless the program sets
// the limit itself: so it is set here even when it is high enough.
func ensureFiles(need uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("bench: getrlimit: %w", err)
	}
	if lim.Cur < need && lim.Max < need {
		return fmt.Errorf("bench: %d descriptors needed, hard RLIMIT_NOFILE is %d (raise it with ulimit -Hn)", need, lim.Max)
	}
	lim.Cur = max(lim.Cur, need)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("bench: setrlimit nofile %d: %w", need, err)
	}
	return nil
}

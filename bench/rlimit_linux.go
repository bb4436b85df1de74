package bench

import (
	"fmt"
	"syscall"
)

// ensureFiles raises the soft RLIMIT_NOFILE of this process to at least
// need descriptors, up to the hard limit. Go raises the soft limit at
// start-up already, but restores the original for children unless the limit
// is set explicitly; an explicit raise here is inherited by server children.
func ensureFiles(need uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("bench: getrlimit: %w", err)
	}
	if lim.Cur >= need {
		return nil
	}
	if lim.Max < need {
		return fmt.Errorf("bench: %d descriptors needed, hard RLIMIT_NOFILE is %d (raise it with ulimit -Hn)", need, lim.Max)
	}
	lim.Cur = need
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("bench: setrlimit nofile %d: %w", need, err)
	}
	return nil
}

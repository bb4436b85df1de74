package engine

import (
	"fmt"
	"os"
)

// runChild runs a helper-process role and returns its exit code.
func runChild(role string) int {
	switch role {
	default:
		fmt.Fprintf(os.Stderr, "unknown child role %q\n", role)
		return 2
	}
}

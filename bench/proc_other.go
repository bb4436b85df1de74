//go:build !linux

package bench

import (
	"os"
	"os/exec"
)

// setChildAttrs does nothing where process groups and the parent-death
// signal are not available through this package's portable code.
func setChildAttrs(cmd *exec.Cmd) {}

// killGroup signals the child itself.
func killGroup(cmd *exec.Cmd, hard bool) error {
	if cmd.Process == nil {
		return nil
	}
	if hard {
		return cmd.Process.Kill()
	}
	return cmd.Process.Signal(os.Interrupt)
}

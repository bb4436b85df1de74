//go:build !unix

package main

import "os/exec"

// detach does nothing here: the daemon cannot watch on these systems
// (fsmonitor returns errors.ErrUnsupported), so start reports its exit.
func detach(*exec.Cmd) {}

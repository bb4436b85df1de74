//go:build unix

package main

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

// detach puts the daemon in a session of its own, so that the terminal's
// signals (^C, hang-up) that reach whoever started it do not reach it,
// and keeps it from inheriting descriptors. git hands its hook whatever
// it inherited itself (its trace file, a pipe of whoever ran git); a
// daemon holding a pipe's write end would keep its reader waiting for
// end-of-file for as long as the daemon runs.
func detach(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	fds, err := os.ReadDir("/dev/fd")
	if err != nil {
		return // nothing to do on a system without it but hope
	}
	for _, e := range fds {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

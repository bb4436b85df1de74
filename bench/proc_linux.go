package bench

import (
	"os/exec"
	"syscall"
)

// setChildAttrs puts a child in its own process group, so that a terminal's
// Ctrl-C reaches only the benchmark (which then stops children in order)
// and so that killing the group also ends processes the child forked; and
// asks the kernel to kill it if the benchmark dies first.
func setChildAttrs(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}

// killGroup sends SIGTERM (or SIGKILL when hard) to the child's process
// group.
func killGroup(cmd *exec.Cmd, hard bool) error {
	if cmd.Process == nil {
		return nil
	}
	sig := syscall.SIGTERM
	if hard {
		sig = syscall.SIGKILL
	}
	return syscall.Kill(-cmd.Process.Pid, sig)
}

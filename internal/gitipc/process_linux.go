package gitipc

import (
	"os"
	"syscall"
)

// processExited reports whether p has exited, reaping it if so; it never
// blocks (wait4 with WNOHANG), so start-daemon can tell a daemon that died
// from one still starting without a goroutine parked in Wait.
func processExited(p *os.Process) bool {
	var ws syscall.WaitStatus
	for {
		pid, err := syscall.Wait4(p.Pid, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		// ECHILD: already reaped, so it is gone too.
		return pid == p.Pid || err == syscall.ECHILD
	}
}

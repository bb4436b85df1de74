package engine

import "syscall"

// recvPeek reads what fd's input holds into p without consuming it or
// waiting. On 386, Linux's socket calls go through socketcall(2), which
// the syscall package wraps; it is an ordinary call here.
func recvPeek(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, err := syscall.Recvfrom(fd, p, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n, err
}

//go:build unix && !linux

package engine

import "syscall"

// Elsewhere than on Linux the socket calls are ordinary system calls
// (macOS reaches the kernel through its C library).
func sysRead(fd uintptr, p []byte) (int, error)  { return syscall.Read(int(fd), p) }
func sysWrite(fd uintptr, p []byte) (int, error) { return syscall.Write(int(fd), p) }
func sysClose(fd int) error                      { return syscall.Close(fd) }
func sysShutdown(fd int) error                   { return syscall.Shutdown(fd, syscall.SHUT_RDWR) }

// recvPeek reads what fd's input holds into p without consuming it or
// waiting.
func recvPeek(fd int, p []byte) (int, error) {
	n, _, err := syscall.Recvfrom(fd, p, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n, err
}

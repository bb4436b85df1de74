//go:build unix

package engine

import "syscall"

// The persistent client reads and writes its socket with raw non-blocking
// system calls inside RawConn callbacks, so it can spin briefly before it
// parks in the netpoller; pooled handlers write replies on the server's own
// duplicate of a connection's socket.
func sysRead(fd uintptr, p []byte) (int, error)  { return syscall.Read(int(fd), p) }
func sysWrite(fd uintptr, p []byte) (int, error) { return syscall.Write(int(fd), p) }
func sysClose(fd int) error                      { return syscall.Close(fd) }

// recvPeek reads what fd's input holds into p without consuming it or
// waiting.
func recvPeek(fd int, p []byte) (int, error) {
	n, _, err := syscall.Recvfrom(fd, p, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n, err
}

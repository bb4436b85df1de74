//go:build unix

package engine

import "syscall"

// The persistent client reads and writes its socket with raw non-blocking
// system calls inside RawConn callbacks, so it can spin briefly before it
// parks in the netpoller.
func sysRead(fd uintptr, p []byte) (int, error)  { return syscall.Read(int(fd), p) }
func sysWrite(fd uintptr, p []byte) (int, error) { return syscall.Write(int(fd), p) }

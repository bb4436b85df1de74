//go:build !unix

package engine

import "errors"

func sysRead(uintptr, []byte) (int, error)               { return 0, errors.ErrUnsupported }
func sysWrite(uintptr, []byte) (int, error)              { return 0, errors.ErrUnsupported }
func sysClose(int) error                                 { return errors.ErrUnsupported }
func sysShutdown(int) error                              { return errors.ErrUnsupported }
func recvPeek(int, []byte) (int, error)                  { return 0, errors.ErrUnsupported }
func socketPair() ([2]int, error)                        { return [2]int{-1, -1}, errors.ErrUnsupported }
func writeAvailable(uintptr, []byte, *int) (bool, error) { return true, errors.ErrUnsupported }

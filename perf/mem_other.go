//go:build !linux

package perf

import "errors"

// PidMemory is Linux only; elsewhere it returns errors.ErrUnsupported.
func PidMemory(pid int) (Memory, error) { return Memory{}, errors.ErrUnsupported }

//go:build !linux

package perf

import (
	"errors"
	"time"
)

// ProcessCPU is Linux only; elsewhere it returns errors.ErrUnsupported.
func ProcessCPU() (CPUTime, error) { return CPUTime{}, errors.ErrUnsupported }

// ChildrenCPU is Linux only; elsewhere it returns errors.ErrUnsupported.
func ChildrenCPU() (CPUTime, error) { return CPUTime{}, errors.ErrUnsupported }

// PidCPU is Linux only; elsewhere it returns errors.ErrUnsupported.
func PidCPU(pid int) (CPUTime, error) { return CPUTime{}, errors.ErrUnsupported }

// PidCPUClock is Linux only; elsewhere it returns errors.ErrUnsupported.
func PidCPUClock(pid int) (time.Duration, error) { return 0, errors.ErrUnsupported }

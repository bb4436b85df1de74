//go:build !linux

package perf

import "errors"

// SetAffinity is Linux only; elsewhere it returns errors.ErrUnsupported.
func SetAffinity(cpus ...int) error { return errors.ErrUnsupported }

// Affinity is Linux only; elsewhere it returns errors.ErrUnsupported.
func Affinity() ([]int, error) { return nil, errors.ErrUnsupported }

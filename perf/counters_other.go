//go:build !linux

package perf

import "errors"

// Counters counts events of one process. It exists only on Linux; elsewhere
// OpenCounters returns errors.ErrUnsupported.
type Counters struct{}

// OpenCounters is Linux only; elsewhere it returns errors.ErrUnsupported.
func OpenCounters(pid int, events ...Event) (*Counters, error) {
	return nil, errors.ErrUnsupported
}

// Err returns errors.ErrUnsupported.
func (c *Counters) Err(e Event) error { return errors.ErrUnsupported }

// UserOnly returns false.
func (c *Counters) UserOnly() bool { return false }

// Read returns errors.ErrUnsupported.
func (c *Counters) Read() (Sample, error) { return Sample{}, errors.ErrUnsupported }

// Close does nothing.
func (c *Counters) Close() error { return nil }

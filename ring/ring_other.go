//go:build !linux || !(386 || amd64 || arm64 || loong64 || ppc64le || riscv64)

package ring

import (
	"errors"
	"os"
	"sync/atomic"
	"time"
)

// Supported reports whether this build can make and map rings.
const Supported = false

// Create needs memfd_create and file seals, which only Linux has, and
// atomics that the peer process honours (see ring_linux.go).
func Create(capacity int) (*os.File, error) { return nil, errors.ErrUnsupported }

// NewWriter is not supported on this platform.
func NewWriter(f *os.File, opts *Options) (*Writer, error) { return nil, errors.ErrUnsupported }

// NewReader is not supported on this platform.
func NewReader(f *os.File, opts *Options) (*Reader, error) { return nil, errors.ErrUnsupported }

// futexWait cannot park without a futex; it sleeps briefly instead. It is
// unreachable, since no ring can be made here.
func futexWait(word *atomic.Uint32, val uint32, timeout time.Duration) { time.Sleep(time.Millisecond) }

func futexWake(word *atomic.Uint32) {}

// NewDoorbell is not supported on this platform.
func NewDoorbell() (wait *Doorbell, ring *os.File, err error) {
	return nil, nil, errors.ErrUnsupported
}

// Fd returns -1: no doorbell can be made here.
func (d *Doorbell) Fd() int { return -1 }

// Drain is not supported on this platform.
func (d *Doorbell) Drain() error { return errors.ErrUnsupported }

// Wait is not supported on this platform.
func (d *Doorbell) Wait(timeout time.Duration) (bool, error) { return false, errors.ErrUnsupported }

// Close is not supported on this platform.
func (d *Doorbell) Close() error { return errors.ErrUnsupported }

func ringBell(fd int) {}

func closeBell(fd int) {}

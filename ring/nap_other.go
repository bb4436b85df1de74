//go:build !linux || !(386 || amd64 || arm64 || loong64 || ppc64le || riscv64)

package ring

import (
	"errors"
	"sync/atomic"
	"time"
)

// Nap needs a wait on many futexes, which only Linux has.
func (n *Napper) Nap(rs []*Reader, d time.Duration) error { return errors.ErrUnsupported }

func futexWakePrivate(word *atomic.Uint32) {}

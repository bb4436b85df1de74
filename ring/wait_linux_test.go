//go:build 386 || amd64 || arm64 || loong64 || ppc64le || riscv64

package ring

import (
	"sync/atomic"
	"testing"
	"time"
)

// readyAt is a wait condition that holds from its n-th look on.
type readyAt struct{ n, looks int }

func (c *readyAt) ready() (bool, error) {
	c.looks++
	return c.looks >= c.n, nil
}

// TestWaitLearnsShortWaits: a wait that the peer ends within a few
// microseconds, whichever try it ends on (before, at and after the try
// at which the clock is first read), counts as short: the spin budget
// grows back to its maximum and never shrinks.
func TestWaitLearnsShortWaits(t *testing.T) {
	for _, n := range []int{1, 255, 256, 257, 511, 512, 513, 700} {
		sp := newSpinner(time.Second)
		sp.cur = time.Second / 4
		var word atomic.Uint32
		var dl deadline
		c := &readyAt{n: n}
		if err := wait(c, &word, &sp, &dl); err != nil {
			t.Fatalf("ready at try %d: %v", n, err)
		}
		if c.looks != n {
			t.Fatalf("ready at try %d: %d looks", n, c.looks)
		}
		if sp.cur < time.Second/4 {
			t.Errorf("ready at try %d: spin budget shrank to %v", n, sp.cur)
		}
	}
}

//go:build !race

package fdpass

import (
	"testing"

	"github.com/pktipc/pktipc/internal/leakcheck"
	"golang.org/x/sys/unix"
)

// TestZeroAllocs: once warm, a send with descriptors, its completion, the
// receive and the close allocate nothing, in every shape. (Race mode
// allocates, hence the build tag.)
func TestZeroAllocs(t *testing.T) {
	leakcheck.Check(t)
	fd := pipeWith(t, "")
	defer unix.Close(fd)
	for _, tc := range []struct {
		name  string
		nfds  int
		data  int
		sends int // messages queued per round (several: bundles)
		extra []Option
	}{
		{"framed/1fd", 1, 0, 1, nil},
		{"framed/16fds+data", 16, 100, 1, nil},
		{"framed/253fds+4KiB", 253, 4096, 1, nil},
		{"framed/600fds", 600, 10, 1, nil},
		{"framed/bundles-of-1fd", 1, 8, 32, nil},
		{"raw/8fds", 8, 0, 1, []Option{WithMode(Raw)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := pair(t, append([]Option{KeepOpen()}, tc.extra...)...)
			fds := make([]int, tc.nfds)
			for i := range fds {
				fds[i] = fd
			}
			data := make([]byte, tc.data)
			completed := make(chan struct{}, tc.sends)
			done := func(err error) {
				if err != nil {
					t.Error(err)
				}
				completed <- struct{}{}
			}
			msgs := tc.sends
			if b.Mode() == Raw {
				msgs = tc.nfds
			}
			var m Message
			round := func() {
				for i := 0; i < tc.sends; i++ {
					if err := a.SendFDs(fds, data, done); err != nil {
						t.Fatal(err)
					}
				}
				for i := 0; i < msgs; i++ {
					if err := b.RecvInto(deadline(), &m); err != nil {
						t.Fatal(err)
					}
					m.Close()
				}
				for i := 0; i < tc.sends; i++ {
					<-completed
				}
			}
			for i := 0; i < 20; i++ {
				round() // warm the pools and buffers
			}
			if n := testing.AllocsPerRun(200, round); n != 0 {
				t.Errorf("%v allocations per message, want 0", n)
			}
		})
	}
}

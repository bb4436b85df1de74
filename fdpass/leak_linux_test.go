package fdpass

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
	"golang.org/x/sys/unix"
)

// passCount is the number of descriptors TestManyPasses sends to the echo
// child; each also comes back, so the descriptor tables see twice as many
// transfers. FDPASS_PASSES overrides it (1,000,000 makes a soak run).
func passCount(t *testing.T) int {
	if s := os.Getenv("FDPASS_PASSES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("FDPASS_PASSES: %v", err)
		}
		return n
	}
	return 100_000
}

// TestManyPasses: 100,000 descriptors go to a child and back (10
// per message, bundled), then 20,000 in the FDpasser shape (one per
// receive), with a descriptor dropped by a simulated MSG_CTRUNC on 1% of
// the parent's receives; the descriptor counts of both processes end where
// they started.
func TestManyPasses(t *testing.T) {
	leakcheck.Check(t)
	total := passCount(t)
	t.Run("framed", func(t *testing.T) { manyPasses(t, Framed, 10, total) })
	t.Run("raw", func(t *testing.T) { manyPasses(t, Raw, 1, total/5) })
}

func manyPasses(t *testing.T, mode Mode, perMsg, total int) {
	var reads, dropped atomic.Int64
	swapRecvmsg(t, func(fd int, msg *unix.Msghdr, flags int) (int, error) {
		n, err := recvmsg(fd, msg, flags)
		if err == nil && msg.Controllen > 0 && reads.Add(1)%100 == 0 && dropLastFD(msg) {
			dropped.Add(1)
		}
		return n, err
	})
	before := leakcheck.CountFDs()
	const window = 64
	msgs := total / perMsg
	c := startChild(t, helperCmd(t, "echo", mode.String()), KeepOpen(), WithMode(mode))
	c.expect("ready")
	fd := pipeWith(t, "")
	ino := inode(t, fd)
	fds := make([]int, perMsg)
	for i := range fds {
		fds[i] = fd
	}
	start := time.Now()
	sent, truncated, got := 0, 0, 0
	var m Message
	for sent < window && sent < msgs {
		c.p.SendFDs(fds, nil, nil)
		sent++
	}
	for got < msgs {
		err := c.p.RecvInto(deadline(), &m)
		got++
		var te *TruncatedError
		switch {
		case errors.As(err, &te):
			if te.Want != perMsg || te.Got != perMsg-1 || len(m.FDs) != 0 {
				t.Fatalf("truncation %+v with %d fds left", te, len(m.FDs))
			}
			truncated++
		case err != nil:
			t.Fatalf("message %d: %v", got, err)
		case len(m.FDs) != perMsg:
			t.Fatalf("message %d: %d descriptors", got, len(m.FDs))
		default:
			if got%1000 == 0 && inode(t, m.FDs[0]) != ino {
				t.Fatalf("message %d: wrong file", got)
			}
			m.Close()
		}
		if sent < msgs {
			if err := c.p.SendFDs(fds, nil, nil); err != nil {
				t.Fatal(err)
			}
			sent++
		}
	}
	elapsed := time.Since(start)
	recvs := c.p.Stats().RecvCalls
	c.p.Shutdown(t.Context())
	unix.Close(fd)
	var cb, ca, n int
	fmt.Sscanf(c.expect("fds"), "%d %d messages %d", &cb, &ca, &n)
	c.wait()
	t.Logf("%d descriptors each way in %v (%.0f/s) over %d receives; %d dropped by injection", total, elapsed, float64(2*total)/elapsed.Seconds(), recvs, dropped.Load())
	if cb != ca || n != msgs {
		t.Errorf("child: %d descriptors before, %d after, %d messages", cb, ca, n)
	}
	if d := dropped.Load(); d == 0 || int64(truncated) != d {
		t.Errorf("%d truncated messages for %d injected truncations", truncated, d)
	}
	if after := leakcheck.CountFDs(); after != before {
		t.Errorf("parent: %d descriptors before, %d after", before, after)
	}
}

// TestPeerKilled: a child killed while descriptors are in flight both
// ways leaves the parent with a typed error and its descriptor count at
// the baseline.
func TestPeerKilled(t *testing.T) {
	leakcheck.Check(t)
	before := leakcheck.CountFDs()
	for round := 0; round < 5; round++ {
		c := startChild(t, helperCmd(t, "echo"))
		c.expect("ready")
		for i := 0; i < 50; i++ {
			c.p.SendFDs([]int{pipeWith(t, "x"), pipeWith(t, "y")}, []byte("kill me"), nil)
		}
		var m Message
		for i := 0; i < 10; i++ {
			if err := c.p.RecvInto(deadline(), &m); err != nil {
				t.Fatal(err)
			}
			m.Close()
		}
		c.cmd.Process.Kill()
		var err error
		for err == nil {
			if err = c.p.RecvInto(deadline(), &m); err == nil {
				m.Close()
			}
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("round %d: no error after the peer died", round)
		}
		c.stop()
	}
	if after := leakcheck.CountFDs(); after != before {
		t.Errorf("%d descriptors before, %d after", before, after)
	}
}

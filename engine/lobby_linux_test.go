package engine

import (
	"context"
	"io"
	"net"
	"runtime"
	"testing"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// TestLobbyHoldsNoGoroutines: the lobby's waiters wait on one poller, not
// on a goroutine each; a waiter that hangs up is closed at once, one that
// sends its request late is admitted and answered, and the poller ends
// once the lobby is empty.
func TestLobbyHoldsNoGoroutines(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(gitDaemon), WithMaxConns(100, 8))
	for range 6 { // three quarters of the uid's cap, proven: pressure
		c, err := Dial(context.Background(), ts.path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	before := ts.Stats()
	base := runtime.NumGoroutine()
	const silent = 12 // what the lobby holds for a uid capped at 8
	conns := make([]*net.UnixConn, silent)
	for i := range conns {
		conns[i] = dialRaw(t, ts.path)
	}
	waitFor(t, func() bool { return ts.Stats().Lobbied-before.Lobbied == silent })
	if grew := runtime.NumGoroutine() - base; grew > 2 {
		t.Errorf("%d silent waiters cost %d goroutines", silent, grew)
	}

	// A request, late: the waiter is admitted and answered.
	if _, err := conns[0].Write([]byte("0008ping0000")); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conns[0])
	if err != nil || string(got) != "0008pong0000" {
		t.Fatalf("late request answered %q, %v", got, err)
	}
	// Hang-ups are seen at once, not at the end of the wait.
	for _, c := range conns[1:] {
		c.Close()
	}
	waitFor(t, func() bool {
		st := ts.Stats()
		return st.LobbyAdmitted-before.LobbyAdmitted == 1 && st.LobbyClosed-before.LobbyClosed == silent-1
	})
	waitFor(t, func() bool { return runtime.NumGoroutine() <= base })
}

package engine

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
	"github.com/pktipc/pktipc/uds"
)

// TestAdmissionSparesVouched: at a cap, admit evicts the oldest connection
// not yet proven, passing over older ones that were vouched for (their
// whole first request came with them, and their loops have yet to read
// it); with only vouched and proven ones left, a newcomer is refused.
func TestAdmissionSparesVouched(t *testing.T) {
	a := newAdmission(3, 3)
	cred := uds.Cred{UID: 1000}
	idOf := func(c *conn) any { // for messages: the victim's ID, or nil
		if c == nil {
			return nil
		}
		return c.peer.ID
	}
	join := func(id uint64, vouched bool) *conn {
		t.Helper()
		if ok, victim := a.admit(cred); !ok || victim != nil {
			t.Fatalf("connection %d below the cap: admitted %v, victim %v", id, ok, victim != nil)
		}
		c := &conn{peer: Peer{ID: id, Cred: cred}, vouched: vouched}
		a.register(c)
		return c
	}
	oldest := join(1, true)
	silent := join(2, false)
	join(3, true)
	ok, victim := a.admit(cred)
	if !ok || victim != silent {
		t.Fatalf("at the cap: admitted %v, victim %v; want connection 2, the one not vouched for", ok, idOf(victim))
	}
	a.release(victim) // its close follows the eviction
	newest := &conn{peer: Peer{ID: 4, Cred: cred}, vouched: true}
	a.register(newest)
	if ok, victim := a.admit(cred); ok || victim != nil {
		t.Fatalf("at a cap of vouched connections: admitted %v, victim %v; want a refusal", ok, idOf(victim))
	}
	if !oldest.provenLoop || oldest.inList {
		t.Fatalf("a vouched connection: proven %v, in the eviction order %v", oldest.provenLoop, oldest.inList)
	}
	a.prove(oldest) // its loop's first request: nothing changes
	a.release(oldest)
	if ok, victim := a.admit(cred); !ok || victim != nil {
		t.Fatalf("after a close: admitted %v, victim %v", ok, idOf(victim))
	}
}

// TestVouchedAtAdmission: a connection that shows a whole request when it
// is admitted (a handshake, in the lobby under pressure) joins its loop
// vouched for; one whose input only fills the lobby's look with packets
// (a large request on its way), and a silent one, join unproven, and
// remain the ones a newcomer at the cap evicts.
func TestVouchedAtAdmission(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(gitDaemon), WithMaxConns(100, 4))
	silent := dialRaw(t, ts.path)
	waitFor(t, func() bool { return ts.Stats().Open == 1 })
	for range 2 { // three of the uid's four: under pressure from here
		c, err := Dial(context.Background(), ts.path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	waitFor(t, func() bool { return ts.Stats().Open == 3 })
	large := dialRaw(t, ts.path)
	packet := append([]byte("0104"), bytes.Repeat([]byte{'x'}, 256)...)
	if _, err := large.Write(bytes.Repeat(packet, 3)); err != nil { // no flush: the request goes on
		t.Fatal(err)
	}
	waitFor(t, func() bool { return ts.Stats().Open == 4 })
	if st := ts.Stats(); st.Lobbied != 1 || st.LobbyAdmitted != 1 {
		t.Fatalf("the large request: %d connections waited in the lobby, %d left it for a loop; want 1 and 1", st.Lobbied, st.LobbyAdmitted)
	}
	handshake, err := Dial(context.Background(), ts.path) // at the cap
	if err != nil {
		t.Fatal(err)
	}
	defer handshake.Close()
	if d := closedWithin(t, silent, time.Now()); d > 2*time.Second {
		t.Fatalf("the silent connection was closed after %v", d)
	}
	waitFor(t, func() bool { return ts.Stats().Open == 4 })

	a := ts.adm
	a.mu.Lock()
	open := make([]*conn, 0, len(a.open))
	for c := range a.open {
		open = append(open, c)
	}
	slices.SortFunc(open, func(x, y *conn) int { return cmp.Compare(x.peer.ID, y.peer.ID) })
	vouched := make([]bool, len(open))
	for i, c := range open {
		vouched[i] = c.vouched
	}
	a.mu.Unlock()
	// In the order admitted: two handshakes (vouched for or not, as the
	// accept loop's first look found them), the large request, the
	// handshake at the cap.
	if len(vouched) != 4 || vouched[2] || !vouched[3] {
		t.Fatalf("vouched for, in the order admitted: %v; want the large request's not, the last handshake's yes", vouched)
	}

	// The next newcomer takes the large request's place; then every
	// place is a proven connection's, and one more is refused.
	next, err := Dial(context.Background(), ts.path)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if d := closedWithin(t, large, time.Now()); d > 2*time.Second {
		t.Fatalf("the large request's connection was closed after %v", d)
	}
	if _, err := Send(context.Background(), ts.path, []byte("ping")); !errors.Is(err, ErrIncompleteReply) && !errors.Is(err, ErrNotProcessed) {
		t.Fatalf("a client over a cap of proven ones: %v", err)
	}
	if st := ts.Stats(); st.Evicted != 2 || st.OverCap != 1 {
		t.Fatalf("Evicted = %d, OverCap = %d, want 2 and 1", st.Evicted, st.OverCap)
	}
}

//go:build !race

package uds

import "testing"

// Admitting a peer is on every accept: it must not allocate.
func TestPolicyAllowDoesNotAllocate(t *testing.T) {
	for _, p := range []Policy{SameUser(), RootOnly(), AllowUIDs(1, 2, 0), AllowGIDs(0), AllowAll()} {
		cred := Cred{PID: 1, UID: 0, GID: 0}
		if n := testing.AllocsPerRun(100, func() {
			if p.Allow(cred) != nil {
				t.Fatal("denied")
			}
		}); n != 0 {
			t.Errorf("%T.Allow allocates %v times", p, n)
		}
	}
}

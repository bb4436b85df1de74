package engine

import (
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// The reaper closes a connection for the deadline it found passed, not for
// the one its loop has started since: a request that came to a connection
// whose idle deadline the reaper had just found passed is not closed as a
// request that timed out.
func TestReaperActsOnWhatItSaw(t *testing.T) {
	leakcheck.Check(t)
	ts := startServer(t, HandlerFunc(echo), WithIdleTimeout(time.Hour), WithRequestTimeout(time.Hour))
	c := dialClient(t, ts.path)
	if _, err := c.Call([]byte("a")); err != nil {
		t.Fatal(err)
	}
	s := ts.Server
	var conn *conn
	waitFor(t, func() bool {
		s.adm.mu.Lock()
		defer s.adm.mu.Unlock()
		for cn := range s.adm.open {
			if cn.dl.load().why == whyIdle {
				conn = cn
			}
		}
		return conn != nil
	})
	var r reapScratch
	s.findExpired(&r, s.now()+int64(2*time.Hour)) // its idle deadline passed
	if len(r.expired) != 1 {
		t.Fatalf("found %d expired connections, want 1", len(r.expired))
	}
	// A request comes meanwhile, as its loop would record it.
	conn.dl.store(whyRequest, s.now())
	s.closeExpired(&r)
	conn.dl.store(whyIdle, s.now())
	if got, err := c.Call([]byte("b")); err != nil || string(got) != "re:b" {
		t.Fatalf("Call after the reaper's pass: %q, %v", got, err)
	}
	if st := s.Stats(); st.RequestTimeout != 0 || st.IdleTimeout != 0 {
		t.Fatalf("timeouts counted: request %d, idle %d", st.RequestTimeout, st.IdleTimeout)
	}
}

package engine

import (
	"bytes"
	"context"
	"runtime/debug"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// onWorker reports whether the caller runs on a pool worker.
func onWorker() bool { return bytes.Contains(debug.Stack(), []byte("(*Server).worker")) }

// TestInlineFilter: with one event loop, a "slow" request that blocks runs
// on a worker, so a quick request on another connection is answered on the
// loop meanwhile (were slow inline, the loop would be stuck and the test
// would time out). A panicking filter sends its request to the pool.
func TestInlineFilter(t *testing.T) {
	leakcheck.Check(t)
	release, started := make(chan struct{}), make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		where := "loop"
		if onWorker() {
			where = "worker"
		}
		if string(req) == "slow" {
			close(started)
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		_, err := w.WriteString(string(req) + "@" + where)
		return err
	})
	filter := func(req []byte) bool {
		if string(req) == "boom" {
			panic("filter")
		}
		return string(req) != "slow"
	}
	ts := startServer(t, h, WithEventLoops(1), WithInlineFilter(filter))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	slow := make(chan []byte, 1)
	go func() {
		got, err := Send(ctx, ts.path, []byte("slow"))
		if err != nil {
			t.Error(err)
		}
		slow <- got
	}()
	<-started
	for _, tc := range []struct{ req, want string }{{"ping", "ping@loop"}, {"boom", "boom@worker"}} {
		got, err := Send(ctx, ts.path, []byte(tc.req))
		if err != nil || string(got) != tc.want {
			t.Fatalf("%s: %q, %v; want %q", tc.req, got, err, tc.want)
		}
	}
	close(release)
	if got := <-slow; string(got) != "slow@worker" {
		t.Fatalf("slow: %q", got)
	}
	if st := ts.Stats(); st.Panics != 1 {
		t.Fatalf("panics %d, want 1 (the filter's)", st.Panics)
	}
	if _, err := NewServer(socketPath(t), h, WithInlineFilter(nil)); err == nil {
		t.Fatal("WithInlineFilter(nil) accepted")
	}
}

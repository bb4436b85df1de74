package engine

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// serveFor starts a server with h and stops it at the test's end.
func serveFor(t *testing.T, h Handler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s", "sock")
	srv, err := NewServer(path, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for i := 0; i < 100; i++ {
		if _, err := Send(ctx, path, []byte("up?")); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return path
}

// More one-shot Sends at once than the process has Ps: those past the
// poll(2) budget wait in the netpoller; every reply arrives, none is lost.
func TestSendConcurrentOneShot(t *testing.T) {
	leakcheck.Check(t)
	path := serveFor(t, HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		_, err := w.Write(req)
		return err
	}))
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Go(func() {
			for k := 0; k < 300; k++ {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				reply, err := Send(ctx, path, []byte("hello"))
				cancel()
				if err != nil || string(reply) != "hello" {
					t.Errorf("send %d: %q, %v", k, reply, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// A Send waiting for a reply that does not come ends when its context
// does, on either kind of wait, with the context's error.
func TestSendCancelWhileWaiting(t *testing.T) {
	leakcheck.Check(t)
	release := make(chan struct{})
	path := serveFor(t, HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if string(req) == "up?" {
			_, err := w.Write(req)
			return err
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}))
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 6)
	for i := 0; i < cap(errs); i++ {
		go func() {
			_, err := Send(ctx, path, []byte("hang"))
			errs <- err
		}()
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	for i := 0; i < cap(errs); i++ {
		select {
		case err := <-errs:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Send %d: %v, want context.Canceled", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a Send did not end with its context")
		}
	}
	// Deadlines end the wait too.
	dctx, dcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer dcancel()
	if _, err := Send(dctx, path, []byte("hang")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
}

//go:build 386 || amd64 || arm64 || loong64 || ppc64le || riscv64

package engine_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sync"

	"github.com/pktipc/pktipc/engine"
)

// A Client on shared-memory rings: the request is written into memory the
// server's handler reads in place, and with WithRingRepliesInPlace the
// reply is read where the handler wrote it, with no copy on the client's
// side. The reply stays valid until the Client's next call, whichever it
// is. The handler here builds its reply with Reserve and Commit, in the
// reply ring itself.
func ExampleWithRingRepliesInPlace() {
	dir, err := os.MkdirTemp("", "pktipc-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "ipc")
	srv, err := engine.NewServer(path, engine.HandlerFunc(
		func(ctx context.Context, req []byte, w *engine.ReplyWriter) error {
			b, err := w.Reserve(len("seen ") + len(req))
			if err != nil {
				return err
			}
			n := copy(b, "seen ")
			n += copy(b[n:], req)
			return w.Commit(n)
		}), engine.WithRingLimits(4, 1<<20))
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()

	c, err := engine.Dial(context.Background(), path, engine.WithRings(1<<16), engine.WithRingRepliesInPlace())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("rings:", c.Rings())
	for _, event := range []string{"created a", "changed b"} {
		reply, err := c.Call([]byte(event))
		fmt.Printf("%s %v\n", reply, err)
	}
	c.Close()
	_ = srv.Shutdown(context.Background())
	fmt.Println(<-done)
	// Output:
	// rings: true
	// seen created a <nil>
	// seen changed b <nil>
	// engine: server closed
}

// One-way messages on rings: Post lays them out in the Client's memory,
// Flush copies the batch into the ring at once, and the server runs the
// handler for each without a reply. A Call after them returns once they
// have all been handled.
func ExampleClient_Post() {
	dir, err := os.MkdirTemp("", "pktipc-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "ipc")
	var mu sync.Mutex
	var events []string
	srv, err := engine.NewServer(path, engine.HandlerFunc(
		func(ctx context.Context, req []byte, w *engine.ReplyWriter) error {
			mu.Lock()
			defer mu.Unlock()
			if w.OneWay() {
				events = append(events, string(req))
				return nil
			}
			_, err := fmt.Fprintf(w, "%d events", len(events))
			return err
		}), engine.WithRingLimits(4, 1<<20))
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()

	c, err := engine.Dial(context.Background(), path, engine.WithRings(1<<16))
	if err != nil {
		log.Fatal(err)
	}
	for _, event := range []string{"created a", "changed b", "removed c"} {
		if err := c.Post([]byte(event)); err != nil {
			log.Fatal(err)
		}
	}
	if err := c.Flush(); err != nil {
		log.Fatal(err)
	}
	reply, err := c.Call([]byte("count"))
	fmt.Printf("%s %v\n", reply, err)
	mu.Lock()
	fmt.Println(events)
	mu.Unlock()
	c.Close()
	_ = srv.Shutdown(context.Background())
	fmt.Println(<-done)
	// Output:
	// 3 events <nil>
	// [created a changed b removed c]
	// engine: server closed
}

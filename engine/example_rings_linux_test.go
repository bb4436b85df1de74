package engine_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/pktipc/pktipc/engine"
)

// A Client on shared-memory rings: the request is written into memory the
// server's handler reads in place, and with WithRingRepliesInPlace the
// reply is read where the handler wrote it, with no copy on either side.
// The reply stays valid until the next Recv, Call or Close.
func ExampleWithRingRepliesInPlace() {
	dir, err := os.MkdirTemp("", "pktipc-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "ipc")
	srv, err := engine.NewServer(path, engine.HandlerFunc(
		func(ctx context.Context, req []byte, w *engine.ReplyWriter) error {
			_, err := w.Write(append([]byte("seen "), req...))
			return err
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

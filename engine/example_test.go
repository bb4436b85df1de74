package engine_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/pktipc/pktipc/engine"
)

func Example() {
	dir, err := os.MkdirTemp("", "pktipc-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "ipc")

	srv, err := engine.NewServer(path, engine.HandlerFunc(
		func(ctx context.Context, req []byte, w *engine.ReplyWriter) error {
			if string(req) == "ping" {
				_, err := w.WriteString("pong")
				return err
			}
			_, err := w.WriteString("unhandled command: " + string(req))
			return err
		}))
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()

	// git's way: a connection per request.
	reply, err := engine.Send(context.Background(), path, []byte("ping"))
	fmt.Printf("%s %v\n", reply, err)

	// pktipc's way: one connection, pipelined requests.
	c, err := engine.Dial(context.Background(), path)
	if err != nil {
		log.Fatal(err)
	}
	_ = c.Send([]byte("ping"))
	_ = c.Send([]byte("status"))
	for range 2 {
		reply, err := c.Recv()
		fmt.Printf("%s %v\n", reply, err)
	}
	fmt.Println("persistent:", c.Persistent())
	c.Close()

	_ = srv.Shutdown(context.Background())
	fmt.Println(<-done)
	// Output:
	// pong <nil>
	// pong <nil>
	// unhandled command: status <nil>
	// persistent: true
	// engine: server closed
}

// Requests queued with Queue leave together, in one write, when the
// caller flushes; the server answers requests it reads together in one
// write too.
func ExampleClient_Queue() {
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
		}), engine.WithInlineHandlers(true))
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()

	c, err := engine.Dial(context.Background(), path)
	if err != nil {
		log.Fatal(err)
	}
	for _, event := range []string{"created a", "changed b", "deleted c"} {
		if err := c.Queue([]byte(event)); err != nil {
			log.Fatal(err)
		}
	}
	if err := c.Flush(); err != nil { // one write for the three
		log.Fatal(err)
	}
	for range 3 {
		reply, err := c.Recv()
		fmt.Printf("%s %v\n", reply, err)
	}
	c.Close()
	_ = srv.Shutdown(context.Background())
	fmt.Println(<-done)
	// Output:
	// seen created a <nil>
	// seen changed b <nil>
	// seen deleted c <nil>
	// engine: server closed
}

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

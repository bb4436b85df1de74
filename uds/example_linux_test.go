//go:build linux

package uds_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/pktipc/pktipc/uds"
)

// A server owning its socket, a git-style probe, and one exchange.
func Example() {
	dir, err := os.MkdirTemp("", "pk") // private (0700), as Listen requires
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "ipc")

	l, err := uds.Listen(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, cred, err := l.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Println("peer is us:", cred.UID == uint32(os.Geteuid()))
		c.Write([]byte("0008pong0000"))
	}()

	c, err := uds.Dial(context.Background(), path, uds.WaitIfNotFound())
	if err != nil {
		fmt.Println(err)
		return
	}
	reply, _ := io.ReadAll(c)
	c.Close()
	<-done
	fmt.Printf("%s\n", reply)

	_, err = uds.Listen(path)
	fmt.Println("second server:", err != nil)
	fmt.Println("state:", uds.State(path))
	l.Close()
	fmt.Println("state after close:", uds.State(path))
	// Output:
	// peer is us: true
	// 0008pong0000
	// second server: true
	// state: listening
	// state after close: not listening
}

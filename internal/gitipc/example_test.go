package gitipc_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pktipc/pktipc/internal/gitipc"
)

// git's test daemon and test client, as `ipcbench serve` and
// `ipcbench send --token=ping` run them.
func ExampleTool() {
	dir, err := os.MkdirTemp("", "pk")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	opts := gitipc.DefaultOptions()
	opts.Name = filepath.Join(dir, "ipc-test")

	var stderr strings.Builder
	daemon := &gitipc.Tool{Options: opts, Stdout: os.Stdout, Stderr: &stderr}
	done := make(chan int)
	go func() { done <- daemon.RunDaemon(context.Background()) }()

	client := &gitipc.Tool{Options: opts, Stdout: os.Stdout, Stderr: &stderr}
	for client.IsActive() != 0 { // until the daemon listens
		stderr.Reset()
		time.Sleep(time.Millisecond)
	}
	client.Options.Token = "ping"
	client.Send(context.Background())
	client.Options.Bytecount, client.Options.Byte = 5, 'A'
	client.Sendbytes(context.Background())
	client.StopDaemon(context.Background())
	fmt.Println("daemon exit status:", <-done)
	// Output:
	// pong
	// sent:A00000005 rcvd:A00000005
	// daemon exit status: 0
}

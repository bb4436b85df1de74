package bench

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/pktipc/pktipc/frame"
)

// fakeToolEnv makes the test binary act as git's `test-tool simple-ipc`,
// enough of it for the git peer: SUPPORTS_SIMPLE_IPC, run-daemon, is-active
// and multiple, with git's wire behaviour (one request per connection, the
// reply, close) and git's output lines.
const fakeToolEnv = "PKTIPC_FAKE_TESTTOOL"

// writeFakeTestTool writes an executable script that runs this test binary
// as the fake test-tool.
func writeFakeTestTool(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test-tool")
	script := fmt.Sprintf("#!/bin/sh\n%s=1 exec %q \"$@\"\n", fakeToolEnv, os.Args[0])
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func runFakeTestToolIfRequested() bool {
	if os.Getenv(fakeToolEnv) == "" {
		return false
	}
	os.Exit(fakeTestTool(os.Args[1:]))
	return true
}

func fakeTestTool(args []string) int {
	if len(args) == 2 && args[0] == "simple-ipc" && args[1] == "SUPPORTS_SIMPLE_IPC" {
		return 0
	}
	if len(args) < 2 || args[0] != "simple-ipc" {
		fmt.Fprintln(os.Stderr, "usage: test-tool simple-ipc <subcommand>")
		return 129
	}
	fs := flag.NewFlagSet(args[1], flag.ContinueOnError)
	name := fs.String("name", "ipc-test", "")
	threads := fs.Int("threads", 5, "")
	bytecount := fs.Int("bytecount", 1024, "")
	batchsize := fs.Int("batchsize", 10, "")
	if err := fs.Parse(args[2:]); err != nil {
		return 129
	}
	switch args[1] {
	case "run-daemon":
		return fakeDaemon(*name)
	case "is-active":
		c, err := net.Dial("unix", *name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "error: no server listening at '%s'\n", *name)
			return 1
		}
		c.Close()
		return 0
	case "multiple":
		return fakeMultiple(*name, max(*threads, 1), max(*bytecount, 1), max(*batchsize, 1))
	}
	return 1
}

func fakeDaemon(name string) int {
	l, err := net.Listen("unix", name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: socket/pipe already in use: '%s'\n", name)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	serveConns(ctx, l, func(c net.Conn) {
		msg, err := frame.NewReader(c, frame.SimpleIPC, 0).ReadMessage()
		if err != nil {
			return // the empty probe connection
		}
		var reply string
		switch {
		case string(msg) == "ping":
			reply = "pong"
		case bytes.HasPrefix(msg, []byte("sendbytes ")):
			ballast := msg[len("sendbytes "):]
			reply = fmt.Sprintf("rcvd:%c%08d\n", ballast[0], len(ballast))
		default:
			reply = "unhandled command: " + string(msg)
		}
		frame.NewWriter(c).WriteMessage([]byte(reply))
	})
	return 0
}

func fakeMultiple(name string, threads, bytecount, batchsize int) int {
	probe, err := net.Dial("unix", name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: no server listening at '%s'\n", name)
		return 1
	}
	probe.Close()
	var (
		mu         sync.Mutex
		good, errs int
		out        strings.Builder
		wg         sync.WaitGroup
	)
	for k := range threads {
		wg.Go(func() {
			letter := byte('A' + k%26)
			for i := range batchsize {
				n := bytecount + batchsize*(k/26) + i
				req := append([]byte("sendbytes "), bytes.Repeat([]byte{letter}, n)...)
				reply, err := fakeSend(name, req)
				mu.Lock()
				if err != nil {
					errs++
				} else {
					good++
					fmt.Fprintf(&out, "sent:%c%08d %s\n", letter, n, strings.TrimSpace(string(reply)))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	fmt.Print(out.String())
	fmt.Printf("client (good %d) (join 0), (errors %d)\n", good, errs)
	if errs > 0 {
		return 1
	}
	return 0
}

func fakeSend(name string, req []byte) ([]byte, error) {
	c, err := net.Dial("unix", name)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := frame.NewWriter(c).WriteMessage(req); err != nil {
		return nil, err
	}
	return frame.NewReader(c, frame.SimpleIPC, 0).ReadMessage()
}

package engine

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Child roles run a server in a separate process, so that descriptor limits
// and SIGKILL affect only it, and the test's own descriptors and heap do not
// blur what the server uses.
//
//	PKTIPC_ENGINE_CHILD=server PKTIPC_PATH=... [PKTIPC_NOFILE=n] [PKTIPC_MAXCONNS=n]
//
// The child prints "ready" once serving, serves until SIGTERM, then prints
// its Stats as JSON.
func runChild(role string) int {
	switch role {
	case "server":
		return childServer()
	default:
		fmt.Fprintf(os.Stderr, "unknown child role %q\n", role)
		return 2
	}
}

func childServer() int {
	if n, err := strconv.Atoi(os.Getenv("PKTIPC_NOFILE")); err == nil {
		if err := setNofile(n); err != nil {
			fmt.Fprintln(os.Stderr, "setrlimit:", err)
			return 2
		}
	}
	h := HandlerFunc(func(ctx context.Context, req []byte, w *ReplyWriter) error {
		if d, ok := strings.CutPrefix(string(req), "sleep "); ok {
			// A reply held back: its client waits meanwhile.
			dur, err := time.ParseDuration(d)
			if err != nil {
				return err
			}
			select {
			case <-time.After(dur):
			case <-ctx.Done():
				return ctx.Err()
			}
			_, err = w.Write(req)
			return err
		}
		if string(req) == "halfreply" {
			// More than one flush worth, so part of it reaches the client,
			// then never finish.
			if _, err := w.Write(make([]byte, 300<<10)); err != nil {
				return err
			}
			<-ctx.Done()
			return ctx.Err()
		}
		return verifiedEcho(ctx, req, w)
	})
	opts := []Option{WithWorkers(2), WithRingLimits(16, 1<<16)}
	if n, err := strconv.Atoi(os.Getenv("PKTIPC_MAXCONNS")); err == nil {
		opts = append(opts, WithMaxConns(n, n), WithFirstByteTimeout(time.Hour))
	}
	s, err := NewServer(os.Getenv("PKTIPC_PATH"), h, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	// The socket accepts (into its backlog) from NewServer on.
	fmt.Println("ready")
	err = s.Serve(ctx)
	_ = json.NewEncoder(os.Stdout).Encode(s.Stats())
	if err != nil && err != context.Canceled {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	return 0
}

type child struct {
	cmd   *exec.Cmd
	out   *bufio.Scanner
	waitc chan error
}

// startChild starts a server process at path and waits until it serves.
func startChild(t testing.TB, path string, env ...string) *child {
	t.Helper()
	c, err := spawnChild(path, env...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		c.wait()
	})
	return c
}

// spawnChild starts a server process at path and waits until it serves;
// the caller ends it.
func spawnChild(path string, env ...string) (*child, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{childEnv + "=server", "PKTIPC_PATH=" + path}, env...)...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, out: bufio.NewScanner(stdout), waitc: make(chan error, 1)}
	if !c.out.Scan() || c.out.Text() != "ready" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("child server did not start: %q", c.out.Text())
	}
	return c, nil
}

func (c *child) wait() error {
	select {
	case err := <-c.waitc:
		c.waitc <- err
		return err
	default:
	}
	for c.out.Scan() {
	}
	err := c.cmd.Wait()
	c.waitc <- err
	return err
}

// stop ends the child with SIGTERM and returns its final stats.
func (c *child) stop(t testing.TB) Stats {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var st Stats
	if !c.out.Scan() {
		t.Fatal("child printed no stats")
	}
	if err := json.Unmarshal(c.out.Bytes(), &st); err != nil {
		t.Fatalf("child stats %q: %v", c.out.Text(), err)
	}
	if err := c.wait(); err != nil {
		t.Fatalf("child exit: %v", err)
	}
	return st
}

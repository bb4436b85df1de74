//go:build !race

package engine

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/pktipc/pktipc/perf"
	"github.com/pktipc/pktipc/uds"
)

// TestIdleConnectionsMemory: a server process holding 10,000 idle
// connections stays below 32 MiB resident, and a ping beside them is
// answered. Memory under the race detector means nothing, hence the build
// tag; scripts/test.sh runs it without.
func TestIdleConnectionsMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 connections are not short")
	}
	const conns = 10_000
	if lim, err := nofile(); err != nil || lim < conns+500 {
		t.Skipf("needs %d descriptors, RLIMIT_NOFILE is %d", conns+500, lim)
	}
	path := socketPath(t)
	ch := startChild(t, path, "PKTIPC_MAXCONNS="+strconv.Itoa(2*conns))
	pid := ch.cmd.Process.Pid
	before, err := perf.PidMemory(pid)
	if err != nil {
		t.Skip("no /proc:", err)
	}
	cs := make([]*net.UnixConn, 0, conns)
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	for len(cs) < conns {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
		if errors.Is(err, syscall.EAGAIN) { // the backlog is full for a moment
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("connection %d: %v", len(cs), err)
		}
		cs = append(cs, c)
	}
	// Every connection is in the server: a ping comes after them all. The
	// accept loop may still be draining the backlog, so the ping waits
	// out a full one as git's client does.
	if got, err := Send(context.Background(), path, []byte("ping"), WithDialOptions(uds.WaitIfBusy())); err != nil || string(got) != "pong" {
		t.Fatalf("ping beside %d connections: %q, %v", conns, got, err)
	}
	time.Sleep(time.Second)
	m, err := perf.PidMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("server: %.1f MiB resident with %d idle connections (%.1f MiB before), %d descriptors",
		float64(m.RSS)/(1<<20), conns, float64(before.RSS)/(1<<20), m.FDs)
	if m.FDs >= 0 && m.FDs < conns {
		t.Fatalf("the server holds %d descriptors: not every connection is in", m.FDs)
	}
	if m.RSS >= 32<<20 {
		t.Fatalf("%.1f MiB resident with %d idle connections, want below 32 MiB", float64(m.RSS)/(1<<20), conns)
	}
	runtime.KeepAlive(cs)
}

// An idle connection's state stays within the 512-byte size class: the
// state of requests served on workers lives apart (workerIO), made at the
// first one. A field added to conn that crosses the class costs every idle
// connection the next one (576 bytes or more).
func TestConnStateSize(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 512 {
		t.Fatalf("conn is %d bytes, want at most 512: move what idle connections do not need into workerIO", n)
	}
}

package fsmonitor

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pktipc/pktipc/engine"
)

var benchFiles = flag.Int("fsmonitor.benchfiles", 50000, "files in the worktree of BenchmarkQuery")

// benchTree fills root with n files, 100 to a directory, 20 directories
// to a parent.
func benchTree(b *testing.B, root string, n int) {
	b.Helper()
	for i := range n {
		dir := filepath.Join(root, fmt.Sprintf("d%d", i/2000), fmt.Sprintf("e%d", i/100))
		if i%100 == 0 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d.txt", i)), nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// reportLatency adds p50 and p99 of d to b's metrics.
func reportLatency(b *testing.B, d []time.Duration) {
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(d[len(d)*99/100].Nanoseconds()), "p99-ns")
}

// BenchmarkQuery measures a query from request to reply, cookie round
// trip included, with one file changed before each: in process (Query)
// and as git asks, one connection per request over the daemon's socket.
func BenchmarkQuery(b *testing.B) {
	root := b.TempDir()
	os.Mkdir(filepath.Join(root, ".git"), 0o755)
	benchTree(b, root, *benchFiles)
	ctx, cancel := context.WithCancel(context.Background())
	socket := filepath.Join(root, ".git", SocketName)
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Options{Worktree: root, Logger: quiet}, socket, engine.WithLogger(quiet))
	}()
	defer func() {
		cancel()
		<-done
	}()
	var reply []byte
	for start := time.Now(); ; {
		var err error
		if reply, err = engine.Send(ctx, socket, []byte("builtin:fake")); err == nil {
			break
		}
		if time.Since(start) > time.Minute {
			b.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	token := reply[:len(reply)-3] // "builtin:<token>:<seq>" NUL "/" NUL
	// The change is a byte written in place: rewriting the file would
	// free and allocate its blocks, file system work whose aftermath
	// (discards, on a volume mounted with them) lands in the measured
	// query rather than in the write.
	changed, err := os.OpenFile(filepath.Join(root, "d0", "e0", "f0.txt"), os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer changed.Close()

	b.Run("socket", func(b *testing.B) {
		b.ReportAllocs()
		lat := make([]time.Duration, 0, b.N)
		for i := 0; b.Loop(); i++ {
			if _, err := changed.WriteAt([]byte{byte(i)}, 0); err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			r, err := engine.Send(ctx, socket, token)
			lat = append(lat, time.Since(t0))
			if err != nil {
				b.Fatal(err)
			}
			tok, _, _ := splitReply(r)
			if r[len(tok)+1] == '/' {
				b.Fatalf("trivial reply %q", r)
			}
			token = tok
		}
		reportLatency(b, lat)
	})
}

// splitReply cuts a reply's token from its body.
func splitReply(r []byte) (token, body []byte, ok bool) {
	for i, c := range r {
		if c == 0 {
			return r[:i], r[i+1:], true
		}
	}
	return r, nil, false
}

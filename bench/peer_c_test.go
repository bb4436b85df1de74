package bench

import (
	"context"
	"errors"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// newCPeer returns the registered peer name, ready to run, or skips the test
// where the peer is unavailable.
func newCPeer(t *testing.T, env *Env, name string) *cPeer {
	t.Helper()
	info, ok := Lookup(name)
	if !ok {
		t.Fatalf("no peer %q", name)
	}
	p := info.New().(*cPeer)
	if err := p.Prepare(context.Background(), env); errors.Is(err, ErrUnavailable) {
		t.Skip(err)
	} else if err != nil {
		t.Fatal(err)
	}
	return p
}

// runCShm runs one case of p, a c-shm peer, as the Runner would.
func runCShm(t *testing.T, env *Env, p Peer, c Case) (Record, error) {
	t.Helper()
	r, err := NewRunner(WithCounters(false))
	if err != nil {
		t.Fatal(err)
	}
	run := Run{Case: c, Peer: "c-shm", Duration: time.Second, Warmup: 20 * time.Millisecond}
	return r.runOne(context.Background(), env, p, run)
}

// The c-shm peer completes exactly the operations asked for, each with a
// reply whose stamp its client checked (it exits with status 1 on a
// mismatch, which fails the run), and moves the payload both ways.
func TestCShmPingPong(t *testing.T) {
	leakcheck.Check(t)
	env := testEnv(t)
	p := newCPeer(t, env, "c-shm")
	const ops = 300
	p.ops = ops
	for _, size := range []int{64, 1 << 20} {
		rec, err := runCShm(t, env, p, Case{PingPong, size, 1})
		if err != nil {
			t.Fatalf("pingpong %s: %v", FormatSize(size), err)
		}
		checkRecord(t, &rec)
		if rec.Ops != ops || rec.Histogram().TotalCount() != ops {
			t.Errorf("pingpong %s: %d ops, %d samples; want %d", FormatSize(size), rec.Ops, rec.Histogram().TotalCount(), ops)
		}
		if rec.Latency.Min <= 0 || rec.Errors != 0 {
			t.Errorf("pingpong %s: min latency %dns, %d errors", FormatSize(size), rec.Latency.Min, rec.Errors)
		}
		if got, want := rec.BytesPerSec*rec.Duration().Seconds(), float64(2*size*ops); math.Abs(got-want) > 1e-6*want {
			t.Errorf("pingpong %s: %.0f payload bytes, want %.0f", FormatSize(size), got, want)
		}
	}
}

// corruptServer is a c-shm peer whose server flips the first byte of each
// reply.
type corruptServer struct{ *cPeer }

func (p corruptServer) Server(env *Env, run Run) (*ServerCmd, error) {
	sc, err := p.cPeer.Server(env, run)
	if err == nil {
		sc.Cmd.Args[3] = "corrupt" // server SOCKET MODE THREADS
	}
	return sc, err
}

// The c-shm client's check of the replies is live: a server that damages
// them fails the run.
func TestCShmDetectsCorruptReplies(t *testing.T) {
	leakcheck.Check(t)
	env := testEnv(t)
	p := newCPeer(t, env, "c-shm")
	p.ops = 10
	_, err := runCShm(t, env, corruptServer{p}, Case{PingPong, 64, 1})
	if err == nil || !strings.Contains(err.Error(), "exit status 1") || !strings.Contains(err.Error(), "reply 1 carries stamp 0") {
		t.Fatalf("run against a corrupting server: %v", err)
	}
}

// Both C programs compile without a warning.
func TestCPeersCompileCleanly(t *testing.T) {
	if _, err := compiler(); err != nil {
		t.Skip(err)
	}
	env := testEnv(t)
	for _, name := range []string{BaselineC, "c-shm"} {
		info, _ := Lookup(name)
		p := info.New().(*cPeer)
		if p.memfd && runtime.GOOS != "linux" {
			continue
		}
		if _, err := buildC(context.Background(), env, name, p.prog, "-Wall", "-Wextra", "-Werror"); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Without a C compiler the C peers are unavailable, not failing.
func TestCPeersWithoutCompiler(t *testing.T) {
	t.Setenv(ccEnv, "no-such-compiler-here")
	env := testEnv(t)
	for _, name := range []string{BaselineC, "c-shm"} {
		info, _ := Lookup(name)
		err := info.New().Prepare(context.Background(), env)
		var ue *UnavailableError
		if !errors.As(err, &ue) || ue.Peer != name || !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s without a compiler: %v", name, err)
		}
	}
}

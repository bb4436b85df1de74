package bench

import (
	"bufio"
	"context"
	"embed"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// cpeerFS holds the C peers' programs and the header they share, compiled
// at run time so that the numbers come from this machine's compiler and
// libc.
//
//go:embed cpeer
var cpeerFS embed.FS

// cHeader is the header every program in cpeer includes.
const cHeader = "harness.h"

const (
	// compileTimeout bounds building a C peer.
	compileTimeout = 2 * time.Minute
	// ccEnv names the C compiler, as make does.
	ccEnv = "CC"
)

// cPeer is a peer whose server and client are one C program of cpeer, the
// two taking the same arguments (harness.h), with a thread per connection
// on each side. "c", pingpong.c, blocks in read and writev on pkt-line
// messages: the floor a user compares against. "c-shm", shm.c, moves the
// messages through rings in a memfd that the server gives each connection,
// and spins: the floor without a kernel between the two.
type cPeer struct {
	name  string // the peer's name
	prog  string // the program: cpeer/<prog>.c
	memfd bool   // the program needs Linux's memfd_create
	// ops, when positive, ends each client after that many measured
	// operations, and the window with the last of them (tests).
	ops int
	bin string
}

// compiler returns the C compiler to use: $CC, else cc, else gcc, else
// clang.
func compiler() (string, error) {
	if cc := os.Getenv(ccEnv); cc != "" {
		return exec.LookPath(cc)
	}
	var firstErr error
	for _, name := range []string{"cc", "gcc", "clang"} {
		p, err := exec.LookPath(name)
		if err == nil {
			return p, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return "", firstErr
}

func (p *cPeer) Prepare(ctx context.Context, env *Env) error {
	if p.memfd && runtime.GOOS != "linux" {
		return &UnavailableError{Peer: p.name, Reason: "needs Linux (memfd_create), not " + runtime.GOOS}
	}
	bin, err := buildC(ctx, env, p.name, p.prog)
	if err != nil {
		return err
	}
	p.bin = bin
	return nil
}

// buildC compiles cpeer/<prog>.c with its header into env.Dir and returns
// the binary's path. Without a working compiler the peer is unavailable.
func buildC(ctx context.Context, env *Env, peer, prog string, flags ...string) (string, error) {
	cc, err := compiler()
	if err != nil {
		return "", &UnavailableError{Peer: peer, Reason: "no C compiler found (set CC or install cc)", Err: err}
	}
	src := filepath.Join(env.Dir, prog+".c")
	for _, name := range []string{cHeader, prog + ".c"} {
		b, err := cpeerFS.ReadFile("cpeer/" + name)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(env.Dir, name), b, 0o600); err != nil {
			return "", err
		}
	}
	bin := filepath.Join(env.Dir, prog)
	ctx, cancel := context.WithTimeout(ctx, compileTimeout)
	defer cancel()
	args := append([]string{"-O2", "-pthread"}, flags...)
	out, err := exec.CommandContext(ctx, cc, append(args, "-o", bin, src)...).CombinedOutput()
	if err != nil {
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return "", ctx.Err()
		}
		return "", &UnavailableError{Peer: peer, Reason: fmt.Sprintf("%s failed: %s", cc, strings.TrimSpace(string(out))), Err: err}
	}
	return bin, nil
}

func (p *cPeer) Server(env *Env, run Run) (*ServerCmd, error) {
	mode := "echo"
	if run.Scenario == Stream {
		mode = "sink"
	}
	// Two spare threads: a connect-per-request client may open its next
	// connection before the server has finished with the previous one.
	threads := run.Conns + 2
	cmd := exec.Command(p.bin, "server", run.Socket, mode, strconv.Itoa(threads))
	return &ServerCmd{Cmd: cmd, Ready: ReadyLine}, nil
}

func ms(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Millisecond-1)/time.Millisecond), 10)
}

// cClientModes maps scenarios to the C client's modes.
var cClientModes = map[Kind]string{PingPong: "persistent", Concurrency: "persistent", Connect: "connect", Stream: "stream"}

func (p *cPeer) Client(ctx context.Context, env *Env, run Run, m *Meter) (Load, error) {
	mode, ok := cClientModes[run.Scenario]
	if !ok {
		return Load{}, fmt.Errorf("bench: %s peer does not run %s", p.name, run.Scenario)
	}
	out := env.TempPath("lat")
	defer os.Remove(out)
	ctx, cancel := context.WithTimeout(ctx, run.Warmup+run.Duration+stallTimeout)
	defer cancel()
	args := []string{"client", run.Socket, mode, strconv.Itoa(run.Size),
		strconv.Itoa(run.Conns), ms(run.Warmup), ms(run.Duration), out, strconv.Itoa(m.ServerPID())}
	if p.ops > 0 {
		args = append(args, strconv.Itoa(p.ops))
	}
	cmd := env.Command(ctx, p.bin, args...)
	stderr := &tailWriter{}
	cmd.Stderr = stderr
	done, err := runCClient(cmd, m)
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return Load{}, ErrStalled
		}
		return Load{}, ctx.Err()
	}
	if err != nil || done == "" {
		return Load{}, fmt.Errorf("bench: %s client: %v: %s", p.name, err, stderr.String())
	}
	load, err := cClientLoad(done, out)
	if err != nil {
		return Load{}, err
	}
	if s := stderr.String(); s != "" {
		load.Notes = append(load.Notes, s)
	}
	return load, nil
}

// runCClient runs the C client to its end, marking the window on m as the
// client announces it, and returns its "done" line.
func runCClient(cmd *exec.Cmd, m *Meter) (string, error) {
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	m.SetClientProcess(cmd.Process.Pid)
	// The client starts its threads only after this line, so the counters
	// just opened see them all.
	stdin.Write([]byte("go\n"))
	var done string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "warm":
			m.Start()
		case strings.HasPrefix(line, "done "):
			m.Stop()
			done = line
		}
	}
	return done, cmd.Wait()
}

// cClientLoad reads the C client's "done" line and latency file. The
// client timed its window and read both processes' CPU clocks at its own
// edges, which this process hears of only through a pipe.
func cClientLoad(done, latencies string) (Load, error) {
	var ops, errs, elapsed, bytes, cliCPU, srvCPU int64
	if _, err := fmt.Sscanf(done, "done %d %d %d %d %d %d", &ops, &errs, &elapsed, &bytes, &cliCPU, &srvCPU); err != nil {
		return Load{}, fmt.Errorf("bench: C client said %q: %w", done, err)
	}
	h, n, err := readLatencies(latencies)
	if err != nil {
		return Load{}, err
	}
	if n != ops {
		return Load{}, fmt.Errorf("bench: C client reported %d operations and wrote %d latencies", ops, n)
	}
	w := &Window{Elapsed: time.Duration(elapsed), ClientCPU: time.Duration(cliCPU), ServerCPU: time.Duration(srvCPU), OwnEdges: true}
	return Load{Hist: h, Bytes: bytes, Errors: errs, Window: w}, nil
}

// readLatencies loads a file of native-endian int64 nanoseconds into a
// histogram.
func readLatencies(path string) (*Histogram, int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	if len(b)%8 != 0 {
		return nil, 0, fmt.Errorf("bench: latency file of %d bytes is not a multiple of 8", len(b))
	}
	h := NewHistogram()
	for i := 0; i < len(b); i += 8 {
		h.RecordValue(clampNS(int64(binary.NativeEndian.Uint64(b[i:]))))
	}
	return h, int64(len(b) / 8), nil
}

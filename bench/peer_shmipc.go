package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// shmipcPeer is the "shmipc" peer: CloudWeGo's shmipc-go, the Go
// shared-memory IPC a user would pick instead of pktipc. The client maps a
// buffer of slices and a pair of queues in memfds that it passes to the
// server over a Unix socket; a message is a chain of slices announced
// through a queue, and the socket only carries set-up and wake-ups.
//
// Both sides are configured as shmipc's own benchmark (its bench_test.go)
// configures them, its best case; shmipcConfig lists the settings. The
// client is one SessionManager with one session, as in that benchmark and
// in shmipc's examples, and each client of a run is a stream of that
// session, kept for the whole run. Once the session is set up, both
// processes fault in the pages of the shared memory (populateMemfds), the
// client writes once into every slice that its messages take (warm), and
// it waits for one round trip before its warm-up: the window sees the
// steady state of a long-lived session, not the first pass through a
// buffer that shmipc hands out a slice at a time.
//
// A message is a 4-byte little-endian length and the payload, reserved in
// one slice and sent with one Flush. The server reads it in place and
// answers with a copy in a slice of its own (echo), or in the stream
// scenario with an empty message, which the client collects in batches as
// the pktipc peer does: shmipc has no flow control of its own. Each request
// carries a sequence number in its first bytes, and the client fails the
// run on a reply that does not carry it back. The connect scenario is left
// out: a session maps the whole buffer, and shmipc's users keep sessions.
//
// The client runs in a child process too, a client role of this binary:
// shmipc starts a process-wide event loop (a goroutine and an epoll
// descriptor) that nothing stops and keeps its mappings in a process-wide
// table, which must not outlive a run in the benchmark process.
type shmipcPeer struct {
	// corrupt makes the server damage each reply (tests).
	corrupt bool
}

// shmipcServerSettings are the server role's settings.
type shmipcServerSettings struct {
	Corrupt bool `json:"corrupt,omitempty"`
}

func (p shmipcPeer) Server(env *Env, run Run) (*ServerCmd, error) {
	return shmipcRole.command(env, run, shmipcServerSettings{Corrupt: p.corrupt})
}

func (p shmipcPeer) Client(ctx context.Context, env *Env, run Run, m *Meter) (Load, error) {
	result := env.TempPath("load")
	defer os.Remove(result)
	// Beyond the window: the child's start-up and shmipc's set-up, which
	// writes the header of every slice of the buffer.
	ctx, cancel := context.WithTimeout(ctx, run.Warmup+run.Duration+stallTimeout+startTimeout)
	defer cancel()
	settings := clientChildSettings{Warmup: run.Warmup, Duration: run.Duration, ServerPID: m.ServerPID(), Result: result}
	sc, err := shmipcClientRole.command(env, run, settings)
	if err != nil {
		return Load{}, err
	}
	cmd := env.Command(ctx, sc.Cmd.Path)
	cmd.Env = sc.Cmd.Env
	stderr := &tailWriter{}
	cmd.Stderr = stderr
	err = runClientChild(cmd, m)
	if ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return Load{}, ErrStalled
		}
		return Load{}, ctx.Err()
	}
	if err != nil {
		return Load{}, fmt.Errorf("bench: shmipc client: %v: %s", err, stderr.String())
	}
	return readChildLoad(result)
}

// shmipcHeader is the length prefix of a message.
const shmipcHeader = 4

// stampOf returns the sequence number at the start of p: its first 8
// bytes, little-endian, or as many as it has.
func stampOf(p []byte) uint64 {
	var b [8]byte
	copy(b[:], p)
	return binary.LittleEndian.Uint64(b[:])
}

// stamp writes seq at the start of p, truncated to p's length.
func stamp(p []byte, seq uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seq)
	copy(p, b[:])
}

// checkReply reports a reply that is not the echo of request seq of size
// bytes.
func checkReply(reply []byte, size int, seq uint64) error {
	want := seq
	if size < 8 {
		want &= 1<<(8*size) - 1
	}
	if len(reply) != size || stampOf(reply) != want {
		return fmt.Errorf("reply %d (%d bytes) carries stamp %d", seq, len(reply), stampOf(reply))
	}
	return nil
}

// Lines by which a client child marks its window on its standard output.
const (
	warmLine = "warm"
	doneLine = "done"
)

// clientChildSettings are those of a Go client run in a child process:
// the run's timing, the server whose CPU clock it reads at the window's
// edges, and the file for its result.
type clientChildSettings struct {
	Warmup    time.Duration `json:"warmup"`
	Duration  time.Duration `json:"duration"`
	ServerPID int           `json:"server_pid"`
	Result    string        `json:"result"`
}

// childLoad is a Load as a client child hands it to its parent.
type childLoad struct {
	Hist   *hdrhistogram.Snapshot `json:"hist"`
	Bytes  int64                  `json:"bytes"`
	Errors int64                  `json:"errors"`
	Notes  []string               `json:"notes,omitempty"`
	// The window as the child timed it; negative CPU times were not read.
	Elapsed   time.Duration `json:"elapsed"`
	ClientCPU time.Duration `json:"client_cpu"`
	ServerCPU time.Duration `json:"server_cpu"`
}

// runClientChild runs a client child to its end, marking the window on m
// as the child announces it.
func runClientChild(cmd *exec.Cmd, m *Meter) error {
	// Held open until the child exits: EOF on its standard input tells a
	// child that this process died.
	if _, err := cmd.StdinPipe(); err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	m.SetClientProcess(cmd.Process.Pid)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		switch sc.Text() {
		case warmLine:
			m.Start()
		case doneLine:
			m.Stop()
		}
	}
	return cmd.Wait()
}

// runInClientChild runs g's load in a client child, announcing the
// window's edges to the parent, and returns it with the Meter that timed
// it.
func runInClientChild(ctx context.Context, cfg serverConfig, s clientChildSettings, g GoClient) (Load, *Meter, error) {
	run := Run{Case: Case{cfg.Scenario, cfg.Size, cfg.Conns}, Duration: s.Duration, Warmup: s.Warmup, Socket: cfg.Socket}
	m := newMeter(s.ServerPID, false)
	m.edge = func(start bool) {
		line := doneLine
		if start {
			line = warmLine
		}
		os.Stdout.WriteString(line + "\n")
	}
	load, err := g.Run(ctx, run, m)
	return load, m, err
}

// writeChildLoad writes a client child's result for its parent.
func writeChildLoad(path string, load Load, m *Meter) error {
	w := m.window(nil)
	cl := childLoad{
		Hist: load.Hist.Export(), Bytes: load.Bytes, Errors: load.Errors, Notes: append(load.Notes, w.notes...),
		Elapsed: w.elapsed, ClientCPU: -1, ServerCPU: -1,
	}
	if w.cliCPUOK {
		cl.ClientCPU = w.cliCPU
	}
	if w.srvCPUOK {
		cl.ServerCPU = w.srvCPU
	}
	b, err := json.Marshal(cl)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// readChildLoad reads what writeChildLoad wrote. The child timed the
// window and read both processes' CPU clocks at its own edges.
func readChildLoad(path string) (Load, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Load{}, err
	}
	var cl childLoad
	if err := json.Unmarshal(b, &cl); err != nil {
		return Load{}, fmt.Errorf("bench: client child's result: %w", err)
	}
	if cl.Hist == nil {
		return Load{}, errors.New("bench: client child's result has no histogram")
	}
	w := &Window{Elapsed: cl.Elapsed, ClientCPU: cl.ClientCPU, ServerCPU: cl.ServerCPU, OwnEdges: true}
	return Load{Hist: hdrhistogram.Import(cl.Hist), Bytes: cl.Bytes, Errors: cl.Errors, Notes: cl.Notes, Window: w}, nil
}

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

func TestSelectionErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		sel  Selection
		want string
	}{
		{"suite", Selection{Suite: "huge"}, "unknown suite"},
		{"scenario", Selection{Scenarios: []Kind{"pong"}}, "unknown scenario"},
		{"peer", Selection{Peers: []string{"carrier-pigeon"}}, "unknown peer"},
		{"size", Selection{Sizes: []int{0}}, "size 0"},
		{"size too big", Selection{Sizes: []int{MaxSize + 1}}, "out of range"},
		{"conns", Selection{Conns: []int{MaxConns + 1}}, "conns"},
		{"duration", Selection{Duration: -time.Second}, "duration"},
		{"rounds", Selection{Rounds: MaxRounds + 1}, "rounds"},
		{"negative rounds", Selection{Rounds: -1}, "rounds"},
		{"git without test-tool", Selection{Peers: []string{"git"}}, "needs --test-tool"},
		{"nothing runs", Selection{Peers: []string{"git"}, TestTool: "/x", Scenarios: []Kind{PingPong}}, "no peer supports"},
	} {
		_, err := tc.sel.Plan()
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Plan() = %v, want ErrUsage mentioning %q", tc.name, err, tc.want)
		}
	}
}

func TestSelectionPlan(t *testing.T) {
	quick, err := Selection{}.Plan()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range quick.Peers {
		if info, _ := Lookup(name); !info.Quick {
			t.Errorf("quick suite runs non-quick peer %s", name)
		}
	}
	if !slices.Contains(quick.Peers, BaselineUnix) || slices.Contains(quick.Peers, "git") {
		t.Errorf("quick peers %v", quick.Peers)
	}
	if quick.Duration != QuickSuite().Duration || len(quick.Cases) != len(QuickSuite().Cases) {
		t.Errorf("quick plan %v, %d cases", quick.Duration, len(quick.Cases))
	}

	p, err := Selection{Peers: []string{"unix", "c"}, Scenarios: []Kind{PingPong, Stream}, Sizes: []int{100, 200},
		Conns: []int{2}, Duration: time.Second}.Plan()
	if err != nil {
		t.Fatal(err)
	}
	// Stream is not in the quick suite: it comes from the full suite.
	var got []string
	for _, r := range p.Runs {
		got = append(got, r.Peer+" "+r.Case.String())
	}
	want := []string{
		"c pingpong size=100 conns=2", "unix pingpong size=100 conns=2",
		"c pingpong size=200 conns=2", "unix pingpong size=200 conns=2",
		"c stream size=100 conns=2", "unix stream size=100 conns=2",
		"c stream size=200 conns=2", "unix stream size=200 conns=2",
	}
	if !slices.Equal(got, want) {
		t.Errorf("runs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !slices.Equal(p.Peers, []string{"c", "unix"}) {
		t.Errorf("peers %v, want baselines in list order", p.Peers)
	}

	full, err := Selection{Suite: "full", TestTool: "/bin/true"}.Plan()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(full.Peers, "git") || !slices.Contains(full.Peers, "grpc") {
		t.Errorf("full suite with a test-tool runs %v", full.Peers)
	}
	for _, r := range full.Runs {
		if r.Peer == "ttrpc" && r.Size > ttrpcMaxSize {
			t.Errorf("ttrpc planned with %d bytes", r.Size)
		}
	}
}

// TestPlanRounds: with rounds, a case's peers take turns in each round,
// and the rounds of one case come before the next case.
func TestPlanRounds(t *testing.T) {
	p, err := Selection{Peers: []string{"unix", "c"}, Scenarios: []Kind{PingPong}, Sizes: []int{100, 200},
		Conns: []int{1}, Rounds: 2}.Plan()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range p.Runs {
		got = append(got, fmt.Sprintf("%s %d size=%d", r.Peer, r.Round, r.Size))
	}
	want := []string{"c 0 size=100", "unix 0 size=100", "c 1 size=100", "unix 1 size=100",
		"c 0 size=200", "unix 0 size=200", "c 1 size=200", "unix 1 size=200"}
	if !slices.Equal(got, want) || p.Rounds != 2 {
		t.Errorf("runs (%d rounds):\n%s\nwant:\n%s", p.Rounds, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if one, err := (Selection{}).Plan(); err != nil || one.Rounds != 1 {
		t.Errorf("default rounds %d, %v", one.Rounds, err)
	}
}

// TestPlanRunOrder: in each round the shared-memory peers run last, one
// after the other, while the plan's peer list keeps table order.
func TestPlanRunOrder(t *testing.T) {
	p, err := Selection{Peers: []string{"shmipc", "pktipc-shm", "unix", "c-shm", "pktipc", "c"},
		Scenarios: []Kind{PingPong}, Sizes: []int{64}, Conns: []int{1}, Rounds: 2}.Plan()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range p.Runs {
		got = append(got, fmt.Sprintf("%s %d", r.Peer, r.Round))
	}
	var want []string
	for round := range 2 {
		for _, name := range []string{"c", "unix", "pktipc", "c-shm", "pktipc-shm", "shmipc"} {
			want = append(want, fmt.Sprintf("%s %d", name, round))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("runs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if table := []string{"c", "unix", "c-shm", "pktipc", "pktipc-shm", "shmipc"}; !slices.Equal(p.Peers, table) {
		t.Errorf("peers %v, want table order %v", p.Peers, table)
	}
}

// TestKeepMedians: a peer that ran a case in several rounds keeps the run
// of its median headline (p50 for latency cases, throughput for the
// others), with every round's headline noted; the ratios are the kept
// runs'.
func TestKeepMedians(t *testing.T) {
	pp, cc := Case{PingPong, 64, 1}, Case{Concurrency, 64, 8}
	rec := func(peer string, c Case, p50 int64, ops float64) Record {
		return Record{Case: c, Peer: peer, Latency: Latency{P50: p50}, OpsPerSec: ops}
	}
	res := &Results{Rounds: 3, Cases: []Case{pp, cc}, Records: []Record{
		rec("c", pp, 300, 1), rec("unix", pp, 900, 1), rec("c", cc, 0, 50), rec("unix", cc, 0, 10),
		rec("c", pp, 100, 2), rec("unix", pp, 500, 2), rec("c", cc, 0, 70), rec("unix", cc, 0, 40),
		rec("c", pp, 200, 3), rec("unix", pp, 700, 3), rec("c", cc, 0, 60), rec("unix", cc, 0, 20),
	}}
	keepMedians(res)
	computeRatios(res)
	var got []string
	for _, r := range res.Records {
		got = append(got, fmt.Sprintf("%s %s p50=%d ops=%g rounds=%v", r.Peer, r.Scenario, r.Latency.P50, r.OpsPerSec, r.RoundHeadlines))
	}
	want := []string{
		"c pingpong p50=200 ops=3 rounds=[300 100 200]", "unix pingpong p50=700 ops=3 rounds=[900 500 700]",
		"c concurrency p50=0 ops=60 rounds=[50 70 60]", "unix concurrency p50=0 ops=20 rounds=[10 40 20]",
	}
	if !slices.Equal(got, want) {
		t.Errorf("kept:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if x := res.Find(pp, "unix").XC; x == nil || *x != 3.5 {
		t.Errorf("unix against c on p50 of the medians: %v", FormatRatio(x))
	}
	var tables bytes.Buffer
	if err := WriteTables(&tables, res, ""); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Rounds, in the order they ran (the row is the median one): c 300ns, 100ns, 200ns (p50); unix 900ns, 500ns, 700ns (p50).",
		"c 50, 70, 60 ops/s; unix 10, 40, 20 ops/s.",
	} {
		if !strings.Contains(tables.String(), want) {
			t.Errorf("tables lack %q:\n%s", want, tables.String())
		}
	}

	// Two rounds: the lower of the middle two; one round: nothing noted.
	two := &Results{Rounds: 2, Records: []Record{rec("c", cc, 0, 80), rec("c", cc, 0, 30)}}
	keepMedians(two)
	if len(two.Records) != 1 || two.Records[0].OpsPerSec != 30 {
		t.Errorf("two rounds kept %+v", two.Records)
	}
	one := &Results{Records: []Record{rec("c", cc, 0, 80), rec("unix", cc, 0, 30)}}
	keepMedians(one)
	if len(one.Records) != 2 || one.Records[0].RoundHeadlines != nil {
		t.Errorf("one round changed: %+v", one.Records)
	}
}

func TestParseLists(t *testing.T) {
	sizes, err := ParseSizes("64, 4K,1MiB,2KiB,10B")
	if err != nil || !slices.Equal(sizes, []int{64, 4096, 1 << 20, 2048, 10}) {
		t.Errorf("ParseSizes = %v, %v", sizes, err)
	}
	for _, bad := range []string{"x", "0", "-1", "17M", "4Q", "1.5K"} {
		if _, err := ParseSizes(bad); !errors.Is(err, ErrUsage) {
			t.Errorf("ParseSizes(%q) = %v, want ErrUsage", bad, err)
		}
	}
	if _, err := ParseInts("1,x"); !errors.Is(err, ErrUsage) {
		t.Errorf("ParseInts accepted x: %v", err)
	}
	if ks, err := ParseKinds("pingpong,stream"); err != nil || !slices.Equal(ks, []Kind{PingPong, Stream}) {
		t.Errorf("ParseKinds = %v, %v", ks, err)
	}
}

func TestRecorderMergesShards(t *testing.T) {
	r := NewRecorder(20)
	var total int64
	for i := range 20 {
		s := r.Sampler(i)
		for v := range 300 + i {
			s.Record(int64(v*1000 + 1))
		}
		s.Record(-5)                 // clamped up to 1 ns
		s.Record(int64(2 * histMax)) // clamped down to 60 s
		total += s.Count()
		s.Flush()
	}
	h := r.Merged()
	if h.TotalCount() != total {
		t.Fatalf("merged %d samples, recorded %d", h.TotalCount(), total)
	}
	if h.Min() != 1 || h.Max() < histMax {
		t.Fatalf("clamping: min %d max %d", h.Min(), h.Max())
	}
}

func TestCheckTestTool(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, []byte("x"), 0o644)
	exe := filepath.Join(dir, "exe")
	os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755)
	for path, want := range map[string]string{
		"":                         "empty",
		filepath.Join(dir, "none"): "no such file",
		dir:                        "not a regular file",
		plain:                      "not executable",
	} {
		err := CheckTestTool(path)
		var te *TestToolError
		if !errors.As(err, &te) || !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckTestTool(%q) = %v, want a usage error saying %q", path, err, want)
		}
	}
	if err := CheckTestTool(exe); err != nil {
		t.Errorf("CheckTestTool(executable) = %v", err)
	}
}

func TestGitPeerUnsupportedTool(t *testing.T) {
	leakcheck.Check(t)
	tool := filepath.Join(t.TempDir(), "test-tool")
	os.WriteFile(tool, []byte("#!/bin/sh\necho 'simple-ipc not compiled in' >&2\nexit 1\n"), 0o755)
	err := (&gitPeer{}).Prepare(context.Background(), &Env{TestTool: tool})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "not compiled in") {
		t.Fatalf("Prepare with a test-tool lacking simple-ipc: %v", err)
	}
}

// Roles of the test binary only.
const (
	testFailRole role[noSettings] = "test-fail"
	testHangRole role[noSettings] = "test-hang"
)

func init() {
	for _, e := range []roleEntry{
		testFailRole.with(func(context.Context, serverConfig, noSettings, func()) error {
			return errors.New("boom: cannot serve")
		}),
		testHangRole.with(func(ctx context.Context, _ serverConfig, _ noSettings, ready func()) error {
			ready()
			<-ctx.Done()
			return nil
		}),
	} {
		serverRoles[e.name] = e.run
	}
}

// testEnv returns an Env with a short private directory, removed at
// cleanup, for sockets.
func testEnv(t testing.TB) *Env {
	t.Helper()
	dir, err := os.MkdirTemp("", "pk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &Env{Dir: dir, exe: exe}
}

func TestServerFailures(t *testing.T) {
	leakcheck.Check(t)
	env := testEnv(t)
	ctx := context.Background()

	run := Run{Case: Case{PingPong, 64, 1}, Socket: env.TempPath("s")}
	sc, err := testFailRole.command(env, run, noSettings{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = startServer(ctx, "test", sc, run.Socket)
	var se *ServerError
	if !errors.As(err, &se) || !errors.Is(err, ErrServer) || !strings.Contains(se.Stderr, "boom") {
		t.Fatalf("failing server: %v", err)
	}

	// An occupied socket path gives a clear error from the unix server.
	l, err := net.Listen("unix", run.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sc, _ = unixRole.command(env, run, noSettings{})
	_, err = startServer(ctx, "unix", sc, run.Socket)
	if !errors.As(err, &se) || !strings.Contains(se.Stderr, "already in use") {
		t.Fatalf("server on an occupied path: %v", err)
	}

	if _, err := role[noSettings]("no-such-role").command(env, run, noSettings{}); err == nil {
		t.Fatal("a role missing from serverRoles got a command")
	}

	// A server that dies during the run is reported by stop.
	run.Socket = env.TempPath("s")
	sc, _ = testHangRole.command(env, run, noSettings{})
	srv, err := startServer(ctx, "test", sc, run.Socket)
	if err != nil {
		t.Fatal(err)
	}
	srv.cmd.Process.Kill()
	<-srv.exited
	if err := srv.stop(); !errors.As(err, &se) || se.Stage != "run" {
		t.Fatalf("stop after the server died: %v", err)
	}
}

func TestServerReadyDialTimeoutOnCancel(t *testing.T) {
	leakcheck.Check(t)
	env := testEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	// A process that never listens: readiness by dialing waits until ctx ends.
	sc := &ServerCmd{Cmd: env.Command(context.Background(), "sleep", "30"), Ready: ReadyDial}
	sc.Cmd.Cancel = nil
	start := time.Now()
	_, err := startServer(ctx, "sleeper", sc, env.TempPath("s"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("startServer = %v, want the context's deadline", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("startServer took %v to give up", time.Since(start))
	}
}

func sampleResults() *Results {
	mk := func(peer string, c Case, p50 int64, ops float64) Record {
		return Record{Case: c, Peer: peer, DurationNS: int64(time.Second), Ops: int64(ops),
			Latency:   Latency{Min: p50 / 2, P50: p50, P90: 2 * p50, P99: 3 * p50, P999: 4 * p50, Max: 5 * p50},
			OpsPerSec: ops, BytesPerSec: ops * 128, ClientCPUPerOp: 1000, ServerCPUPerOp: 2000,
			CDF: []CDFPoint{{0, p50 / 2}, {0.5, p50}, {1, 5 * p50}}}
	}
	pp := Case{PingPong, 64, 1}
	cc := Case{Concurrency, 64, 8}
	res := &Results{
		Suite: "full", Machine: Machine{CPU: "Test CPU", Cores: 2, Kernel: "6.18", OS: "linux", Arch: "amd64", GoVersion: "go1.26"},
		Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), WallNS: int64(90 * time.Second),
		DurationNS: int64(2 * time.Second), WarmupNS: int64(400 * time.Millisecond),
		Peers: []PeerStatus{{Name: "c", Doc: "C"}, {Name: "unix", Doc: "Go"}, {Name: "git", Doc: "git", Unavailable: "no test-tool"}},
		Cases: []Case{pp, cc, {FDPass, 1, 1}},
		Records: []Record{
			mk("c", pp, 20000, 40000), mk("unix", pp, 40000, 25000),
			mk("c", cc, 90000, 80000), mk("unix", cc, 60000, 100000),
		},
		Failures: []Failure{{Case: cc, Peer: "grpc", Error: "server: exited"}},
	}
	computeRatios(res)
	return res
}

func TestRatios(t *testing.T) {
	res := sampleResults()
	if x := res.Find(Case{PingPong, 64, 1}, "unix").XC; x == nil || *x != 2 {
		t.Errorf("unix against c on p50: %v", FormatRatio(x))
	}
	// Throughput-bound: the baseline's throughput over this one's.
	if x := res.Find(Case{Concurrency, 64, 8}, "unix").XC; x == nil || *x != 0.8 {
		t.Errorf("unix against c on throughput: %v", FormatRatio(x))
	}
}

func TestReportAndTables(t *testing.T) {
	res := sampleResults()
	res.Records[1].Notes = []string{"first error:\nEOF"}
	var tables bytes.Buffer
	if err := WriteTables(&tables, res, "###"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"### pingpong, 64 B, 1 client", "| peer |", "x unix", "| c    |", "2.00x", "0.80x",
		"fdpass, 1 fd per message, 1 client: no peer here runs this scenario",
		"peer git not run: no test-tool", "FAILED grpc concurrency size=64 conns=8", "- unix: first error: EOF\n",
	} {
		if !strings.Contains(tables.String(), want) {
			t.Errorf("tables lack %q:\n%s", want, tables.String())
		}
	}
	// Every table line of a block has the same width: aligned columns.
	for _, block := range strings.Split(tables.String(), "\n\n") {
		var width int
		for _, line := range strings.Split(block, "\n") {
			if !strings.HasPrefix(line, "|") {
				continue
			}
			n := len([]rune(line))
			if width == 0 {
				width = n
			} else if n != width {
				t.Errorf("ragged table line %q", line)
			}
		}
	}

	var rep bytes.Buffer
	opt := ReportOptions{Command: "ipcbench report", Charts: []Chart{{"Latency CDF", "docs/bench/cdf.svg"}}, Reading: "pktipc loses at 1 MiB."}
	if err := WriteReport(&rep, res, opt); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# pktipc benchmarks", "Command: `ipcbench report`", "Date: 2026-01-02", "Test CPU, 2 cores, kernel 6.18",
		"Go: go1.26", "![Latency CDF](docs/bench/cdf.svg)", "## Facts", "c 1.00x, unix 2.00x", "## Reading",
	} {
		if !strings.Contains(rep.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if got := ExtractReading(rep.Bytes()); got != opt.Reading {
		t.Errorf("reading kept across regeneration: %q", got)
	}
	if ExtractReading([]byte("# no markers")) != "" {
		t.Error("reading found in a report without markers")
	}

	var js bytes.Buffer
	if err := WriteJSON(&js, res); err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Records) != 4 || back.Records[1].XC == nil || back.Records[0].Scenario != PingPong || back.Records[0].Latency.P999 != 80000 {
		t.Errorf("JSON round trip: %+v", back.Records)
	}
}

// WritePeers says what each peer is, one line each, and why one did not
// run.
func TestWritePeers(t *testing.T) {
	var b bytes.Buffer
	if err := WritePeers(&b, sampleResults()); err != nil {
		t.Fatal(err)
	}
	if got, want := b.String(), "| peer | what runs |\n| --- | --- |\n| c | C |\n| unix | Go |\n| git | git — **not run**: no test-tool |\n"; got != want {
		t.Errorf("peers table:\n%s\nwant:\n%s", got, want)
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{FormatNS(850), "850ns"}, {FormatNS(21300), "21.3µs"}, {FormatNS(1250000), "1.25ms"}, {FormatNS(2.1e9), "2.10s"},
		{FormatNS(-1), "n/a"}, {FormatRate(950), "950"}, {FormatRate(40500), "40.5k"}, {FormatRate(1.2e6), "1.20M"},
		{FormatBytesRate(5.19e6), "5.19 MB/s"}, {FormatBytesRate(3.8e9), "3.80 GB/s"}, {FormatRatio(nil), "—"},
		{FormatSize(64), "64 B"}, {FormatSize(4096), "4 KiB"}, {FormatSize(1 << 20), "1 MiB"}, {FormatSize(70000), "70000 B"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestCPUModel(t *testing.T) {
	x86 := "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
	arm := "processor\t: 0\nBogoMIPS\t: 50.00\nModel\t: Raspberry Pi 4\n"
	if got := cpuModel([]byte(x86)); got != "AMD EPYC 7B13" {
		t.Errorf("x86: %q", got)
	}
	if got := cpuModel([]byte(arm)); got != "Raspberry Pi 4" {
		t.Errorf("arm: %q", got)
	}
	if m := DescribeMachine(); m.Cores < 1 || m.GoVersion == "" {
		t.Errorf("DescribeMachine = %+v", m)
	}
}

func TestPeerList(t *testing.T) {
	names := PeerNames()
	if len(names) < 2 || names[0] != BaselineC || names[1] != BaselineUnix {
		t.Errorf("peers %v: the baselines come first", names)
	}
	for i, p := range Peers() {
		if p.Name == "" || p.Doc == "" || p.New == nil || len(p.Scenarios) == 0 {
			t.Errorf("peer %d (%q) is incomplete", i, p.Name)
		}
		if slices.Index(names, p.Name) != i {
			t.Errorf("peer %q is listed twice", p.Name)
		}
		if info, ok := Lookup(p.Name); !ok || info.Name != p.Name || peerOrder(p.Name) != i {
			t.Errorf("Lookup(%q) = %q, %v; order %d, want %d", p.Name, info.Name, ok, peerOrder(p.Name), i)
		}
	}
	if _, ok := Lookup("carrier-pigeon"); ok {
		t.Error("Lookup found a peer that is not listed")
	}
}

// A role's settings reach its function typed, and settings of another
// shape are refused rather than read as zeros.
func TestRoleSettings(t *testing.T) {
	const r role[tortureSettings] = "test-settings"
	var got tortureSettings
	run := r.with(func(_ context.Context, _ serverConfig, s tortureSettings, _ func()) error {
		got = s
		return nil
	}).run
	want := tortureSettings{Budget: 1 << 20, MaxConns: 3, MaxPerUID: 2, FirstByte: time.Minute}
	raw, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), serverConfig{Settings: raw}, nil); err != nil || got != want {
		t.Errorf("settings %+v, %v; want %+v", got, err, want)
	}
	if err := run(context.Background(), serverConfig{Settings: []byte(`{"threads":8}`)}, nil); err == nil {
		t.Error("settings of another role were accepted")
	}
}

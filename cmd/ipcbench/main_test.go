package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pktipc/pktipc/bench"
	"github.com/pktipc/pktipc/internal/leakcheck"
)

// mainEnv makes the test binary run as ipcbench.
const mainEnv = "IPCBENCH_TEST_MAIN"

func TestMain(m *testing.M) {
	bench.RunChildIfRequested()
	if os.Getenv(mainEnv) != "" {
		os.Exit(realMain(os.Args[1:], &cmdIO{stdout: os.Stdout, stderr: os.Stderr}))
	}
	// Server children are this race-built binary; spare them the race
	// runtime's one-second sleep at exit.
	if os.Getenv("GORACE") == "" {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	leakcheck.VerifyTestMain(m)
}

// ipcbench returns a command running this test binary as ipcbench, with
// plain progress (CI set) and a marker in its environment that every
// process it starts inherits.
func ipcbench(t *testing.T, args ...string) (*exec.Cmd, string) {
	t.Helper()
	marker := "IPCBENCH_TEST_MARK=" + strings.ReplaceAll(t.Name(), "/", "_") + time.Now().Format("150405.000000000")
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), mainEnv+"=1", "CI=true", marker)
	return cmd, marker
}

// runIpcbench runs ipcbench to completion and returns its outputs and exit
// status.
func runIpcbench(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd, _ := ipcbench(t, args...)
	cmd.Env = append(cmd.Env, env...)
	return runCmd(t, cmd)
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "test-tool")
	if err := os.WriteFile(plain, []byte("not a program"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--nope"}, "flag provided but not defined: -nope"},
		{[]string{"--duration=fast"}, "invalid value"},
		{[]string{"run", "extra"}, `unexpected argument "extra"`},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"run", "--scenario=pong"}, `unknown scenario "pong"`},
		{[]string{"run", "--peer=carrier"}, `unknown peer "carrier"`},
		{[]string{"run", "--size=0"}, `bad size "0"`},
		{[]string{"run", "--peer=git"}, "needs --test-tool"},
		{[]string{"run", "--test-tool=" + filepath.Join(dir, "missing")}, "no such file or directory"},
		{[]string{"run", "--test-tool=" + plain}, "is not executable"},
		{[]string{"run", "--test-tool=" + dir}, "is not a regular file"},
		{[]string{"report", "--test-tool=" + plain}, "is not executable"},
		{[]string{"report", "--bogus"}, "flag provided but not defined"},
		{[]string{"torture", "chaos", "--soak", "1h"}, `unexpected argument "chaos"`},
	} {
		stdout, stderr, code := runIpcbench(t, nil, tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("ipcbench %s: exit %d, stderr %q; want exit 2 and %q", strings.Join(tc.args, " "), code, stderr, tc.want)
		}
		if stdout != "" {
			t.Errorf("ipcbench %s wrote to stdout: %q", strings.Join(tc.args, " "), stdout)
		}
	}
	if _, stderr, code := runIpcbench(t, []string{durationEnv + "=soon"}); code != exitUsage || !strings.Contains(stderr, durationEnv) {
		t.Errorf("bad %s: exit %d, %q", durationEnv, code, stderr)
	}
}

func TestHelp(t *testing.T) {
	stdout, _, code := runIpcbench(t, nil, "help")
	if code != 0 || !strings.Contains(stdout, "run ") || !strings.Contains(stdout, "report ") {
		t.Errorf("help: exit %d:\n%s", code, stdout)
	}
	stdout, _, code = runIpcbench(t, nil, "help", "run")
	if code != 0 || !strings.Contains(stdout, "-test-tool") || !strings.Contains(stdout, "-json") {
		t.Errorf("help run: exit %d:\n%s", code, stdout)
	}
	if _, stderr, code := runIpcbench(t, nil, "run", "-h"); code != 0 || !strings.Contains(stderr, "-plot") {
		t.Errorf("run -h: exit %d:\n%s", code, stderr)
	}
	if stdout, stderr, code := runIpcbench(t, nil, "help", "help"); code != 0 || !strings.Contains(stdout, "usage: ipcbench help") {
		t.Errorf("help help: exit %d: %q %q", code, stdout, stderr)
	}
}

// tiny makes the suite's timings test-sized.
var tiny = []string{durationEnv + "=40ms", warmupEnv + "=10ms"}

func TestDefaultCommandPrintsTable(t *testing.T) {
	tmp := t.TempDir()
	stdout, stderr, code := runIpcbench(t, append(tiny, "TMPDIR="+tmp))
	if code != 0 {
		t.Fatalf("ipcbench: exit %d\nstderr:\n%s", code, stderr)
	}
	for _, want := range []string{"pktipc quick suite", "| c | blocking C over a Unix socket", "| unix | net.UnixConn, goroutine per connection",
		"| pktipc-git | ", "| pktipc-events | ", "### pingpong, 64 B, 1 client", "| unix ", "x unix", "### concurrency, 64 B, 8 clients"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "ipcbench: ") || !strings.Contains(stderr, "unix pingpong, 64 B, 1 client: p50 ") {
		t.Errorf("no plain progress lines on stderr:\n%s", stderr)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("%d entries left in TMPDIR", len(ents))
	}
}

func TestJSONAndPlots(t *testing.T) {
	plots := filepath.Join(t.TempDir(), "plots")
	stdout, stderr, code := runIpcbench(t, nil, "run", "--peer=unix", "--scenario=concurrency", "--conns=1,2",
		"--duration=40ms", "--warmup=10ms", "--json", "--plot="+plots)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	var res bench.Results
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, stdout)
	}
	if len(res.Records) != 2 || res.Records[0].Peer != "unix" || res.Records[1].Conns != 2 || res.Records[0].Ops <= 0 {
		t.Fatalf("records: %+v", res.Records)
	}
	if !strings.HasPrefix(res.Command, "ipcbench run --peer=unix") {
		t.Errorf("command %q", res.Command)
	}
	for _, name := range []string{"cdf-concurrency-64-c1.svg", "cdf-concurrency-64-c2.svg", "throughput-concurrency.svg"} {
		b, err := os.ReadFile(filepath.Join(plots, name))
		if err != nil || !bytes.Contains(b, []byte("<svg")) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestReportCommand(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "BENCHMARKS.md")
	reading := "pktipc still loses at 1 MiB."
	old := "# old\n<!-- reading:begin (hand-written; kept by ipcbench report) -->\n" + reading + "\n<!-- reading:end -->\n"
	if err := os.WriteFile(out, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runIpcbench(t, nil, "report", "--peer=unix", "--scenario=concurrency,pingpong", "--conns=1,2",
		"--size=64", "--duration=40ms", "--warmup=10ms", "--out="+out, "--plots="+filepath.Join(dir, "docs", "bench"),
		"--json="+filepath.Join(dir, "raw.json"))
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if !strings.Contains(stdout, "wrote "+out) {
		t.Errorf("stdout %q", stdout)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# pktipc benchmarks", "- Command: `ipcbench report --peer=unix", "- Machine: ", "- Go: go",
		"### concurrency, 64 B, 2 clients", "![Throughput against clients: concurrency, 64 B](docs/bench/throughput-concurrency.svg)",
		reading} {
		if !strings.Contains(string(b), want) {
			t.Errorf("report lacks %q:\n%s", want, b)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "raw.json")); err != nil {
		t.Error(err)
	}
}

func TestInterruptCleansUp(t *testing.T) {
	leakcheck.Check(t)
	tmp := t.TempDir()
	cmd, marker := ipcbench(t, "run", "--peer=c,unix", "--scenario=pingpong", "--size=64",
		"--duration=1m", "--warmup=10ms", "--tmpdir="+tmp)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until a server runs: its socket appears in the private directory.
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !socketIn(tmp) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("no server socket appeared")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the client is now measuring
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var all []string
	for l := range lines {
		all = append(all, l)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("ipcbench did not exit within 30 s of SIGINT")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitInterrupted {
		t.Errorf("exit after SIGINT: %v, want status %d", err, exitInterrupted)
	}
	if !strings.Contains(strings.Join(all, "\n"), "interrupted") {
		t.Errorf("stderr does not say interrupted:\n%s", strings.Join(all, "\n"))
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("left in the temp dir: %v", ents)
	}
	if pids := processesWith(marker); len(pids) > 0 {
		t.Errorf("processes left behind: %v", pids)
	}
}

// socketIn reports whether a socket file exists one level below dir.
func socketIn(dir string) bool {
	matches, _ := filepath.Glob(filepath.Join(dir, "*", "*"))
	for _, m := range matches {
		if fi, err := os.Lstat(m); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return true
		}
	}
	return false
}

// processesWith lists the pids whose environment holds marker.
func processesWith(marker string) []string {
	ents, _ := os.ReadDir("/proc")
	var pids []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(b, []byte{0}) {
			if string(kv) == marker {
				pids = append(pids, e.Name())
			}
		}
	}
	return pids
}

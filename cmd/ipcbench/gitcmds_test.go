package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// gitRun runs ipcbench in dir and returns its outputs and exit status.
func gitRun(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd, _ := ipcbench(t, args...)
	cmd.Dir = dir
	return runCmd(t, cmd)
}

func runCmd(t *testing.T, cmd *exec.Cmd) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// expect compares a command's exit status and outputs.
func expect(t *testing.T, what string, stdout, stderr string, code int, wantOut, wantErr string, wantCode int) {
	t.Helper()
	if code != wantCode || stdout != wantOut || stderr != wantErr {
		t.Errorf("%s: exit %d, stdout %.200q, stderr %q; want exit %d, %.200q, %q", what, code, stdout, stderr, wantCode, wantOut, wantErr)
	}
}

// gitDir is a short private working directory, so that git's default
// relative name "ipc-test" is a short socket path.
func gitDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// killMarked kills what is left of the processes carrying marker (a daemon
// that start-daemon left running when a test failed).
func killMarked(t *testing.T, marker string) {
	t.Helper()
	for _, p := range processesWith(marker) {
		if pid, err := strconv.Atoi(p); err == nil {
			if proc, err := os.FindProcess(pid); err == nil {
				proc.Kill()
			}
			t.Errorf("process %d left running", pid)
		}
	}
}

func rows(n int) string {
	var sb strings.Builder
	for row := range n {
		fmt.Fprintf(&sb, "big: %075d\n", row)
	}
	return sb.String()
}

// TestGitT0052 replays git's t0052 with ipcbench on both sides, through the
// command line, in a working directory where the default name applies.
func TestGitT0052(t *testing.T) {
	leakcheck.Check(t)
	dir := gitDir(t)
	start, marker := ipcbench(t, "start-daemon", "--threads=8")
	start.Dir = dir
	t.Cleanup(func() { killMarked(t, marker) })
	o, e, code := runCmd(t, start)
	expect(t, "start-daemon", o, e, code, "", "", 0)
	o, e, code = gitRun(t, dir, "is-active")
	expect(t, "is-active", o, e, code, "", "", 0)

	o, e, code = gitRun(t, dir, "send", "--token=ping")
	expect(t, "send ping", o, e, code, "pong\n", "", 0)

	o, e, code = gitRun(t, dir, "serve", "--threads=8")
	expect(t, "second server", o, e, code, "", "error: socket/pipe already in use: 'ipc-test'\n", 1)
	o, e, code = gitRun(t, dir, "is-active")
	expect(t, "first server still active", o, e, code, "", "", 0)

	// slow takes ten seconds: run it beside the other cases.
	slow, _ := ipcbench(t, "send", "--token=slow")
	slow.Dir = dir
	var slowOut, slowErr bytes.Buffer
	slow.Stdout, slow.Stderr = &slowOut, &slowErr
	if err := slow.Start(); err != nil {
		t.Fatal(err)
	}

	all := rows(10000)
	o, e, code = gitRun(t, dir, "send", "--token=big")
	expect(t, "big", o, e, code, all+"\n", "", 0)
	o, e, code = gitRun(t, dir, "send", "--token=chunk")
	expect(t, "chunk", o, e, code, all+"\n", "", 0)

	o, e, code = gitRun(t, dir, "sendbytes", "--bytecount=100000", "--byte=A")
	expect(t, "sendbytes", o, e, code, "sent:A00100000 rcvd:A00100000\n", "", 0)

	checkMultiple(t, dir)
	if err := slow.Wait(); err != nil {
		t.Errorf("send slow: %v: %s", err, slowErr.String())
	}
	if got := strings.Count(slowOut.String(), "\n"); got < 100 || !strings.HasPrefix(slowOut.String(), all[:81*100]) {
		t.Errorf("slow: %d lines", got)
	}

	o, e, code = gitRun(t, dir, "stop-daemon")
	expect(t, "stop-daemon", o, e, code, "", "", 0)
	o, e, code = gitRun(t, dir, "is-active")
	expect(t, "is-active after stop", o, e, code, "", "error: no server listening at 'ipc-test'\n", 1)
	o, e, code = gitRun(t, dir, "send", "--token=ping")
	expect(t, "send after stop", o, e, code, "", "error: no server listening at 'ipc-test'\n", 1)
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left in the directory: %v", ents)
	}
	// The daemon exits once it has stopped listening.
	for deadline := time.Now().Add(30 * time.Second); len(processesWith(marker)) > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
}

// checkMultiple runs multiple with seven threads, whose lines and sizes
// must be git's.
func checkMultiple(t *testing.T, dir string) {
	t.Helper()
	o, e, code := gitRun(t, dir, "multiple", "--threads=7", "--bytecount=19", "--batchsize=13")
	lines := strings.Split(strings.TrimSuffix(o, "\n"), "\n")
	if code != 0 || e != "" || len(lines) != 92 || !strings.Contains(o, "\nclient (good 91) (join 0), (errors 0)\n") {
		t.Errorf("multiple: exit %d, %d lines, stderr %q:\n%s", code, len(lines), e, o)
	}
	var sizes []int
	re := regexp.MustCompile(`(?m)^sent:A(\d{8}) rcvd:A(\d{8})$`)
	for _, m := range re.FindAllStringSubmatch(o, -1) {
		n, _ := strconv.Atoi(m[1])
		if m[1] != m[2] {
			t.Errorf("crossed streams: %q", m[0])
		}
		sizes = append(sizes, n)
	}
	if want := []int{19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31}; fmt.Sprint(sizes) != fmt.Sprint(want) {
		t.Errorf("thread A sizes %v, want %v", sizes, want)
	}
}

// startServe runs `ipcbench serve` in the background and waits until it
// listens at path.
func startServe(t *testing.T, dir, path string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd, _ := ipcbench(t, "serve", "--name="+path)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, _, code := gitRun(t, dir, "is-active", "--name="+path); code == 0 {
			return cmd, &stderr
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("serve did not start: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A signal stops serve cleanly: exit 0 and the socket removed.
func TestServeStopsOnSignal(t *testing.T) {
	leakcheck.Check(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		dir := gitDir(t)
		cmd, stderr := startServe(t, dir, "s")
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("serve after %v: %v: %s", sig, err, stderr.String())
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("after %v left in the directory: %v", sig, ents)
		}
	}
}

// TestServeExitsOnQuit: `ipcbench serve` answers, and exits 0 with its
// socket removed once a client sends quit. What it answers, byte for byte,
// is internal/gitipc's TestDaemonWire.
func TestServeExitsOnQuit(t *testing.T) {
	leakcheck.Check(t)
	dir := gitDir(t)
	cmd, stderr := startServe(t, dir, "s")
	o, e, code := gitRun(t, dir, "send", "--name=s", "--token=ping")
	expect(t, "send ping", o, e, code, "pong\n", "", 0)
	o, e, code = gitRun(t, dir, "stop-daemon", "--name=s")
	expect(t, "stop-daemon", o, e, code, "", "", 0)
	if err := cmd.Wait(); err != nil {
		t.Errorf("serve after quit: %v: %s", err, stderr.String())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left in the directory: %v", ents)
	}
}

// git's option syntax: options after ignored positional arguments, "--"
// ending them, the simple-ipc form, unknown subcommands.
func TestGitCommandSyntax(t *testing.T) {
	leakcheck.Check(t)
	dir := gitDir(t)
	path := filepath.Join(dir, "s")
	cmd, _ := startServe(t, dir, path)
	defer func() {
		gitRun(t, dir, "stop-daemon", "--name="+path)
		cmd.Wait()
	}()
	for _, tc := range []struct {
		args     []string
		out, err string
		code     int
	}{
		{[]string{"send", "positional", "--name=" + path, "more", "--token=ping"}, "pong\n", "", 0},
		{[]string{"send", "--name=" + path, "--", "--token=ping"}, "unhandled command: (no-command)\n", "", 0},
		{[]string{"simple-ipc", "send", "--name", path, "--token", "ping"}, "pong\n", "", 0},
		{[]string{"simple-ipc", "sendbytes", "--name=" + path, "--bytecount=0", "--byte=Zed"}, "sent:Z00000001 rcvd:Z00000001\n", "", 0},
		{[]string{"simple-ipc", "is-active", "--name=" + path}, "", "", 0},
		{[]string{"simple-ipc", "SUPPORTS_SIMPLE_IPC"}, "", "", 0},
		{[]string{"simple-ipc", "frobnicate"}, "", "fatal: Unhandled subcommand: 'frobnicate'\n", 128},
		{[]string{"is-active"}, "", "error: no server listening at 'ipc-test'\n", 1},
		{[]string{"multiple", "--name=" + path, "--threads=0", "--batchsize=0", "--bytecount=3"}, "sent:A00000003 rcvd:A00000003\nclient (good 1) (join 0), (errors 0)\n", "", 0},
	} {
		o, e, code := gitRun(t, dir, tc.args...)
		expect(t, strings.Join(tc.args, " "), o, e, code, tc.out, tc.err, tc.code)
	}
	if _, e, code := gitRun(t, dir, "send", "--threads=many"); code != exitUsage || !strings.Contains(e, "invalid value") {
		t.Errorf("bad option: exit %d, %q", code, e)
	}
	// The simple-ipc form exits as test-tool's parse_options does.
	for _, args := range [][]string{{"simple-ipc"}, {"simple-ipc", "-h"}, {"simple-ipc", "send", "--threads=many"}, {"simple-ipc", "send", "-h"}} {
		if _, _, code := gitRun(t, dir, args...); code != exitGitUsage {
			t.Errorf("%s: exit %d, want %d", strings.Join(args, " "), code, exitGitUsage)
		}
	}
	if o, _, code := gitRun(t, dir, "help", "send"); code != 0 || !strings.Contains(o, "-token") || !strings.Contains(o, "-bytecount") {
		t.Errorf("help send: exit %d\n%s", code, o)
	}
}

// ipcbench stands in for git's test-tool: the git peers of the benchmark
// then run git's protocol with ipcbench on both sides.
func TestIpcbenchAsTestTool(t *testing.T) {
	leakcheck.Check(t)
	tool := filepath.Join(t.TempDir(), "test-tool")
	script := fmt.Sprintf("#!/bin/sh\n%s=1 exec %q \"$@\"\n", mainEnv, os.Args[0])
	if err := os.WriteFile(tool, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runIpcbench(t, nil, "run", "--test-tool="+tool, "--peer=git,pktipc-vs-git,git-vs-pktipc",
		"--duration=40ms", "--warmup=10ms", "--json")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	for _, peer := range []string{`"peer": "git"`, `"peer": "pktipc-vs-git"`, `"peer": "git-vs-pktipc"`} {
		if !strings.Contains(stdout, peer) {
			t.Errorf("no record with %s:\n%s", peer, stdout)
		}
	}
}

// gitToolEnv names git's t/helper/test-tool for TestAgainstGitTestTool.
const gitToolEnv = "PKTIPC_GIT_TEST_TOOL"

// TestAgainstGitTestTool drives git's daemon and ipcbench's with git's
// client and ipcbench's, and requires byte-identical outputs and statuses
// (multiple's lines compared sorted: threads interleave). It needs a git
// build's test-tool in $PKTIPC_GIT_TEST_TOOL.
func TestAgainstGitTestTool(t *testing.T) {
	tool := os.Getenv(gitToolEnv)
	if tool == "" {
		t.Skip("set " + gitToolEnv + " to git's t/helper/test-tool to compare with git")
	}
	leakcheck.Check(t)
	cases := [][]string{
		{"is-active"}, {"send", "--token=ping"}, {"send"}, {"send", "--token=big"}, {"send", "--token=chunk"},
		{"sendbytes", "--bytecount=100000", "--byte=A"}, {"sendbytes"}, {"send", "--token=sendbytes "},
		{"send", "--token=sendbytes AB"}, {"multiple", "--threads=7", "--bytecount=19", "--batchsize=13"},
		{"multiple", "--threads=30", "--bytecount=3", "--batchsize=2"}, {"send", "extra", "--token=ping"},
		{"is-active", "--name=nope"}, {"send", "--name=nope"}, {"is-active", "--name=/etc/passwd"},
		{"is-active", "--name=/etc/passwd/x"},
	}
	for _, server := range []string{"git", "ipcbench"} {
		t.Run("server="+server, func(t *testing.T) {
			dir := gitDir(t)
			var daemon *exec.Cmd
			if server == "git" {
				daemon = exec.Command(tool, "simple-ipc", "run-daemon", "--threads=8")
			} else {
				daemon, _ = ipcbench(t, "serve", "--threads=8")
			}
			daemon.Dir = dir
			if err := daemon.Start(); err != nil {
				t.Fatal(err)
			}
			defer daemon.Wait()
			defer gitRun(t, dir, "stop-daemon")
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if _, _, code := gitRun(t, dir, "is-active"); code == 0 {
					break
				}
				if time.Now().After(deadline) {
					daemon.Process.Kill()
					t.Fatal("daemon did not start")
				}
			}
			for _, args := range cases {
				git := exec.Command(tool, append([]string{"simple-ipc"}, args...)...)
				git.Dir = dir
				gOut, gErr, gCode := runCmd(t, git)
				pOut, pErr, pCode := gitRun(t, dir, args...)
				if args[0] == "multiple" {
					gOut, pOut = sortedLines(gOut), sortedLines(pOut)
				}
				if gOut != pOut || gErr != pErr || gCode != pCode {
					t.Errorf("%s: git exit %d, %.100q, %q; ipcbench exit %d, %.100q, %q",
						strings.Join(args, " "), gCode, gOut, gErr, pCode, pOut, pErr)
				}
			}
		})
	}
}

func sortedLines(s string) string {
	l := strings.Split(s, "\n")
	slices.Sort(l)
	return strings.Join(l, "\n")
}

//go:build linux

package main

import (
	"bytes"
	"debug/elf"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// recordingHook builds the C hook with its fallback pointed at a script
// that notes each call in a file and runs the real command, and returns
// the hook and the file.
func recordingHook(t *testing.T) (hook, calls string) {
	t.Helper()
	if cHook == "" {
		t.Skip("no C compiler: build-hook failed")
	}
	dir := t.TempDir()
	calls = filepath.Join(dir, "calls")
	script := filepath.Join(dir, "fallback")
	body := "#!/bin/sh\necho \"$*\" >> '" + calls + "'\nexec '" + binary + "' \"$@\"\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	// build-hook compiles in its own path; the script stands in for it.
	if err := os.Symlink(binary, filepath.Join(dir, "real")); err != nil {
		t.Fatal(err)
	}
	hook = filepath.Join(dir, "hook")
	cmd := exec.Command("sh", "-c", `"$CC" -O2 -Wall -Werror -o "$1" -DPKTIPC_FSMONITOR_BIN="\"$2\"" -x c - < "$3"`,
		"sh", hook, script, filepath.Join("chook", "hook.c"))
	cmd.Env = append(os.Environ(), "CC="+cc())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	return hook, calls
}

func cc() string {
	if c := os.Getenv("CC"); c != "" {
		return c
	}
	return "cc"
}

func runHook(t *testing.T, dir, hook string, env []string, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(hook, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, &stdout, &stderr
	cmd.Env = append(os.Environ(), env...)
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

func readCalls(t *testing.T, calls string) []string {
	t.Helper()
	b, err := os.ReadFile(calls)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// The C hook answers from a running daemon by itself, byte for byte as
// the Go hook does, and hands every other case to the Go command.
func TestCHook(t *testing.T) {
	hook, calls := recordingHook(t)
	w := newWorktree(t)
	writeFile(t, filepath.Join(w.dir, "a.txt"), "a\n")
	w.git("add", "a.txt")
	w.git("commit", "-q", "-m", "a")
	w.useHookCommand("'" + hook + "'")

	// No daemon: the Go command starts one and answers (trivially).
	out, stderr, err := runHook(t, w.dir, hook, nil, "2", strconv.FormatInt(time.Now().UnixNano(), 10))
	if err != nil {
		t.Fatalf("hook: %v; %s", err, stderr)
	}
	token, _, trivial := splitReply(t, out)
	if !trivial {
		t.Fatalf("first reply %q: want trivial", out)
	}
	if got := readCalls(t, calls); len(got) != 1 || !strings.HasPrefix(got[0], "hook 2 ") {
		t.Fatalf("fallback calls %q, want one hook call", got)
	}
	w.track()

	// A daemon runs: the C hook answers alone, as the Go hook would.
	writeFile(t, filepath.Join(w.dir, "a.txt"), "changed\n")
	writeFile(t, filepath.Join(w.dir, "b.txt"), "new\n")
	out, stderr, err = runHook(t, w.dir, hook, nil, "2", token)
	if err != nil {
		t.Fatalf("hook: %v; %s", err, stderr)
	}
	if got := readCalls(t, calls); len(got) != 1 {
		t.Fatalf("the C hook fell back with a daemon running: %q", got)
	}
	_, paths, trivial := splitReply(t, out)
	if trivial || strings.Join(paths, ",") != "a.txt,b.txt" && strings.Join(paths, ",") != "b.txt,a.txt" {
		t.Fatalf("reply %q", out)
	}
	// The Go hook's answer to the same token differs only in the
	// sequence number the daemon gave the reply.
	goOut, _ := w.fsmWant(0, "hook", "2", token)
	unseq := func(s string) string {
		tok, rest, _ := strings.Cut(s, "\x00")
		return tok[:strings.LastIndexByte(tok, ':')] + "\x00" + rest
	}
	if unseq(goOut) != unseq(out) {
		t.Fatalf("C hook %q, Go hook %q for the same token", out, goOut)
	}

	// git through the C hook sees the change.
	if st := w.git("status", "--porcelain=v1"); !strings.Contains(st, "a.txt") || !strings.Contains(st, "b.txt") {
		t.Fatalf("git status through the C hook: %q", st)
	}

	// Cases it leaves to the Go command: GIT_DIR in the environment, a
	// version it does not speak, bad arguments.
	n := len(readCalls(t, calls))
	if _, _, err := runHook(t, w.dir, hook, []string{"GIT_DIR=" + filepath.Join(w.dir, ".git")}, "2", token); err != nil {
		t.Fatalf("hook with GIT_DIR: %v", err)
	}
	if got := readCalls(t, calls); len(got) != n+1 {
		t.Fatalf("GIT_DIR did not fall back: %q", got)
	}
	if _, stderr, err := runHook(t, w.dir, hook, nil, "1", token); err == nil || !strings.Contains(stderr, "version") {
		t.Fatalf("version 1: %v, %q", err, stderr)
	}
	if _, _, err := runHook(t, w.dir, hook, nil); err == nil {
		t.Fatal("no arguments accepted")
	}
	w.stop()
}

// build-hook refuses a bad command line and reports a compiler failure.
func TestBuildHookErrors(t *testing.T) {
	if cHook == "" {
		t.Skip("no C compiler")
	}
	var stdout, stderr bytes.Buffer
	if got := realMain(t.Context(), []string{"build-hook"}, &stdout, &stderr); got != exitUsage {
		t.Fatalf("no path: exit %d", got)
	}
	// An option is refused, not written as a file in the current directory.
	t.Chdir(t.TempDir())
	if got := realMain(t.Context(), []string{"build-hook", "--help"}, &stdout, &stderr); got != exitUsage {
		t.Fatalf("--help: exit %d", got)
	}
	if _, err := os.Lstat("--help"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("build-hook --help wrote a file: %v", err)
	}
	t.Setenv("CC", "false")
	stderr.Reset()
	if got := realMain(t.Context(), []string{"build-hook", filepath.Join(t.TempDir(), "h")}, &stdout, &stderr); got != exitFail {
		t.Fatalf("failing compiler: exit %d, %s", got, stderr.String())
	}
}

// build-hook links the hook statically where it can, and falls back to
// the ordinary link where the C library has no static archive.
func TestBuildHookLink(t *testing.T) {
	if cHook == "" {
		t.Skip("no C compiler")
	}
	dir := t.TempDir()
	noStatic := filepath.Join(dir, "cc")
	body := "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = -static ] && { echo 'no static libc' >&2; exit 1; }; done\nexec '" + cc() + "' \"$@\"\n"
	if err := os.WriteFile(noStatic, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cc     string
		static bool
	}{{cc(), true}, {noStatic, false}, {noStatic + " -Wall", false}} {
		t.Setenv("CC", tc.cc)
		hook := filepath.Join(dir, "hook-"+strconv.Itoa(len(tc.cc)))
		var stdout, stderr bytes.Buffer
		if got := realMain(t.Context(), []string{"build-hook", hook}, &stdout, &stderr); got != exitOK {
			if tc.static {
				t.Skipf("no static link here: %s", stderr.String())
			}
			t.Fatalf("CC=%s: exit %d, %s", tc.cc, got, stderr.String())
		}
		if strings.Contains(stderr.String(), "no static libc") {
			t.Fatalf("the fallback's first failure was reported: %s", stderr.String())
		}
		dynamic, err := interpreted(hook)
		if err != nil {
			t.Fatal(err)
		}
		if dynamic == tc.static {
			t.Fatalf("CC=%s: the hook has a dynamic loader: %v, want static %v", tc.cc, dynamic, tc.static)
		}
		// Either way it runs: with no arguments it says how to use it.
		if _, _, err := runHook(t, dir, hook, nil); err == nil {
			t.Fatalf("CC=%s: the hook accepted no arguments", tc.cc)
		}
	}
}

// interpreted reports whether the ELF program at path names a dynamic
// loader (a PT_INTERP header).
func interpreted(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true, nil
		}
	}
	return false, nil
}

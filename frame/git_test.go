package frame

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// Interoperability with the installed git binary: we decode what
// git upload-pack writes, and git accepts a protocol v2 request we encode.

// gitRepo creates a repository with two commits, three branches, a
// lightweight and an annotated tag, and returns its path and the
// environment to run git in (no system or user configuration).
func gitRepo(t *testing.T) (string, []string) {
	t.Helper()
	gitPath, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git not installed:", err)
	}
	home := t.TempDir()
	dir := filepath.Join(home, "repo")
	env := append(os.Environ(),
		"GIT_CONFIG_NOSYSTEM=1", "HOME="+home, "XDG_CONFIG_HOME="+home,
		"GIT_AUTHOR_NAME=pktipc", "GIT_AUTHOR_EMAIL=pktipc@example.com",
		"GIT_COMMITTER_NAME=pktipc", "GIT_COMMITTER_EMAIL=pktipc@example.com",
		"GIT_AUTHOR_DATE=2026-01-02T03:04:05Z", "GIT_COMMITTER_DATE=2026-01-02T03:04:05Z",
	)
	env = slices.DeleteFunc(env, func(s string) bool { return strings.HasPrefix(s, "GIT_PROTOCOL=") || strings.HasPrefix(s, "GIT_DIR=") })
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(gitPath, args...)
		cmd.Dir = dir
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	run("-c", "init.defaultBranch=main", "init", "-q")
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("one\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run("add", "a.txt")
	run("commit", "-q", "-m", "first")
	run("branch", "feature")
	run("tag", "v0.1")
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("two\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run("commit", "-q", "-am", "second")
	run("branch", "topic/x")
	run("tag", "-a", "-m", "release", "v1.0")
	return dir, env
}

// gitOut runs git and returns its standard output.
func gitOut(t *testing.T, dir string, env []string, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// packets decodes a whole stream packet by packet with Decode.
func packets(t *testing.T, b []byte) (kinds []Kind, payloads []string) {
	t.Helper()
	for len(b) > 0 {
		k, p, n, err := Decode(b)
		if err != nil || k == NeedMore {
			t.Fatalf("decoding git's output: %v %v at %q", k, err, b[:min(len(b), 16)])
		}
		kinds = append(kinds, k)
		payloads = append(payloads, string(p))
		b = b[n:]
	}
	return kinds, payloads
}

func TestGitInterop(t *testing.T) {
	leakcheck.Check(t)
	dir, env := gitRepo(t)
	// The expected refs: "<oid> <name>" from show-ref, with peeled tags.
	refs := strings.Split(strings.TrimSpace(string(gitOut(t, dir, env, nil, "show-ref", "--head", "-d"))), "\n")
	if len(refs) < 7 { // HEAD, 3 branches, 2 tags, 1 peeled tag
		t.Fatalf("show-ref gave %d refs: %q", len(refs), refs)
	}

	t.Run("v0-advertisement", func(t *testing.T) {
		out := gitOut(t, dir, env, nil, "upload-pack", "--advertise-refs", "--stateless-rpc", dir)
		kinds, payloads := packets(t, out)
		if kinds[len(kinds)-1] != Flush || slices.Index(kinds, Flush) != len(kinds)-1 {
			t.Fatalf("advertisement does not end at its only flush: %v", kinds)
		}
		var got []string
		for i, p := range payloads[:len(payloads)-1] {
			if kinds[i] != Data || !strings.HasSuffix(p, "\n") {
				t.Fatalf("packet %d: %v %q", i, kinds[i], p)
			}
			line := strings.TrimSuffix(p, "\n")
			if i == 0 { // capabilities ride on the first ref after a NUL
				line, _, _ = strings.Cut(line, "\x00")
			}
			got = append(got, line)
		}
		if !slices.Equal(got, refs) {
			t.Fatalf("advertised refs:\n%q\nshow-ref:\n%q", got, refs)
		}
		// The same stream through the Reader and the SI assembler: one
		// message that is all the payloads concatenated.
		msg, err := NewReader(bytes.NewReader(out), SimpleIPC, 0).ReadMessage()
		if err != nil || string(msg) != strings.Join(payloads, "") {
			t.Fatalf("assembled advertisement: %v", err)
		}
	})

	t.Run("v2-capabilities", func(t *testing.T) {
		out := gitOut(t, dir, append(env, "GIT_PROTOCOL=version=2"), nil,
			"upload-pack", "--advertise-refs", "--stateless-rpc", dir)
		kinds, payloads := packets(t, out)
		if payloads[0] != "version 2\n" || kinds[len(kinds)-1] != Flush {
			t.Fatalf("v2 advertisement: %q", payloads)
		}
		if !slices.ContainsFunc(payloads, func(p string) bool { return strings.HasPrefix(p, "ls-refs") }) {
			t.Fatalf("no ls-refs capability in %q", payloads)
		}
	})

	t.Run("v2-ls-refs", func(t *testing.T) {
		// 0014command=ls-refs\n 0001 0009peel\n 0000, built with the encoder.
		req, err := AppendPacket(nil, []byte("command=ls-refs\n"))
		if err != nil {
			t.Fatal(err)
		}
		req = AppendDelim(req)
		if req, err = AppendPacket(req, []byte("peel\n")); err != nil {
			t.Fatal(err)
		}
		req = AppendFlush(req)
		if string(req) != "0014command=ls-refs\n00010009peel\n0000" {
			t.Fatalf("request = %q", req)
		}
		out := gitOut(t, dir, append(env, "GIT_PROTOCOL=version=2"), req, "upload-pack", "--stateless-rpc", dir)
		// Read it packet by packet with the streaming Reader, in pieces as
		// a pipe would deliver them.
		r := NewReader(chunkReader{bytes.NewReader(out), 13}, SimpleIPC, 0)
		var got []string
		for {
			k, p, err := r.ReadPacket()
			if err != nil {
				t.Fatalf("ReadPacket: %v", err)
			}
			if k == Flush {
				break
			}
			if k != Data || !strings.HasSuffix(string(p), "\n") {
				t.Fatalf("unexpected %v packet %q", k, p)
			}
			got = append(got, strings.TrimSuffix(string(p), "\n"))
		}
		if _, _, err := r.ReadPacket(); err != io.EOF {
			t.Fatalf("after the flush: %v", err)
		}
		format := "%(objectname) %(refname)%(if)%(*objectname)%(then) peeled:%(*objectname)%(end)"
		want := []string{strings.TrimSpace(string(gitOut(t, dir, env, nil, "rev-parse", "HEAD"))) + " HEAD"}
		want = append(want, strings.Split(strings.TrimSpace(string(gitOut(t, dir, env, nil, "for-each-ref", "--format="+format))), "\n")...)
		if !slices.Equal(got, want) {
			t.Fatalf("ls-refs:\n%q\nfor-each-ref:\n%q", got, want)
		}
	})
}

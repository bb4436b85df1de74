package fdpass

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

var (
	perlOnce sync.Once
	perlLib  string // PERL5LIB for IO::FDPass; "" when the system perl has it
	perlErr  error
)

func hasFDPass(lib string) bool {
	cmd := exec.Command("perl", "-MIO::FDPass", "-e1")
	cmd.Env = os.Environ()
	if lib != "" {
		cmd.Env = append(cmd.Env, "PERL5LIB="+lib)
	}
	return cmd.Run() == nil
}

// cachedPerlLib finds IO::FDPass unpacked by scripts/testdeps.sh under the
// repository's .cache, whatever the architecture and perl version.
func cachedPerlLib() string {
	matches, _ := filepath.Glob("../.cache/perl/usr/lib/*/perl5/*/IO/FDPass.pm")
	for _, m := range matches {
		dir, err := filepath.Abs(filepath.Dir(filepath.Dir(m)))
		if err == nil && hasFDPass(dir) {
			return dir
		}
	}
	return ""
}

// perlPeer returns the environment entries that make IO::FDPass loadable,
// running scripts/testdeps.sh once if needed, or skips the test.
func perlPeer(t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("perl"); err != nil {
		t.Skip("perl not installed")
	}
	perlOnce.Do(func() {
		if hasFDPass("") {
			return
		}
		if perlLib = cachedPerlLib(); perlLib != "" {
			return
		}
		out, err := exec.Command("../scripts/testdeps.sh").Output()
		if err != nil {
			perlErr = fmt.Errorf("scripts/testdeps.sh: %v", err)
			return
		}
		for _, line := range strings.Split(string(out), "\n") {
			if lib, ok := strings.CutPrefix(line, "PERL5LIB="); ok && hasFDPass(lib) {
				perlLib = lib
				return
			}
		}
		if !hasFDPass("") {
			perlErr = errors.New("scripts/testdeps.sh ran but IO::FDPass is still not loadable")
		}
	})
	if perlErr != nil {
		t.Skipf("Perl IO::FDPass (libio-fdpass-perl) unavailable: %v", perlErr)
	}
	if perlLib == "" {
		return nil
	}
	return []string{"PERL5LIB=" + perlLib}
}

func pythonPeer(t *testing.T) {
	t.Helper()
	if err := exec.Command("python3", "-c", "import socket; socket.send_fds; socket.recv_fds").Run(); err != nil {
		t.Skipf("python3 with socket.send_fds (3.9+) unavailable: %v", err)
	}
}

func peerCmd(env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	return cmd
}

// recvContents receives n one-descriptor raw messages and checks that
// reading through the i-th gives want(i).
func recvContents(t *testing.T, p *Passer, n int, want func(int) string) {
	t.Helper()
	var m Message
	for i := 0; i < n; i++ {
		if err := p.RecvInto(deadline(), &m); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if len(m.Data) != 0 {
			t.Fatalf("raw message %d carries data %q", i, m.Data)
		}
		checkContents(t, &m, want(i))
	}
}

// TestInteropPerl: IO::FDPass sends to our Raw receiver and receives from
// our Raw sender (batched with sendmmsg, wire-identical to FDpasser).
func TestInteropPerl(t *testing.T) {
	env := perlPeer(t)
	const n = 50
	t.Run("perl-to-go", func(t *testing.T) {
		leakcheck.Check(t)
		c := startChild(t, peerCmd(env, "perl", "testdata/fdpass_peer.pl", "send", strconv.Itoa(n)), WithMode(Raw))
		recvContents(t, c.p, n, func(i int) string { return "perl-" + strconv.Itoa(i) })
		if got := c.expect("sent"); got != strconv.Itoa(n) {
			t.Errorf("perl: sent %s", got)
		}
		c.wait()
	})
	t.Run("go-to-perl", func(t *testing.T) {
		leakcheck.Check(t)
		c := startChild(t, peerCmd(env, "perl", "testdata/fdpass_peer.pl", "recv", strconv.Itoa(n)), WithMode(Raw))
		var fds []int
		for i := 0; i < n; i++ {
			fds = append(fds, pipeWith(t, "go-"+strconv.Itoa(i)))
		}
		if err := c.p.SendFDs(fds, nil, nil); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			if got, want := c.line(), fmt.Sprintf("%d go-%d", i, i); got != want {
				t.Fatalf("perl read %q, want %q", got, want)
			}
		}
		c.expect("done")
		if st := c.p.Stats(); st.SendCalls >= n {
			t.Errorf("%d sendmmsg calls for %d descriptors: not batched", st.SendCalls, n)
		}
		c.wait()
	})
}

// TestInteropPython: socket.send_fds/recv_fds in raw and framed shapes,
// both directions, plus malformed raw input.
func TestInteropPython(t *testing.T) {
	pythonPeer(t)
	py := func(args ...string) *exec.Cmd {
		return peerCmd(nil, "python3", append([]string{"testdata/fdpass_peer.py"}, args...)...)
	}
	const n = 40
	t.Run("raw/python-to-go", func(t *testing.T) {
		leakcheck.Check(t)
		c := startChild(t, py("raw-send", strconv.Itoa(n)), WithMode(Raw))
		recvContents(t, c.p, n, func(i int) string { return "py-" + strconv.Itoa(i) })
		c.expect("sent")
		c.wait()
	})
	t.Run("raw/go-to-python", func(t *testing.T) {
		leakcheck.Check(t)
		c := startChild(t, py("raw-recv", strconv.Itoa(n)), WithMode(Raw))
		for i := 0; i < n; i++ {
			c.p.SendFDs([]int{pipeWith(t, "go-"+strconv.Itoa(i))}, nil, nil)
		}
		for i := 0; i < n; i++ {
			if got, want := c.line(), fmt.Sprintf("%d go-%d", i, i); got != want {
				t.Fatalf("python read %q, want %q", got, want)
			}
		}
		c.expect("done")
		c.wait()
	})
	for _, k := range []int{0, 5, 253, 300} {
		t.Run(fmt.Sprintf("framed/python-to-go/fds=%d", k), func(t *testing.T) {
			leakcheck.Check(t)
			msgs := 10
			c := startChild(t, py("framed-send", strconv.Itoa(msgs), strconv.Itoa(k)))
			for i := 0; i < msgs; i++ {
				m, err := c.p.Recv(deadline())
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if string(m.Data) != fmt.Sprintf("py-msg-%d", i) {
					t.Fatalf("message %d: data %q", i, m.Data)
				}
				var want []string
				for j := 0; j < k; j++ {
					want = append(want, fmt.Sprintf("py-%d-%d", i, j))
				}
				checkContents(t, &m, want...)
			}
			c.expect("sent")
			c.wait()
		})
	}
	t.Run("framed/go-to-python", func(t *testing.T) {
		leakcheck.Check(t)
		// Queued together, the small ones travel as bundles.
		counts := []int{0, 1, 5, 2, 3, 253, 254, 300, 1, 1, 0, 7}
		c := startChild(t, py("framed-recv", strconv.Itoa(len(counts))))
		var expect []string
		entered, release := make(chan struct{}), make(chan struct{})
		for i, k := range counts {
			var fds []int
			var want []string
			for j := 0; j < k; j++ {
				s := fmt.Sprintf("g%d.%d", i, j)
				fds = append(fds, pipeWith(t, s))
				want = append(want, s)
			}
			data := fmt.Sprintf("go-msg-%d", i)
			var done func(error)
			if i == 0 {
				// Hold the writer until everything is queued.
				done = func(error) { close(entered); <-release }
			}
			if err := c.p.SendFDs(fds, []byte(data), done); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				<-entered
			}
			contents := strings.Join(want, ",")
			if contents == "" {
				contents = "-"
			}
			expect = append(expect, fmt.Sprintf("%d %s %s", i, data, contents))
		}
		close(release)
		for _, exp := range expect {
			if got := c.line(); got != exp {
				t.Fatalf("python read %.200q, want %.200q", got, exp)
			}
		}
		c.expect("done")
		// 0 | bundle(1,5,2,3) | 253 | 254 and 300 in two chunks each |
		// bundle(1,1,0,7): eight sendmsg entries.
		if st := c.p.Stats(); st.SendEntries != 8 {
			t.Errorf("%d sendmsg entries, want 8 (bundles)", st.SendEntries)
		}
		c.wait()
	})
	for _, mode := range []string{"bad-nofd", "bad-twofds"} {
		t.Run("raw/"+mode, func(t *testing.T) {
			leakcheck.Check(t)
			c := startChild(t, py(mode), WithMode(Raw))
			_, err := c.p.Recv(deadline())
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("got %v, want a protocol error", err)
			}
			c.expect("sent")
			c.p.Shutdown(context.Background())
			c.wait()
		})
	}
}

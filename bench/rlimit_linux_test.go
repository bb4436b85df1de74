package bench

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestEnsureFilesInherited: after ensureFiles, children get the raised
// descriptor limit, not the one this process started with (which Go
// restores for children unless the program sets the limit itself). The
// test runs itself with a low soft limit; that child calls ensureFiles and
// reports the limit a grandchild sees.
func TestEnsureFilesInherited(t *testing.T) {
	if os.Getenv("BENCH_RLIMIT_CHILD") == "1" {
		if err := ensureFiles(64); err != nil {
			os.Stdout.WriteString("error: " + err.Error() + "\n")
			os.Exit(1)
		}
		out, err := exec.Command("sh", "-c", "ulimit -Sn").Output()
		if err != nil {
			os.Exit(1)
		}
		os.Stdout.WriteString("child limit " + strings.TrimSpace(string(out)) + "\n")
		os.Exit(0)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	const low = 256
	if lim.Max <= low {
		t.Skipf("hard RLIMIT_NOFILE %d: no room to start low and be raised", lim.Max)
	}
	cmd := exec.Command("sh", "-c", `ulimit -Sn `+strconv.Itoa(low)+` && exec "$0" -test.run='^TestEnsureFilesInherited$'`, os.Args[0])
	cmd.Env = append(os.Environ(), "BENCH_RLIMIT_CHILD=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	s := strings.TrimSpace(string(out))
	n, err := strconv.ParseUint(strings.TrimPrefix(s, "child limit "), 10, 64)
	if err != nil {
		t.Fatalf("child said %q", s)
	}
	if n <= low {
		t.Fatalf("a child of the raised process got a soft limit of %d, the original %d", n, low)
	}
}

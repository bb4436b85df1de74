package perf

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
	"golang.org/x/sys/unix"
)

func TestNowMonotonic(t *testing.T) {
	a := Now()
	time.Sleep(2 * time.Millisecond)
	b := Now()
	if b-a < int64(2*time.Millisecond) {
		t.Fatalf("Now advanced %d ns over a 2 ms sleep", b-a)
	}
	if a < 0 {
		t.Fatalf("Now = %d, want >= 0", a)
	}
}

func TestProcessCPUAdvances(t *testing.T) {
	before, err := ProcessCPU()
	if err != nil {
		t.Fatal(err)
	}
	burn(30 * time.Millisecond)
	after, err := ProcessCPU()
	if err != nil {
		t.Fatal(err)
	}
	if d := after.Sub(before); d.Total() <= 0 || d.User < 0 || d.System < 0 {
		t.Fatalf("cpu delta %+v over 30 ms of spinning", d)
	}
	clk, err := PidCPUClock(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if clk < after.Total()/2 {
		// Both count the whole process; rusage and the clock differ by
		// sampling, not by a factor of two.
		t.Fatalf("cpu clock %v, rusage %v", clk, after.Total())
	}
}

// startBurner runs a child that spends CPU and then waits for stdin to close.
func startBurner(t *testing.T) (*exec.Cmd, func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=burn")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "burnt\n" {
		stdin.Close()
		cmd.Wait()
		t.Fatalf("helper said %q, %v", line, err)
	}
	return cmd, func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper: %v", err)
		}
	}
}

func TestChildCPU(t *testing.T) {
	leakcheck.Check(t)
	childrenBefore, err := ChildrenCPU()
	if err != nil {
		t.Fatal(err)
	}
	cmd, stop := startBurner(t)
	pid := cmd.Process.Pid
	clk, err := PidCPUClock(pid)
	if err != nil {
		t.Fatal(err)
	}
	if clk < 10*time.Millisecond {
		t.Errorf("child's cpu clock %v after 50 ms of spinning", clk)
	}
	st, err := PidCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	if st.Total() < 0 || st.Total() > clk+time.Second/userHZ*time.Duration(runtime.NumCPU()+1) {
		t.Errorf("/proc stat cpu %v, clock %v", st.Total(), clk)
	}
	stop()
	childrenAfter, err := ChildrenCPU()
	if err != nil {
		t.Fatal(err)
	}
	if d := childrenAfter.Sub(childrenBefore).Total(); d < clk/2 {
		t.Errorf("children cpu grew by %v, the child's clock said %v", d, clk)
	}
	if _, err := PidCPUClock(pid); err == nil {
		t.Errorf("cpu clock of a reaped pid %d succeeded", pid)
	}
	if _, err := PidCPU(pid); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("PidCPU of a reaped pid: %v, want ErrNotExist", err)
	}
}

func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses, as a process may choose.
	line := "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 99 0 0\n"
	got, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := CPUTime{User: 2500 * time.Millisecond, System: 750 * time.Millisecond}
	if got != want {
		t.Fatalf("parseStat = %+v, want %+v", got, want)
	}
	for _, bad := range []string{
		"",
		"1234 no parens S 1 2 3",
		"1234 (x) S 1 1234",
		"1234 (x) S 1 1234 1234 0 -1 4194560 100 0 0 0 -5 75 0",
		"1234 (x) S 1 1234 1234 0 -1 4194560 100 0 0 0 2x 75 0",
	} {
		if _, err := parseStat([]byte(bad)); !errors.Is(err, ErrBadStat) {
			t.Errorf("parseStat(%q) = %v, want ErrBadStat", bad, err)
		}
	}
}

func TestRusageError(t *testing.T) {
	saved := getrusage
	t.Cleanup(func() { getrusage = saved })
	getrusage = func(int) (unix.Rusage, error) { return unix.Rusage{}, unix.EFAULT }
	if _, err := ProcessCPU(); !errors.Is(err, unix.EFAULT) {
		t.Fatalf("ProcessCPU with failing getrusage: %v", err)
	}
}

// withPerfOpen replaces the perf_event_open seam for one test.
func withPerfOpen(t *testing.T, f func(attr *unix.PerfEventAttr, pid, cpu, group, flags int) (int, error)) {
	saved := perfEventOpen
	t.Cleanup(func() { perfEventOpen = saved })
	perfEventOpen = f
}

func TestCountersAllRefused(t *testing.T) {
	leakcheck.Check(t)
	for _, errno := range []unix.Errno{unix.EACCES, unix.ENOENT, unix.EOPNOTSUPP, unix.ENODEV, unix.EPERM} {
		withPerfOpen(t, func(*unix.PerfEventAttr, int, int, int, int) (int, error) { return -1, errno })
		c, err := OpenCounters(0)
		if c != nil || !errors.Is(err, ErrUnavailable) || !errors.Is(err, errno) {
			t.Fatalf("%v: OpenCounters = %v, %v; want nil and ErrUnavailable", errno, c, err)
		}
		var ue *UnavailableError
		if !errors.As(err, &ue) {
			t.Fatalf("%v: error %v is not an *UnavailableError", errno, err)
		}
	}
}

func TestCountersPartlyRefused(t *testing.T) {
	leakcheck.Check(t)
	// The hardware events are refused, as in a VM without a PMU; the software
	// event gets a real descriptor (an eventfd is enough to be closed).
	var opened []int
	withPerfOpen(t, func(attr *unix.PerfEventAttr, _, _, _, _ int) (int, error) {
		if attr.Type == unix.PERF_TYPE_HARDWARE {
			return -1, unix.ENOENT
		}
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		opened = append(opened, fd)
		return fd, err
	})
	c, err := OpenCounters(0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(opened) == 0 {
		t.Fatal("no software counter opened")
	}
	for _, e := range []Event{Cycles, Instructions} {
		if err := c.Err(e); !errors.Is(err, ErrUnavailable) || !errors.Is(err, unix.ENOENT) {
			t.Errorf("Err(%s) = %v, want ErrUnavailable wrapping ENOENT", e, err)
		}
	}
	if err := c.Err(ContextSwitches); err != nil {
		t.Errorf("Err(context-switches) = %v", err)
	}
}

func TestCountersHardError(t *testing.T) {
	leakcheck.Check(t)
	withPerfOpen(t, func(*unix.PerfEventAttr, int, int, int, int) (int, error) { return -1, unix.EMFILE })
	c, err := OpenCounters(0, ContextSwitches)
	if c != nil || err == nil || errors.Is(err, ErrUnavailable) || !errors.Is(err, unix.EMFILE) {
		t.Fatalf("OpenCounters with EMFILE = %v, %v; want a plain EMFILE error", c, err)
	}
	if _, err := OpenCounters(0, Event(42)); err == nil {
		t.Fatal("OpenCounters accepted an unknown event")
	}
}

// With perf_event_paranoid 2 the counters fall back to user mode, and
// context switches, which happen in kernel mode and would count none
// there, are reported unavailable rather than counted as zero.
func TestCountersUserOnlyFallback(t *testing.T) {
	leakcheck.Check(t)
	var opened []int
	withPerfOpen(t, func(attr *unix.PerfEventAttr, _, _, _, _ int) (int, error) {
		if attr.Bits&unix.PerfBitExcludeKernel == 0 {
			return -1, unix.EACCES // as perf_event_paranoid 2 answers
		}
		// A user-mode counter: an eventfd is enough to be closed.
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		opened = append(opened, fd)
		return fd, err
	})
	c, err := OpenCounters(0, AllEvents...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.UserOnly() {
		t.Fatal("counters opened after EACCES do not say UserOnly")
	}
	if len(opened) == 0 {
		t.Fatal("no user-mode counter opened")
	}
	if err := c.Err(ContextSwitches); !errors.Is(err, ErrUnavailable) || !errors.Is(err, unix.EACCES) {
		t.Fatalf("Err(context-switches) in user mode = %v, want ErrUnavailable wrapping EACCES", err)
	}
	for _, e := range []Event{Cycles, Instructions} {
		if err := c.Err(e); err != nil {
			t.Errorf("Err(%s) = %v", e, err)
		}
	}
}

func TestCountersCountContextSwitches(t *testing.T) {
	leakcheck.Check(t)
	c, err := OpenCounters(0, AllEvents...)
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("the kernel refuses every counter here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Err(ContextSwitches); err != nil {
		t.Skipf("context switches not countable here: %v", err)
	}
	start, err := c.Read()
	if err != nil {
		t.Fatal(err)
	}
	// Each sleep blocks a thread: at least one voluntary switch apiece.
	for range 5 {
		time.Sleep(time.Millisecond)
	}
	end, err := c.Read()
	if err != nil {
		t.Fatal(err)
	}
	n, ok := end.Sub(start).Value(ContextSwitches)
	if !ok || n == 0 {
		t.Fatalf("context switches over 5 sleeps: %d (counted %v)", n, ok)
	}
	for _, e := range []Event{Cycles, Instructions} {
		if v, ok := end.Value(e); ok {
			t.Logf("%s: %d", e, v)
		} else if err := c.Err(e); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s neither counted nor unavailable: %v", e, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestScale(t *testing.T) {
	for _, tc := range []struct{ v, en, run, want uint64 }{
		{100, 10, 10, 100},
		{100, 20, 10, 200},
		{100, 10, 0, 100},
	} {
		if got := scale(tc.v, tc.en, tc.run); got != tc.want {
			t.Errorf("scale(%d, %d, %d) = %d, want %d", tc.v, tc.en, tc.run, got, tc.want)
		}
	}
}

func TestAffinity(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := Affinity()
	if err != nil {
		t.Fatal(err)
	}
	if len(orig) == 0 {
		t.Fatal("the calling thread may run on no CPU")
	}
	defer func() {
		if err := SetAffinity(orig...); err != nil {
			t.Errorf("restore affinity: %v", err)
		}
	}()
	last := orig[len(orig)-1]
	if err := SetAffinity(last); err != nil {
		t.Fatal(err)
	}
	got, err := Affinity()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []int{last}) {
		t.Fatalf("Affinity after SetAffinity(%d) = %v", last, got)
	}
	if err := SetAffinity(); !errors.Is(err, ErrNoCPUs) {
		t.Errorf("SetAffinity() = %v, want ErrNoCPUs", err)
	}
	if err := SetAffinity(-1); err == nil {
		t.Error("SetAffinity(-1) succeeded")
	}
}

func TestAffinityKernelError(t *testing.T) {
	saved := schedSetaffinity
	t.Cleanup(func() { schedSetaffinity = saved })
	schedSetaffinity = func(int, *unix.CPUSet) error { return unix.EINVAL }
	if err := SetAffinity(0); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("SetAffinity with EINVAL from the kernel: %v", err)
	}
}

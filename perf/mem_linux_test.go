package perf

import (
	"os"
	"testing"
)

func TestParseStatus(t *testing.T) {
	in := "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nThreads:\t7\n"
	m, err := parseStatus([]byte(in))
	if err != nil || m.RSS != 1024<<10 || m.PeakRSS != 2048<<10 || m.Threads != 7 {
		t.Fatalf("%+v, %v", m, err)
	}
	if _, err := parseStatus([]byte("VmRSS:\t1 kB\n")); err == nil {
		t.Fatal("a status without VmHWM and Threads parsed")
	}
	if _, err := parseStatus([]byte("VmRSS:\tx kB\nVmHWM: 1 kB\nThreads: 1\n")); err == nil {
		t.Fatal("a bad number parsed")
	}
}

func TestPidMemorySelf(t *testing.T) {
	m, err := PidMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.PeakRSS < m.RSS || m.Threads < 1 || m.FDs < 3 {
		t.Fatalf("%+v", m)
	}
	if _, err := PidMemory(1 << 30); err == nil {
		t.Fatal("a missing pid gave no error")
	}
}

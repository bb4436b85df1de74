package bench

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"strings"
)

// Machine describes where a benchmark ran.
type Machine struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	Kernel    string `json:"kernel"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	GoVersion string `json:"go_version"`
}

// DescribeMachine reads the CPU model from /proc/cpuinfo and the kernel
// release from /proc/sys/kernel/osrelease where they exist ("unknown"
// elsewhere). Safe for concurrent use.
func DescribeMachine() Machine {
	m := Machine{
		CPU: "unknown", Cores: runtime.NumCPU(), Kernel: "unknown",
		OS: runtime.GOOS, Arch: runtime.GOARCH, GoVersion: runtime.Version(),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if cpu := cpuModel(b); cpu != "" {
			m.CPU = cpu
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		if k := string(bytes.TrimSpace(b)); k != "" {
			m.Kernel = k
		}
	}
	return m
}

// cpuModel returns the first "model name" (x86) or "Model"/"CPU part"
// (arm) value of a /proc/cpuinfo text.
func cpuModel(b []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	var fallback string
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch key {
		case "model name":
			return val
		case "Model", "Hardware":
			if fallback == "" {
				fallback = val
			}
		}
	}
	return fallback
}

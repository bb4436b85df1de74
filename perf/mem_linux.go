package perf

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// PidMemory returns the resident and peak resident memory of a running
// process and how many descriptors it has open, from /proc/<pid>/status and
// /proc/<pid>/fd. Reading another user's descriptors needs privileges; the
// count is then -1. Safe for concurrent use.
func PidMemory(pid int) (Memory, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	b, err := readFile(dir + "/status")
	if err != nil {
		return Memory{}, fmt.Errorf("perf: memory of pid %d: %w", pid, err)
	}
	m, err := parseStatus(b)
	if err != nil {
		return Memory{}, fmt.Errorf("perf: memory of pid %d: %w", pid, err)
	}
	m.FDs = -1
	if names, err := readDirNames(dir + "/fd"); err == nil {
		m.FDs = len(names)
	}
	return m, nil
}

var readDirNames = func(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// parseStatus reads VmRSS, VmHWM and Threads (kB and a count) of a
// /proc/<pid>/status text.
func parseStatus(b []byte) (Memory, error) {
	var m Memory
	found := 0
	for line := range bytes.Lines(b) {
		key, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var dst *int64
		switch string(key) {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.PeakRSS
		case "Threads":
			dst = &m.Threads
		default:
			continue
		}
		f := bytes.Fields(val)
		if len(f) == 0 {
			return Memory{}, fmt.Errorf("empty %s", key)
		}
		n, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("%s: %w", key, err)
		}
		if len(f) > 1 && string(f[1]) == "kB" {
			n <<= 10
		}
		*dst = n
		found++
	}
	if found < 3 {
		return Memory{}, fmt.Errorf("VmRSS, VmHWM or Threads missing")
	}
	return m, nil
}

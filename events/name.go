package events

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// maxNameLen bounds a service name, a filename component.
const maxNameLen = 255

// ValidName reports whether name can name a service: one path component,
// not empty, not "." or "..", without '/' or NUL, at most 255 bytes.
// LibIPC joins names to its run directory without checks, so a '/'
// there makes a sub-path; pktipc refuses it. Safe for concurrent use.
func ValidName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
	case len(name) > maxNameLen:
	case strings.ContainsAny(name, "/\x00"):
	default:
		return nil
	}
	return fmt.Errorf("%w: %q", ErrBadName, name)
}

// RunDir returns the directory the layout puts services in, from the
// environment as LibIPC reads it: $XDG_RUNTIME_DIR/pktipc for Native
// (os.TempDir()/pktipc-<uid> without it), $RUNDIR or /tmp/.libipc-run for
// LibIPCLayout, $IPC_RUNDIR or /run/ipc for LibIPCCLayout. Safe for
// concurrent use.
func RunDir(l Layout) string {
	switch l {
	case LibIPCLayout:
		if d := os.Getenv("RUNDIR"); d != "" {
			return d
		}
		return "/tmp/.libipc-run"
	case LibIPCCLayout:
		if d := os.Getenv("IPC_RUNDIR"); d != "" {
			return d
		}
		return "/run/ipc"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "pktipc")
	}
	return filepath.Join(os.TempDir(), "pktipc-"+strconv.Itoa(os.Geteuid()))
}

// ServicePath returns the socket path of service name in dir, or the
// error ValidName gives. Safe for concurrent use.
func ServicePath(dir, name string) (string, error) {
	if err := ValidName(name); err != nil {
		return "", err
	}
	return filepath.Join(dir, name), nil
}

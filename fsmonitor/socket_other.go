//go:build !linux

package fsmonitor

// fsKind cannot tell filesystems apart here; the socket goes in the git
// directory.
func fsKind(string) (int, error) { return fsLocal, nil }

// checkSocketDir has nothing to check where the monitor cannot run.
func checkSocketDir(string) error { return nil }

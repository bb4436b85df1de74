package fsmonitor

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// SocketName is the daemon's socket in the git directory.
const SocketName = "fsmonitor--daemon.ipc"

// SocketPath returns where git looks for the daemon of worktree: gitDir's
// fsmonitor--daemon.ipc, or, when gitDir lies on a remote filesystem (NFS,
// SMB, AFS, Coda, FUSE) where a socket cannot live,
// "<socketDir>/.git-fsmonitor-<sha1 of worktree>", socketDir being git's
// fsmonitor.socketDir setting, or the home directory if empty. A socket
// directory on a remote, FAT or NTFS filesystem is refused, as git does.
func SocketPath(gitDir, worktree, socketDir string) (string, error) {
	gitDir, err := filepath.Abs(gitDir)
	if err != nil {
		return "", err
	}
	kind, err := fsKind(gitDir)
	if err != nil {
		return "", err
	}
	if kind != fsRemote {
		return filepath.Join(gitDir, SocketName), nil
	}
	if socketDir == "" {
		if socketDir, err = os.UserHomeDir(); err != nil {
			return "", err
		}
	}
	if kind, err = fsKind(socketDir); err != nil {
		return "", err
	} else if kind != fsLocal {
		return "", fmt.Errorf("fsmonitor: socket directory %s: %w", socketDir, errBadSocketFS)
	}
	wt, err := filepath.Abs(worktree)
	if err != nil {
		return "", err
	}
	sum := sha1.Sum([]byte(wt))
	return filepath.Join(socketDir, ".git-fsmonitor-"+hex.EncodeToString(sum[:])), nil
}

var errBadSocketFS = errors.New("a remote, FAT or NTFS filesystem cannot hold the socket")

// Kinds of filesystem for the socket's location.
const (
	fsLocal     = iota
	fsRemote    // NFS, SMB/CIFS, AFS, Coda, FUSE
	fsNoSockets // FAT, NTFS
)

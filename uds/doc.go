// Package uds owns the Unix-socket side of pktipc: creating a listening
// socket at a path safely, telling whether a server is alive there, and
// dialling it the way git's simple-ipc client does.
//
// # Compatibility with git
//
// State is git's ipc_get_active_state and Dial is git's
// ipc_client_try_connect, with the same five ActiveState values in the same
// order and the same meanings (a missing path is NotListening for State but
// PathNotFound for Dial; a regular file is InvalidPath for State; Dial
// retries every 50 ms, at most 20 times, only when asked). A git client sees
// a socket made by Listen exactly as one made by git's server.
//
// # Where Listen is stricter than git
//
//   - It never unlinks a path that is not a socket (git silently deletes a
//     regular file there), and replaces a socket only after a connect probe
//     says nobody is listening. The socket is set up under a start-up name
//     and renamed into place, so the path appears only once it listens.
//   - Start-up is serialised with flock on path+LockSuffix, held for the
//     listener's life: of any number of concurrent starters exactly one
//     wins, and a crash leaves no lock that blocks the next start (git's
//     O_EXCL "<path>.lock" does, and we never create or touch that file).
//   - The socket has its final mode (default 0600) from the moment it
//     exists, and its directory must belong to us and be closed to others
//     (0700 by default; created with that mode if missing). /tmp itself is
//     refused: use a private subdirectory or $XDG_RUNTIME_DIR.
//   - Theft is noticed at once, through events: inotify reports the name
//     unlinked, renamed or replaced, a symbolic link on the path replaced,
//     or a directory on it moved or deleted, and the mount table's poll a
//     mount over it. It is reported on Listener.Stolen, and Close unlinks
//     only a socket that is still ours. Where events cover the path (local
//     filesystems) an idle listener sleeps, with a sweep each minute for
//     what no event reports; elsewhere a timer checks each second (git:
//     after 60 s idle).
//   - Peers are checked with SO_PEERCRED before any byte is read: same user
//     or root by default; failure to read credentials denies.
//   - Paths longer than sun_path (107 bytes) work without chdir: bind goes
//     through /proc/self/fd/<directory handle>/<name> and connect through
//     /proc/self/fd/<O_PATH handle of the socket>.
//
// # Socket activation
//
// A server a service manager starts with its sockets already made (systemd's
// socket activation) takes them over with Inherited: listening sockets become
// Listeners that leave their path to the manager, connected ones UnixConns,
// anything else passed is closed; the environment variables that said so are
// unset. engine.NewServerListener serves such a Listener.
//
// # Process-wide state
//
// The umask is per process. Listen narrows it for the microseconds of a
// mkdir or bind, under a package mutex; it only ever adds bits, so a file
// another goroutine creates at that moment comes out tighter than intended,
// never looser. Nothing in this package calls chdir.
//
// Linux only; on other systems every entry point returns
// errors.ErrUnsupported.
package uds

package uds

import (
	"context"
	"net"
)

// State reports what a client would find at path, as git's
// ipc_get_active_state does: lstat first (missing means NotListening, not a
// socket means InvalidPath), then one non-blocking connect, closed at once.
// Paths longer than MaxPathLen are connected through an O_PATH handle,
// never with chdir. path is always a filesystem path, as for git ("@x" is a
// file named "@x"). A live server whose backlog is full counts as Listening
// (git's blocking connect would wait for it). On systems other than Linux
// it reports OtherError. Safe for concurrent use.
func State(path string) ActiveState { return state(path) }

// Dial connects to the server at path the way git's ipc_client_try_connect
// does: ENOENT is PathNotFound unless WaitIfNotFound, ECONNREFUSED and
// ETIMEDOUT (and EAGAIN from a full backlog) are NotListening unless
// WaitIfBusy; waiting retries every 50 ms, at most 20 attempts, then gives
// NotListening (git's answer too, even when the last error was ENOENT); any
// other error is OtherError at once. ctx bounds the whole call. Every
// failure is a *DialError. Paths longer than sun_path are reached through
// an O_PATH handle, never with chdir. The connection is close-on-exec. On
// systems other than Linux it fails with a *DialError wrapping
// errors.ErrUnsupported. Safe for concurrent use.
func Dial(ctx context.Context, path string, opts ...DialOption) (*net.UnixConn, error) {
	return dial(ctx, path, opts)
}

// DialFD is Dial without the net.UnixConn: it returns the connection's
// descriptor, non-blocking and close-on-exec, which the caller owns and
// must close. A client that sends one request and reads one reply with
// plain system calls, as git's does, saves what a net.UnixConn costs (an
// epoll registration and its removal, a getsockname). The retries, errors
// and policy are Dial's. Safe for concurrent use.
func DialFD(ctx context.Context, path string, opts ...DialOption) (int, error) {
	return dialFD(ctx, path, opts)
}

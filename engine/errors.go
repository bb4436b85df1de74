package engine

import (
	"errors"
	"fmt"
)

var (
	// ErrServerClosed is returned by Serve after Shutdown or Close, and after
	// a handler asked the server to quit.
	ErrServerClosed = errors.New("engine: server closed")

	// ErrQuit is returned by a handler to ask the server to shut down after
	// the reply, like git's SIMPLE_IPC_QUIT. The quitting client still gets
	// its reply and terminator.
	ErrQuit = errors.New("engine: quit requested")

	// ErrSocketStolen is returned by Serve when the socket path was removed
	// or now names another socket: nobody can reach this server any more.
	ErrSocketStolen = errors.New("engine: socket path stolen or removed")

	// ErrBackpressure is returned by ReplyWriter.Write on the event loop when
	// the connection's outbound buffer is above its high-water mark: the peer
	// is not reading. The reply is abandoned and the connection closed. On
	// a shared-memory ring's watch (WithInlineHandlers) Write and Reserve
	// return it when the reply the ring has no room for would pass the mark
	// or the memory budget.
	ErrBackpressure = errors.New("engine: peer not reading (outbound above high-water mark)")

	// ErrIncompleteReply is returned by clients for a request that was sent
	// when no whole reply came for it: the connection ended, the reply was
	// malformed, or the deadline passed before the reply's terminator. The
	// server may have processed the request. Nothing of a partial reply is
	// returned. The error wraps the cause: ErrPeerClosed, ErrPeerReset,
	// os.ErrDeadlineExceeded or a frame error.
	ErrIncompleteReply = errors.New("engine: incomplete reply")

	// ErrNotProcessed is returned by clients for a request that never
	// reached the server whole (the dial or the write failed): the server
	// acts only on whole requests, so it cannot have processed it, and
	// sending it again is safe. The error wraps the cause.
	ErrNotProcessed = errors.New("engine: request not processed")

	// ErrPeerClosed says the server closed the connection (end of file).
	ErrPeerClosed = errors.New("engine: connection closed by peer")

	// ErrPeerReset says the connection was reset (ECONNRESET, EPIPE): the
	// server closed it with bytes of ours unread, or went away while we
	// wrote. It wraps the system call's error.
	ErrPeerReset = errors.New("engine: connection reset by peer")

	// ErrClientClosed is returned by Client methods after Close.
	ErrClientClosed = errors.New("engine: client closed")

	// ErrNoRequest is returned by Client.Recv when every request sent was
	// answered already.
	ErrNoRequest = errors.New("engine: Recv without a request")
)

// OptionError reports an invalid option value.
type OptionError struct {
	Option string
	Value  any
	Reason string
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("engine: option %s=%v: %s", e.Option, e.Value, e.Reason)
}

// ClientError is the error of a client call: which step failed (Op is
// "dial", "send" or "read") for which socket path. Err says why: for a
// request, it wraps ErrNotProcessed (dial or send) or ErrIncompleteReply
// (read), then the uds, frame, context or system error underneath. git's
// client reports the steps apart ("could not send IPC command", "could not
// read IPC response").
type ClientError struct {
	Op   string
	Path string
	Err  error
}

func (e *ClientError) Error() string {
	return "engine: " + e.Op + " " + e.Path + ": " + e.Err.Error()
}

func (e *ClientError) Unwrap() error { return e.Err }

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
	// is not reading. The reply is abandoned and the connection closed.
	ErrBackpressure = errors.New("engine: peer not reading (outbound above high-water mark)")

	// ErrIncompleteReply is returned by clients when the connection ended
	// before the reply's terminator. Nothing of the partial reply is
	// returned. It wraps io.ErrUnexpectedEOF.
	ErrIncompleteReply = errors.New("engine: incomplete reply")

	// ErrClientClosed is returned by Client methods after Close.
	ErrClientClosed = errors.New("engine: client closed")

	// ErrNotPersistent is returned by Client.Send when a second request is
	// pipelined to a server that serves one request per connection (git's
	// simple-ipc server). Wait for the reply before sending the next request.
	ErrNotPersistent = errors.New("engine: server does not keep connections; request not pipelined")
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
// "dial", "send" or "read") for which socket path. Err says why; it wraps
// ErrIncompleteReply when a reply was cut short, and the uds, frame or
// context error underneath otherwise. git's client reports the steps apart
// ("could not send IPC command", "could not read IPC response").
type ClientError struct {
	Op   string
	Path string
	Err  error
}

func (e *ClientError) Error() string {
	return "engine: " + e.Op + " " + e.Path + ": " + e.Err.Error()
}

func (e *ClientError) Unwrap() error { return e.Err }

package engine

import (
	"context"

	"github.com/pktipc/pktipc/uds"
)

// A Handler answers requests.
//
// ServeIPC gets the request payload and a ReplyWriter. Each call to
// w.Write sends its bytes as one or more pkt-line packets, exactly like a
// call of git's reply_cb; the terminator is added when ServeIPC returns.
// Returning ErrQuit asks the server to shut down after this reply, like
// git's SIMPLE_IPC_QUIT. Any other error is logged; the reply still ends
// with its terminator, as in git. A panic is recovered and logged, and the
// connection is closed without a terminator so the client sees an
// incomplete reply.
//
// req aliases the server's buffers and is valid only until ServeIPC
// returns; copy it to keep it. ctx is cancelled when the peer goes away or
// the handler outlives its timeout; it carries the peer's credentials
// (PeerFromContext). ServeIPC runs on a worker goroutine, or on the event
// loop with WithInlineHandlers, where it must not block.
type Handler interface {
	ServeIPC(ctx context.Context, req []byte, w *ReplyWriter) error
}

// HandlerFunc adapts a function to the Handler interface.
type HandlerFunc func(ctx context.Context, req []byte, w *ReplyWriter) error

// ServeIPC calls f(ctx, req, w).
func (f HandlerFunc) ServeIPC(ctx context.Context, req []byte, w *ReplyWriter) error {
	return f(ctx, req, w)
}

type peerKey struct{}

// peerCtx is a connection's handler context: its cancelable context, which
// answers the peer key itself. It lies in the connection's state, so that
// giving handlers their peer allocates nothing (context.WithValue would,
// once per connection, and a git-style client makes a connection per
// request).
type peerCtx struct {
	context.Context
	peer *Peer
}

// Value returns the peer for the peer key and asks the parent otherwise.
func (c *peerCtx) Value(key any) any {
	if _, ok := key.(peerKey); ok {
		return c.peer
	}
	return c.Context.Value(key)
}

// Peer describes the client of a connection, as the kernel reported it when
// the client connected (SO_PEERCRED). A client that changes its uid later
// keeps this identity.
type Peer struct {
	// ID numbers connections in accept order; it is never reused while the
	// server lives.
	ID   uint64
	Cred uds.Cred
}

// PeerFromContext returns the peer of the connection a handler's context
// belongs to.
func PeerFromContext(ctx context.Context) (Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(*Peer)
	if !ok {
		return Peer{}, false
	}
	return *p, true
}

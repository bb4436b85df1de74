package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	"github.com/pktipc/pktipc/frame"
)

// unixPeer is the "unix" peer: what a Go programmer writes first.
// net.UnixConn, one goroutine per connection, the same pkt-line messages as
// simple-ipc through frame's blocking Reader and Writer. It is the baseline
// every table divides by.
type unixPeer struct{}

func (unixPeer) Prepare(context.Context, *Env) error { return nil }

func (unixPeer) Server(env *Env, run Run) (*ServerCmd, error) {
	return unixRole.command(env, run, noSettings{})
}

func (unixPeer) Client(ctx context.Context, env *Env, run Run, m *Meter) (Load, error) {
	if run.Scenario == FDPass {
		return GoClient{OpenStream: openUnixFDStream, Request: noPayload}.Run(ctx, run, m)
	}
	return GoClient{Dial: dialUnix, OpenStream: openUnixStream}.Run(ctx, run, m)
}

// unixConn is a client connection speaking pkt-line messages.
type unixConn struct {
	c *net.UnixConn
	r *frame.Reader
	w *frame.Writer
}

func dialUnix(ctx context.Context, socket string) (RoundTripper, error) {
	return dialUnixConn(ctx, socket)
}

func dialUnixConn(ctx context.Context, socket string) (*unixConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	uc := c.(*net.UnixConn)
	return &unixConn{c: uc, r: frame.NewReader(uc, frame.Persistent, 0), w: frame.NewWriter(uc)}, nil
}

// RoundTrip writes req as one message and reads the reply message. Call it
// from the client's goroutine.
func (u *unixConn) RoundTrip(_ context.Context, req []byte) (int, error) {
	if err := u.w.WriteMessage(req); err != nil {
		return 0, err
	}
	msg, err := u.r.ReadMessage()
	return len(msg), err
}

// Close closes the socket. Any goroutine may call it, more than once, also
// during RoundTrip.
func (u *unixConn) Close() error { return u.c.Close() }

func openUnixStream(ctx context.Context, socket string, _ int) (Streamer, error) {
	u, err := dialUnixConn(ctx, socket)
	if err != nil {
		return nil, err
	}
	return unixStream{u}, nil
}

type unixStream struct{ *unixConn }

// Send writes msg as one message. Call it from the stream's goroutine.
func (s unixStream) Send(msg []byte) error { return s.w.WriteMessage(msg) }

// Finish sends an empty message, which the server answers with an empty
// message once it has read everything before it. Call it from the stream's
// goroutine.
func (s unixStream) Finish(context.Context) error {
	if err := s.w.WriteMessage(nil); err != nil {
		return err
	}
	msg, err := s.r.ReadMessage()
	if err == nil && len(msg) != 0 {
		err = fmt.Errorf("bench: stream ack of %d bytes, want 0", len(msg))
	}
	return err
}

// listenUnix listens on socket and says clearly when the path is taken.
func listenUnix(socket string) (*net.UnixListener, error) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("socket path %s is already in use: %w", socket, err)
	}
	return l, err
}

// serveConns accepts connections on l and runs handle for each in its own
// goroutine until ctx ends; then it closes the listener and every
// connection and waits for the handlers.
func serveConns(ctx context.Context, l net.Listener, handle func(net.Conn)) error {
	var (
		mu    sync.Mutex
		conns = make(map[net.Conn]struct{})
		wg    sync.WaitGroup
	)
	closeAll := func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}
	// The watcher closes everything when ctx ends, which unblocks Accept
	// and the handlers' reads; it is joined before returning.
	done := make(chan struct{})
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case <-ctx.Done():
		case <-done:
		}
		closeAll()
	}()
	var err error
	for {
		c, aerr := l.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				err = aerr
			}
			break
		}
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			c.Close()
			continue
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			handle(c)
		})
	}
	close(done)
	<-watcherDone
	wg.Wait()
	return err
}

// serveUnix is the "unix" server role: echo each message, or in the stream
// scenario read messages and answer only the empty one.
func serveUnix(ctx context.Context, cfg serverConfig, _ noSettings, ready func()) error {
	l, err := listenUnix(cfg.Socket)
	if err != nil {
		return err
	}
	ready()
	if cfg.Scenario == FDPass {
		return serveConns(ctx, l, serveUnixFDs)
	}
	sink := cfg.Scenario == Stream
	return serveConns(ctx, l, func(c net.Conn) {
		r := frame.NewReader(c, frame.Persistent, 0)
		w := frame.NewWriter(c)
		for {
			msg, err := r.ReadMessage()
			if err != nil {
				// EOF, or a client that broke off mid-message: either
				// way the connection is done.
				return
			}
			if sink && len(msg) > 0 {
				continue
			}
			if w.WriteMessage(msg) != nil {
				return
			}
		}
	})
}

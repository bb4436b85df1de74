package bench

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"time"

	"github.com/pktipc/pktipc/events"
	"github.com/pktipc/pktipc/uds"
)

// The pktipc-events peer: LibIPC's programming model (package events) on
// both sides, speaking pkt-line.
//
//   - Server: one events.Loop, as a LibIPC service has one context: a
//     single goroutine asks WaitEvent for the next event and answers each
//     MessageRx with Write on the same goroutine, for every connection.
//   - Client: one Loop per client connection, as each LibIPC client
//     process has its own context: Write, then WaitEvent until the reply.
//
// The run's socket path is split into the Loop's run directory (the
// runner's private 0700 directory, which uds accepts) and the service name.

// eventsService returns the run directory and the service name of a run's
// socket path.
func eventsService(socket string) (dir, name string) {
	return filepath.Dir(socket), filepath.Base(socket)
}

// serveEvents is the pktipc-events server role: echo every message, or in
// the stream scenario read messages and answer only the empty one.
func serveEvents(ctx context.Context, cfg serverConfig, _ noSettings, ready func()) error {
	dir, name := eventsService(cfg.Socket)
	// The cap on connections stays above the largest client count a run
	// may have, so that no client waits in the backlog.
	loop, err := events.New(events.WithRunDir(dir), events.WithMaxConns(max(events.DefaultMaxConns, cfg.Conns)))
	if err != nil {
		return err
	}
	// ctx's end closes the Loop (stopping the service and removing its
	// socket), which ends WaitEvent with events.ErrClosed, so the serving
	// loop needs no context of its own.
	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		loop.Close()
		close(closed)
	})
	defer func() {
		if stop() {
			loop.Close()
		} else {
			<-closed
		}
	}()
	if _, err := loop.Listen(name, events.PktLine); err != nil {
		return err
	}
	ready()
	sink := cfg.Scenario == Stream
	for {
		ev, err := loop.WaitEvent(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		switch ev.Kind {
		case events.MessageRx:
			if sink && len(ev.Data) > 0 {
				continue
			}
			// A failed write concerns that client alone (it closed
			// at the end of the run, or broke off): its Disconnection
			// follows, and the client reports its own failure.
			_ = loop.Write(ev.Conn, ev.Data)
		case events.Error:
			// An accept failure: a benchmark server that cannot take
			// its clients has failed the run.
			return ev.Err
		}
	}
}

// eventsPeer is the "pktipc-events" peer.
type eventsPeer struct{}

func (eventsPeer) Prepare(context.Context, *Env) error {
	// Package events needs epoll.
	if runtime.GOOS != "linux" {
		return &UnavailableError{Peer: "pktipc-events", Reason: "package events runs on Linux only"}
	}
	return nil
}

func (eventsPeer) Server(env *Env, run Run) (*ServerCmd, error) {
	return eventsRole.command(env, run, noSettings{})
}

func (eventsPeer) Client(ctx context.Context, env *Env, run Run, m *Meter) (Load, error) {
	return GoClient{Dial: dialEvents, OpenStream: openEventsStream}.Run(ctx, run, m)
}

// eventsConn is one client: its own Loop and the one connection in it.
// RoundTrip, Send and Finish come from one goroutine; Close may come from
// another, and ends a call in progress (WaitEvent returns events.ErrClosed,
// a blocked Write fails).
type eventsConn struct {
	loop *events.Loop
	id   events.ConnID
}

func newEventsConn(ctx context.Context, socket string) (*eventsConn, error) {
	dir, name := eventsService(socket)
	// The client spins as the engine's does by default. A client of a
	// thousand that finds the server's backlog full (they all dial at
	// once, and one loop accepts them) waits, as git's clients may, rather
	// than failing the run.
	loop, err := events.New(events.WithRunDir(dir), events.WithSpin(50*time.Microsecond),
		events.WithDialOptions(uds.WaitIfBusy()))
	if err != nil {
		return nil, err
	}
	id, err := loop.Connect(ctx, name, events.PktLine)
	if err != nil {
		loop.Close()
		return nil, err
	}
	return &eventsConn{loop: loop, id: id}, nil
}

func dialEvents(ctx context.Context, socket string) (RoundTripper, error) {
	return newEventsConn(ctx, socket)
}

// RoundTrip writes req and waits for the reply. Call it from the client's
// goroutine. ctx is not watched: the driver aborts a call by closing the
// connection (WaitEvent then returns events.ErrClosed), and a context per
// call would cost the Loop a registration (an allocation) per call.
func (c *eventsConn) RoundTrip(_ context.Context, req []byte) (int, error) {
	if err := c.loop.Write(c.id, req); err != nil {
		return 0, err
	}
	reply, err := c.reply()
	return len(reply), err
}

// reply waits for the next message on the connection and returns it; it
// aliases the Loop's buffer until the next WaitEvent.
func (c *eventsConn) reply() ([]byte, error) {
	for {
		ev, err := c.loop.WaitEvent(context.Background())
		if err != nil {
			return nil, err
		}
		switch ev.Kind {
		case events.MessageRx:
			return ev.Data, nil
		case events.Disconnection:
			if ev.Err != nil {
				return nil, ev.Err
			}
			return nil, fmt.Errorf("bench: pktipc-events server closed the connection: %w", io.ErrUnexpectedEOF)
		case events.Error:
			return nil, ev.Err
		}
		// MessageTx and timers do not happen here: the client never
		// schedules and sets no timer.
	}
}

// Close closes the Loop and its connection. Any goroutine may call it,
// more than once.
func (c *eventsConn) Close() error { return c.loop.Close() }

func openEventsStream(ctx context.Context, socket string, _ int) (Streamer, error) {
	c, err := newEventsConn(ctx, socket)
	if err != nil {
		return nil, err
	}
	return eventsStream{c}, nil
}

// eventsStream sends one-way messages on an eventsConn.
type eventsStream struct{ *eventsConn }

// Send writes msg; Write returns once it is in the kernel, waiting while
// the socket is full. Call it from the stream's goroutine.
func (s eventsStream) Send(msg []byte) error { return s.loop.Write(s.id, msg) }

// Finish sends an empty message, which the server answers with an empty
// message once it has read everything before it. Call it from the
// stream's goroutine; like RoundTrip, it is aborted by Close, not ctx.
func (s eventsStream) Finish(context.Context) error {
	if err := s.loop.Write(s.id, nil); err != nil {
		return err
	}
	reply, err := s.reply()
	if err == nil && len(reply) != 0 {
		err = fmt.Errorf("bench: stream ack of %d bytes, want 0", len(reply))
	}
	return err
}

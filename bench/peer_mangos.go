package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.nanomsg.org/mangos/v3"
	"go.nanomsg.org/mangos/v3/protocol/pull"
	"go.nanomsg.org/mangos/v3/protocol/push"
	"go.nanomsg.org/mangos/v3/protocol/rep"
	"go.nanomsg.org/mangos/v3/protocol/req"
	_ "go.nanomsg.org/mangos/v3/transport/ipc" // registers ipc://
)

const (
	// mangosMaxRecv is the receive limit of every mangos socket here: the
	// largest payload a Selection allows plus room for the protocol's
	// header (mangos's default, 1 MiB, counts the header and so refuses a
	// 1 MiB payload).
	mangosMaxRecv = MaxSize + 64<<10
	// mangosCallBound bounds a send, or the wait for its reply, when ctx
	// has no earlier deadline: a lost message fails the call after this
	// long instead of hanging the client, as the driver's stall timeout
	// does for the run.
	mangosCallBound = stallTimeout
	// mangosMarkerLen is the length of a stream's end marker: a NUL byte,
	// which no payload of the driver starts with (they are letters), and
	// the stream's token.
	mangosMarkerLen = 1 + 8
	// mangosStreamQueue is the push socket's send queue, in messages
	// (mangos's default is 128): like the pktipc stream's window, it
	// bounds what the client buffers ahead of the server, which for 1 MiB
	// messages would otherwise be 128 MiB per stream to drain after the
	// window.
	mangosStreamQueue = 16
)

// mangosContexts is how many rep contexts the server serves requests on,
// each on its own goroutine: enough for concurrent clients to be served in
// parallel, as a user would configure a busy rep socket.
func mangosContexts() int { return 4 * runtime.GOMAXPROCS(0) }

// mangosAddr is the ipc:// address of a socket path.
func mangosAddr(path string) string { return "ipc://" + path }

// mangosStreamPath is where the server's pull socket listens in the stream
// scenario, next to the rep socket at path.
func mangosStreamPath(path string) string { return path + ".stream" }

// newMangosSocket opens a socket of newSocket's protocol that accepts
// messages up to mangosMaxRecv, with the options opts.
func newMangosSocket(newSocket func() (mangos.Socket, error), opts map[string]any) (mangos.Socket, error) {
	s, err := newSocket()
	if err != nil {
		return nil, err
	}
	err = s.SetOption(mangos.OptionMaxRecvSize, mangosMaxRecv)
	for name, v := range opts {
		err = errors.Join(err, s.SetOption(name, v))
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func listenMangos(newSocket func() (mangos.Socket, error), path string) (mangos.Socket, error) {
	s, err := newMangosSocket(newSocket, nil)
	if err != nil {
		return nil, err
	}
	if err := s.Listen(mangosAddr(path)); err != nil {
		s.Close()
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return s, nil
}

// dialMangosSocket opens a socket as newMangosSocket does and connects it
// to path. mangos makes the first attempt of Dial synchronously, so the
// socket has its pipe when this returns.
func dialMangosSocket(ctx context.Context, newSocket func() (mangos.Socket, error), path string, opts map[string]any) (mangos.Socket, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s, err := newMangosSocket(newSocket, opts)
	if err != nil {
		return nil, err
	}
	if err := s.Dial(mangosAddr(path)); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// serveMangos is the mangos server role: a rep socket on cfg.Socket whose
// contexts echo every request. In the stream scenario a pull socket beside
// it reads the streams, and the rep contexts answer each stream's end
// request instead, once the pull side has read that stream's end marker.
func serveMangos(ctx context.Context, cfg serverConfig, _ noSettings, ready func()) error {
	repSock, err := listenMangos(rep.NewSocket, cfg.Socket)
	if err != nil {
		return err
	}
	var pullSock mangos.Socket
	var sink *mangosSink
	if cfg.Scenario == Stream {
		if pullSock, err = listenMangos(pull.NewSocket, mangosStreamPath(cfg.Socket)); err != nil {
			repSock.Close()
			return err
		}
		sink = &mangosSink{ends: make(map[uint64]*mangosEnd)}
	}
	// Closing the sockets ends their goroutines; cancel ends an end
	// request that still waits for its marker.
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	stop := func() {
		cancel()
		repSock.Close()
		if pullSock != nil {
			pullSock.Close()
		}
		wg.Wait()
	}
	start := func(serve func() error) {
		wg.Go(func() {
			// Closed sockets and a done ctx are how the server stops.
			if err := serve(); err != nil && !errors.Is(err, mangos.ErrClosed) && ctx.Err() == nil {
				select {
				case errc <- err:
				default:
				}
			}
		})
	}
	for range mangosContexts() {
		c, err := repSock.OpenContext()
		if err != nil {
			stop()
			return err
		}
		start(func() error { return serveMangosContext(ctx, c, sink) })
	}
	if sink != nil {
		start(func() error { return sink.read(pullSock) })
	}
	ready()
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	stop()
	return err
}

// serveMangosContext answers requests on c until it is closed: an echo, or
// with a sink the count of a stream's messages.
func serveMangosContext(ctx context.Context, c mangos.Context, sink *mangosSink) error {
	for {
		m, err := c.RecvMsg()
		if err != nil {
			return err
		}
		if sink != nil {
			if len(m.Body) != 8 {
				return fmt.Errorf("stream end request of %d bytes, want 8", len(m.Body))
			}
			n, err := sink.wait(ctx, binary.BigEndian.Uint64(m.Body))
			if err != nil {
				return err
			}
			m.Body = binary.BigEndian.AppendUint64(m.Body[:0], n)
		}
		// The reply reuses the request's message, which mangos frees
		// once written.
		if err := c.SendMsg(m); err != nil {
			return err
		}
	}
}

// mangosSink reads the streams on the server's pull socket. It counts
// each pipe's messages and, at a pipe's end marker, hands the count to the
// end request that waits for the marker's token. A pipe delivers its
// messages in order, so the marker comes after every message before it.
type mangosSink struct {
	mu   sync.Mutex
	ends map[uint64]*mangosEnd // by token, until the end request has its count
}

// mangosEnd is one stream's end: done is closed once the sink has read the
// marker, and count is then how many messages came before it.
type mangosEnd struct {
	done  chan struct{}
	count uint64
}

// end returns the end of token's stream; marker or request creates it,
// whichever comes first.
func (s *mangosSink) end(token uint64) *mangosEnd {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.ends[token]
	if !ok {
		e = &mangosEnd{done: make(chan struct{})}
		s.ends[token] = e
	}
	return e
}

// wait returns the message count of token's stream once its marker is read.
func (s *mangosSink) wait(ctx context.Context, token uint64) (uint64, error) {
	e := s.end(token)
	select {
	case <-e.done:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	s.mu.Lock()
	delete(s.ends, token)
	s.mu.Unlock()
	return e.count, nil
}

// read consumes the pull socket until it is closed.
func (s *mangosSink) read(sock mangos.Socket) error {
	counts := make(map[uint32]uint64) // messages read, by pipe
	for {
		m, err := sock.RecvMsg()
		if err != nil {
			return err
		}
		id := m.Pipe.ID()
		if len(m.Body) == mangosMarkerLen && m.Body[0] == 0 {
			e := s.end(binary.BigEndian.Uint64(m.Body[1:]))
			select {
			case <-e.done: // a repeated token: the first marker counts
			default:
				e.count = counts[id]
				close(e.done)
			}
			delete(counts, id)
		} else {
			counts[id]++
		}
		m.Free()
	}
}

// mangosPeer is the "mangos" peer: go.nanomsg.org/mangos/v3, the pure-Go
// implementation of the scalability protocols of nanomsg and NNG, over
// their ipc:// transport (a Unix socket). Ping-pong runs req/rep; one-way
// streams, which req/rep cannot carry, run push/pull.
type mangosPeer struct{}

func (mangosPeer) Prepare(context.Context, *Env) error {
	// ipc:// is a named pipe there, which the run's socket path does not
	// name.
	if runtime.GOOS == "windows" {
		return &UnavailableError{Peer: "mangos", Reason: "mangos's ipc:// is a named pipe on windows, not a Unix socket"}
	}
	return nil
}

func (mangosPeer) Server(env *Env, run Run) (*ServerCmd, error) {
	return mangosRole.command(env, run, noSettings{})
}

func (mangosPeer) Client(ctx context.Context, env *Env, run Run, m *Meter) (Load, error) {
	return GoClient{Dial: dialMangos, OpenStream: openMangosStream}.Run(ctx, run, m)
}

// mangosConn is one client: a req socket with its own connection. Calls
// come from one goroutine; Close may come from another and fails a call in
// progress with mangos.ErrClosed.
type mangosConn struct {
	sock  mangos.Socket
	bound time.Duration // the send and receive deadlines set on sock
}

func newMangosConn(ctx context.Context, path string) (*mangosConn, error) {
	s, err := dialMangosSocket(ctx, req.NewSocket, path, nil)
	if err != nil {
		return nil, err
	}
	return &mangosConn{sock: s}, nil
}

func dialMangos(ctx context.Context, path string) (RoundTripper, error) {
	return newMangosConn(ctx, path)
}

// deadline sets the socket's deadlines for a call under ctx: what is left
// of ctx's deadline, at most mangosCallBound. mangos takes a duration per
// operation, so it is set again only when it changes.
func (c *mangosConn) deadline(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d := mangosCallBound
	if t, ok := ctx.Deadline(); ok {
		if d = min(d, time.Until(t)); d <= 0 {
			return context.DeadlineExceeded
		}
	}
	if d == c.bound {
		return nil
	}
	if err := c.sock.SetOption(mangos.OptionSendDeadline, d); err != nil {
		return err
	}
	if err := c.sock.SetOption(mangos.OptionRecvDeadline, d); err != nil {
		return err
	}
	c.bound = d
	return nil
}

// call sends body as a request and returns the reply, which the caller
// frees.
func (c *mangosConn) call(ctx context.Context, body []byte) (*mangos.Message, error) {
	if err := c.deadline(ctx); err != nil {
		return nil, err
	}
	m := mangos.NewMessage(len(body))
	m.Body = append(m.Body, body...)
	// On failure mangos may still hold m: it is left to the collector
	// rather than freed twice.
	if err := c.sock.SendMsg(m); err != nil {
		return nil, err
	}
	return c.sock.RecvMsg()
}

func (c *mangosConn) RoundTrip(ctx context.Context, req []byte) (int, error) {
	r, err := c.call(ctx, req)
	if err != nil {
		return 0, err
	}
	n := len(r.Body)
	r.Free()
	return n, nil
}

// Close closes the socket and its connection; later calls are harmless.
func (c *mangosConn) Close() error {
	c.sock.Close()
	return nil
}

// mangosTokens names streams to the server. Every client of a server runs
// in this process, so a counter keeps the names unique.
var mangosTokens atomic.Uint64

// mangosStream is one one-way stream: a push socket connected to the
// server's pull socket for the messages, and a req socket for the end
// request that proves the server read them all.
type mangosStream struct {
	push  mangos.Socket
	end   *mangosConn
	token uint64
	sent  uint64
}

func openMangosStream(ctx context.Context, path string, _ int) (Streamer, error) {
	end, err := newMangosConn(ctx, path)
	if err != nil {
		return nil, err
	}
	p, err := dialMangosSocket(ctx, push.NewSocket, mangosStreamPath(path), map[string]any{
		mangos.OptionWriteQLen:    mangosStreamQueue,
		mangos.OptionSendDeadline: mangosCallBound,
	})
	if err != nil {
		end.Close()
		return nil, err
	}
	return &mangosStream{push: p, end: end, token: mangosTokens.Add(1)}, nil
}

// Send queues msg on the push socket; it blocks while mangos's send queue
// is full.
func (s *mangosStream) Send(msg []byte) error {
	m := mangos.NewMessage(len(msg))
	m.Body = append(m.Body, msg...)
	if err := s.push.SendMsg(m); err != nil {
		return err
	}
	s.sent++
	return nil
}

// Finish pushes the end marker after the messages, then asks on the req
// socket how many messages came before it. The server answers once its
// pull side has read the marker, so every message has been read, and the
// count must be all that were sent.
func (s *mangosStream) Finish(ctx context.Context) error {
	marker := mangos.NewMessage(mangosMarkerLen)
	marker.Body = binary.BigEndian.AppendUint64(append(marker.Body, 0), s.token)
	if err := s.push.SendMsg(marker); err != nil {
		return err
	}
	r, err := s.end.call(ctx, binary.BigEndian.AppendUint64(nil, s.token))
	if err != nil {
		return err
	}
	defer r.Free()
	if len(r.Body) != 8 {
		return fmt.Errorf("bench: mangos stream end reply of %d bytes, want 8", len(r.Body))
	}
	if n := binary.BigEndian.Uint64(r.Body); n != s.sent {
		return fmt.Errorf("bench: mangos server read %d messages of the %d sent", n, s.sent)
	}
	return nil
}

// Close closes both sockets; later calls are harmless.
func (s *mangosStream) Close() error {
	s.push.Close()
	s.end.Close()
	return nil
}

package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/pktipc/pktipc/bench"
	"github.com/pktipc/pktipc/events"
	"github.com/pktipc/pktipc/perf"
)

// LibIPC's pong example on package events: `ipcbench pongd` is the service,
// echoing every message, and `ipcbench pong` the client, checking every
// echo. Either side can face a LibIPC program of the format's generation.
// With a LibIPC format they find services where LibIPC does ($RUNDIR or
// $IPC_RUNDIR); --rundir overrides.

func init() {
	register(command{name: "pongd", summary: "a LibIPC-style pong service on package events: echo every message until Ctrl-C or SIGTERM", run: pongdCommand})
	register(command{name: "pong", summary: "send messages to a pong service, check every echo, print round-trip p50/p99", run: pongCommand})
}

const (
	// pongReplyTimeout bounds the wait for one echo: a service that
	// stops answering fails pong after this long instead of hanging it
	// (events' own bound for a peer that does not read).
	pongReplyTimeout = events.DefaultWriteTimeout
	// pongdQueueBytes bounds what pongd holds for a client that does not
	// read its echoes: the default, plus room for one more message of the
	// largest size, so that a client pipelining large messages is echoed
	// rather than refused.
	pongdQueueBytes = events.DefaultMaxMessageSize + events.DefaultQueueBytes
	// libipcMaxPayload and libipcCMaxPayload are the most the LibIPC
	// formats send (events.LibIPC, events.LibIPCC): LibIPC's 99,992-byte
	// payload, and what an old C peer's buffer holds.
	libipcMaxPayload  = 99_992
	libipcCMaxPayload = 1_999_988
)

// serviceFlags are the flags that name a service, shared by pongd and pong.
type serviceFlags struct {
	name, format, runDir string
}

func (s *serviceFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&s.name, "service", "", "service name, a socket in the run directory (required)")
	fs.StringVar(&s.format, "format", events.PktLine.String(), "wire format: pktline, libipc (LibIPC's 4-byte length) or libipc-c (the old C LibIPC's 6-byte header)")
	fs.StringVar(&s.runDir, "rundir", "", "run directory (default: $XDG_RUNTIME_DIR/pktipc, or $TMPDIR/pktipc-UID without it, for pktline; $RUNDIR or /tmp/.libipc-run for libipc; $IPC_RUNDIR or /run/ipc for libipc-c)")
}

// service is a validated serviceFlags.
type service struct {
	name   string
	format events.Format
	layout events.Layout
	dir    string // the run directory in use
	path   string // the socket's path, for messages
}

// resolve validates the flags; its errors are usage errors.
func (s *serviceFlags) resolve() (*service, error) {
	if s.name == "" {
		return nil, errors.New("--service is required")
	}
	f, err := events.ParseFormat(s.format)
	if err != nil {
		return nil, err
	}
	// Each format's peers look for services where their LibIPC
	// generation puts them.
	layout := map[events.Format]events.Layout{
		events.PktLine: events.Native,
		events.LibIPC:  events.LibIPCLayout,
		events.LibIPCC: events.LibIPCCLayout,
	}[f]
	dir := s.runDir
	if dir == "" {
		dir = events.RunDir(layout)
	}
	path, err := events.ServicePath(dir, s.name)
	if err != nil {
		return nil, err
	}
	return &service{name: s.name, format: f, layout: layout, dir: dir, path: path}, nil
}

// newLoop makes a Loop for the service's layout and directory, and closes
// it when ctx ends, which ends a WaitEvent in progress with
// events.ErrClosed (so the serving loop needs no context of its own).
// done closes the Loop if ctx did not, and waits for that Close.
func (s *service) newLoop(ctx context.Context, opts ...events.Option) (loop *events.Loop, done func(), err error) {
	opts = append([]events.Option{events.WithLayout(s.layout), events.WithRunDir(s.dir)}, opts...)
	loop, err = events.New(opts...)
	if err != nil {
		return nil, nil, err
	}
	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		loop.Close()
		close(closed)
	})
	return loop, func() {
		if stop() {
			loop.Close()
		} else {
			<-closed
		}
	}, nil
}

// maxPayload is the largest message pong can send in format f.
func maxPayload(f events.Format) int {
	switch f {
	case events.LibIPC:
		return libipcMaxPayload
	case events.LibIPCC:
		return libipcCMaxPayload
	}
	return events.DefaultMaxMessageSize
}

// pongdCommand serves the pong service until ctx ends (SIGINT, SIGTERM),
// then closes it, which removes its socket, and exits 0. A service that
// cannot start exits 1.
func pongdCommand(ctx context.Context, cio *cmdIO, args []string) int {
	fs := newFlagSet("pongd", "pongd --service NAME [--format pktline|libipc|libipc-c] [--rundir DIR]", cio)
	var sf serviceFlags
	sf.add(fs)
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	svc, err := sf.resolve()
	if err != nil {
		fmt.Fprintf(cio.stderr, "ipcbench pongd: %v\n", err)
		return exitUsage
	}
	loop, done, err := svc.newLoop(ctx, events.WithQueueLimit(events.DefaultQueueMessages, pongdQueueBytes))
	if err != nil {
		fmt.Fprintf(cio.stderr, "ipcbench pongd: %v\n", err)
		return exitFail
	}
	defer done()
	if _, err := loop.Listen(svc.name, svc.format); err != nil {
		fmt.Fprintf(cio.stderr, "ipcbench pongd: cannot serve %s: %v\n", svc.path, err)
		return exitFail
	}
	fmt.Fprintf(cio.stdout, "pongd: serving %s (%s) at %s\n", svc.name, svc.format, svc.path)
	for {
		ev, err := loop.WaitEvent(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return exitOK
			}
			fmt.Fprintf(cio.stderr, "ipcbench pongd: %v\n", err)
			return exitFail
		}
		switch ev.Kind {
		case events.MessageRx:
			// Schedule, not Write: a client that does not read its
			// echoes must not stall the others. Its queue filling up
			// (or a message this format cannot send back, such as an
			// empty LibIPC one) ends that client alone.
			err := loop.ScheduleTyped(ev.Conn, ev.UserType, ev.Data)
			if err != nil && !errors.Is(err, events.ErrClosed) && !errors.Is(err, events.ErrUnknownConn) {
				fmt.Fprintf(cio.stderr, "pongd: closing connection %d: %v\n", ev.Conn, err)
				loop.CloseConn(ev.Conn)
			}
		case events.Disconnection:
			if ev.Err != nil {
				fmt.Fprintf(cio.stderr, "pongd: connection %d ended: %v\n", ev.Conn, ev.Err)
			}
		case events.Error:
			fmt.Fprintf(cio.stderr, "pongd: %v\n", ev.Err)
		}
	}
}

// pongCommand connects to the service, sends the messages one at a time
// and checks each echo byte for byte (and its user type, in libipc-c). It
// exits 1 on a mismatch or any error, 130 when interrupted.
func pongCommand(ctx context.Context, cio *cmdIO, args []string) int {
	fs := newFlagSet("pong", "pong --service NAME [--format pktline|libipc|libipc-c] [--rundir DIR] [--count N] [--size B] [--message TEXT]", cio)
	var sf serviceFlags
	sf.add(fs)
	count := fs.Int("count", 100, "messages to send")
	size := fs.Int("size", 64, "payload bytes per message")
	message := fs.String("message", "", "send this text once instead of --count messages of --size bytes")
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	svc, err := sf.resolve()
	if err == nil {
		err = checkPongFlags(fs, svc.format, *count, *size, *message)
	}
	if err != nil {
		fmt.Fprintf(cio.stderr, "ipcbench pong: %v\n", err)
		return exitUsage
	}
	var text []byte
	if flagSet(fs, "message") {
		text, *count = []byte(*message), 1
	}

	loop, done, err := svc.newLoop(ctx)
	if err != nil {
		fmt.Fprintf(cio.stderr, "ipcbench pong: %v\n", err)
		return exitFail
	}
	defer done()
	id, err := loop.Connect(ctx, svc.name, svc.format)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(cio.stderr, "ipcbench pong: interrupted")
			return exitInterrupted
		}
		fmt.Fprintf(cio.stderr, "ipcbench pong: cannot reach %s: %v\n", svc.path, err)
		return exitFail
	}
	// The idle timer fires when no echo came for that long.
	if err := loop.SetTimer(events.Idle, pongReplyTimeout); err != nil {
		fmt.Fprintf(cio.stderr, "ipcbench pong: %v\n", err)
		return exitFail
	}

	hist := bench.NewHistogram()
	buf := make([]byte, *size)
	start := perf.Now()
	for i := range *count {
		msg := text
		if msg == nil {
			msg = pongPayload(buf, i)
		}
		userType := uint8(i) // varies, so that an echo must carry its own
		t0 := perf.Now()
		if err := loop.WriteTyped(id, userType, msg); err != nil {
			return pongFailed(ctx, cio, fmt.Errorf("message %d of %d: %w", i+1, *count, err))
		}
		ev, err := waitEcho(loop)
		if err != nil {
			return pongFailed(ctx, cio, fmt.Errorf("message %d of %d: %w", i+1, *count, err))
		}
		hist.RecordValue(perf.Now() - t0)
		if err := checkEcho(svc.format, msg, userType, ev); err != nil {
			fmt.Fprintf(cio.stderr, "ipcbench pong: message %d of %d: %v\n", i+1, *count, err)
			return exitFail
		}
	}
	elapsed := perf.Now() - start
	what := fmt.Sprintf("%d messages of %s", *count, bench.FormatSize(*size))
	if text != nil {
		what = fmt.Sprintf("%q", text)
	}
	fmt.Fprintf(cio.stdout, "pong: %s echoed by %s (%s) in %s; round trip p50 %s, p99 %s, max %s\n",
		what, svc.name, svc.format, bench.FormatNS(float64(elapsed)),
		bench.FormatNS(float64(hist.ValueAtQuantile(50))), bench.FormatNS(float64(hist.ValueAtQuantile(99))),
		bench.FormatNS(float64(hist.Max())))
	return exitOK
}

// checkPongFlags validates pong's message flags for format f: the size of
// --message's text, or --count and --size.
func checkPongFlags(fs *flag.FlagSet, f events.Format, count, size int, message string) error {
	lo := 0
	if f == events.LibIPC {
		lo = 1 // LibIPC peers take an empty message for a disconnection
	}
	if flagSet(fs, "message") {
		if flagSet(fs, "count") || flagSet(fs, "size") {
			return errors.New("--message sends its text once: it does not go with --count or --size")
		}
		if n := len(message); n < lo || n > maxPayload(f) {
			return fmt.Errorf("--message of %d bytes: %s carries %d to %d bytes", n, f, lo, maxPayload(f))
		}
		return nil
	}
	switch {
	case count < 1:
		return fmt.Errorf("--count %d: want at least 1", count)
	case size < lo || size > maxPayload(f):
		return fmt.Errorf("--size %d: %s carries %d to %d bytes", size, f, lo, maxPayload(f))
	}
	return nil
}

// flagSet reports whether the command line set the flag name.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// pongPayload fills buf with message i: letters shifted by i, so that an
// echo of another message is caught.
func pongPayload(buf []byte, i int) []byte {
	for j := range buf {
		buf[j] = 'a' + byte((i+j)%26)
	}
	return buf
}

// waitEcho returns the next message, or why none came.
func waitEcho(loop *events.Loop) (events.Event, error) {
	for {
		ev, err := loop.WaitEvent(context.Background())
		if err != nil {
			return ev, err
		}
		switch ev.Kind {
		case events.MessageRx:
			return ev, nil
		case events.Timer:
			return ev, fmt.Errorf("no echo within %v", pongReplyTimeout)
		case events.Disconnection:
			if ev.Err != nil {
				return ev, fmt.Errorf("the service ended the connection: %w", ev.Err)
			}
			return ev, errors.New("the service closed the connection")
		case events.Error:
			return ev, ev.Err
		}
	}
}

// checkEcho compares an echo with the message sent.
func checkEcho(f events.Format, msg []byte, userType uint8, ev events.Event) error {
	if !bytes.Equal(ev.Data, msg) {
		at := 0
		for at < min(len(msg), len(ev.Data)) && msg[at] == ev.Data[at] {
			at++
		}
		return fmt.Errorf("echo differs from the message: %d bytes for %d, first difference at byte %d", len(ev.Data), len(msg), at)
	}
	if f == events.LibIPCC && ev.UserType != userType {
		return fmt.Errorf("echo has user type %d, want %d", ev.UserType, userType)
	}
	return nil
}

// pongFailed reports err, or the interruption that caused it.
func pongFailed(ctx context.Context, cio *cmdIO, err error) int {
	if ctx.Err() != nil {
		fmt.Fprintln(cio.stderr, "ipcbench pong: interrupted")
		return exitInterrupted
	}
	fmt.Fprintf(cio.stderr, "ipcbench pong: %v\n", err)
	return exitFail
}

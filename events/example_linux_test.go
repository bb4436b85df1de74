//go:build linux

package events_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pktipc/pktipc/events"
	"github.com/pktipc/pktipc/frame"
)

// errDone ends an example's Run once its work is over.
var errDone = errors.New("done")

// exampleRunDir makes a private run directory under a fresh temporary one;
// the caller removes base.
func exampleRunDir() (base, run string, err error) {
	base, err = os.MkdirTemp("", "pong")
	if err != nil {
		return "", "", err
	}
	run = filepath.Join(base, "run")
	if err := os.Mkdir(run, 0o700); err != nil {
		os.RemoveAll(base)
		return "", "", err
	}
	return base, run, nil
}

// examplePong serves LibIPC's pongd on l until its first client leaves:
// each message goes back as it came, user type included.
func examplePong(ctx context.Context, l *events.Loop, verbose bool) error {
	return l.Run(ctx, func(ev events.Event) error {
		switch ev.Kind {
		case events.Connection:
			if verbose {
				fmt.Println("pong: a client connected")
			}
		case events.MessageRx:
			if verbose {
				fmt.Printf("pong: echo %q\n", ev.Data)
			}
			return l.WriteTyped(ev.Conn, ev.UserType, ev.Data)
		case events.Disconnection:
			if verbose {
				fmt.Println("pong: the client left")
			}
			return errDone
		}
		return nil
	})
}

// A pong service and its client in one program, as LibIPC's pong example:
// the service is a name under a run directory, the client connects by that
// name, and each side asks its Loop for one event at a time.
func Example() {
	base, run, err := exampleRunDir()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(base)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	svc, err := events.New(events.WithRunDir(run))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer svc.Close()
	if _, err := svc.Listen("pong", events.LibIPC); err != nil {
		fmt.Println(err)
		return
	}
	done := make(chan error, 1)
	go func() { done <- examplePong(ctx, svc, true) }()

	cli, err := events.New(events.WithRunDir(run))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cli.Close()
	id, err := cli.Connect(ctx, "pong", events.LibIPC)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, msg := range []string{"hello", "world"} {
		if err := cli.Write(id, []byte(msg)); err != nil {
			fmt.Println(err)
			return
		}
		ev, err := cli.WaitEvent(ctx)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("client: %v %q\n", ev.Kind, ev.Data)
	}
	cli.CloseConn(id)
	if err := <-done; !errors.Is(err, errDone) {
		fmt.Println(err)
	}
	// Output:
	// pong: a client connected
	// pong: echo "hello"
	// client: MessageRx "hello"
	// pong: echo "world"
	// client: MessageRx "world"
	// pong: the client left
}

// A TCP bridge like LibIPC's tcpd. Its Loop watches a TCP listener as an
// external descriptor; a TCP client first sends, unframed, the name of a
// local service; tcpd connects to that service, answers an unframed "ok",
// adopts the TCP stream as a LibIPC connection and switches it with the
// local one. From then on LibIPC frames cross the bridge both ways.
func ExampleLoop_AddSwitch() {
	base, run, err := exampleRunDir()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(base)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The local pong service.
	svc, err := events.New(events.WithRunDir(run))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer svc.Close()
	if _, err := svc.Listen("pong", events.LibIPC); err != nil {
		fmt.Println(err)
		return
	}
	svcDone := make(chan error, 1)
	go func() { svcDone <- examplePong(ctx, svc, false) }()

	// tcpd. The listener outlives the Loop that watches it (deferred
	// first, closed last): AddExternal never takes ownership.
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()
	tcpd, err := events.New(events.WithRunDir(run))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer tcpd.Close()
	lnFD, err := exampleFD(ln)
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := tcpd.AddExternal(lnFD); err != nil {
		fmt.Println(err)
		return
	}
	relayed := 0
	tcpdDone := make(chan error, 1)
	go func() {
		ended := 0
		tcpdDone <- tcpd.Run(ctx, func(ev events.Event) error {
			switch ev.Kind {
			case events.External:
				return exampleBridge(ctx, tcpd, ln)
			case events.SwitchRx:
				relayed++
			case events.Disconnection:
				// Either side's end closes both, each reported once.
				if ended++; ended == 2 {
					return errDone
				}
			}
			return nil
		})
	}()

	// A client on TCP: the handshake, then LibIPC frames.
	c, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ok := make([]byte, 2)
	if _, err := c.Write([]byte("pong")); err != nil {
		fmt.Println(err)
		return
	}
	if _, err := io.ReadFull(c, ok); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("client: handshake %q\n", ok)
	for _, msg := range []string{"ping", "hello"} {
		f, err := frame.AppendLibIPC(nil, []byte(msg))
		if err != nil {
			fmt.Println(err)
			return
		}
		if _, err := c.Write(f); err != nil {
			fmt.Println(err)
			return
		}
		var hdr [frame.LibIPCHeaderSize]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			fmt.Println(err)
			return
		}
		echo := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(c, echo); err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("client: echo %q\n", echo)
	}
	c.Close()
	for _, done := range []chan error{tcpdDone, svcDone} {
		if err := <-done; !errors.Is(err, errDone) {
			fmt.Println(err)
		}
	}
	fmt.Printf("tcpd: relayed %d messages\n", relayed)
	// Output:
	// tcpd: bridging a TCP client to "pong"
	// client: handshake "ok"
	// client: echo "ping"
	// client: echo "hello"
	// tcpd: relayed 4 messages
}

// exampleBridge is tcpd's inbound handshake, run when the listener is
// readable: the first raw read names the local service.
func exampleBridge(ctx context.Context, l *events.Loop, ln *net.TCPListener) error {
	c, err := ln.AcceptTCP()
	if err != nil {
		return err
	}
	defer c.Close() // the Loop works on its own copy of the descriptor
	name := make([]byte, 256)
	n, err := c.Read(name)
	if err != nil {
		return err
	}
	local, err := l.Connect(ctx, string(name[:n]), events.LibIPC)
	if err != nil {
		return err
	}
	fmt.Printf("tcpd: bridging a TCP client to %q\n", name[:n])
	if _, err := c.Write([]byte("ok")); err != nil {
		l.CloseConn(local)
		return err
	}
	fd, err := exampleDup(c)
	if err != nil {
		l.CloseConn(local)
		return err
	}
	remote, err := l.AddConn(fd, events.LibIPC)
	if err != nil {
		l.CloseConn(local)
		return err
	}
	return l.AddSwitch(remote, local, nil, nil)
}

// exampleFD returns c's descriptor, which c keeps owning.
func exampleFD(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(s uintptr) { fd = int(s) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// exampleDup returns a close-on-exec copy of c's descriptor, for a Loop
// to own.
func exampleDup(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, derr
}

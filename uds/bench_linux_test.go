//go:build linux

package uds

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkDial measures one connection's round trip: connect, the server
// accepts (with the credential check) and writes one byte, the client reads
// it and closes. impl=net dials with the standard library for reference;
// op=State is git's is-active probe.
func BenchmarkDial(b *testing.B) {
	for _, long := range []bool{false, true} {
		dir := filepath.Join(b.TempDir(), "run") // TempDir is 0755: too open for a private socket
		path := filepath.Join(dir, "s")
		if long {
			if err := os.Mkdir(dir, 0o700); err != nil {
				b.Fatal(err)
			}
			path = longPath(b, dir, "s", 190)
		}
		l, err := Listen(path)
		if err != nil {
			b.Fatal(err)
		}
		done := serveOneByte(l)
		name := "path=short"
		if long {
			name = "path=190"
		}
		b.Run(name+"/impl=uds", func(b *testing.B) {
			b.ReportAllocs()
			ctx := context.Background()
			buf := make([]byte, 1)
			for b.Loop() {
				c, err := Dial(ctx, path, WaitIfBusy())
				if err != nil {
					b.Fatal(err)
				}
				c.Read(buf)
				c.Close()
			}
		})
		if !long {
			b.Run(name+"/impl=net", func(b *testing.B) {
				b.ReportAllocs()
				buf := make([]byte, 1)
				for b.Loop() {
					c, err := net.Dial("unix", path)
					if err != nil {
						b.Fatal(err)
					}
					c.Read(buf)
					c.Close()
				}
			})
		}
		b.Run(name+"/op=State", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				// The probe's connection is in the backlog, served like any other.
				if State(path) != Listening {
					b.Fatal("not listening")
				}
			}
		})
		l.Close()
		<-done
	}
}

// serveOneByte accepts on l until it closes, writing one byte to each
// connection and closing it; the channel is closed when it stops.
func serveOneByte(l *Listener) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte{1})
			c.Close()
		}
	}()
	return done
}

// BenchmarkListenClose measures a whole start-up and shutdown: directory
// checks, lock, probe, bind, watcher, and the checked unlink.
func BenchmarkListenClose(b *testing.B) {
	path := filepath.Join(b.TempDir(), "run", "s") // Listen creates run/ 0700
	b.ReportAllocs()
	for b.Loop() {
		l, err := Listen(path)
		if err != nil {
			b.Fatal(err)
		}
		l.Close()
	}
}

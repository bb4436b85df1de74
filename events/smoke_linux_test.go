//go:build linux

package events

import (
	"context"
	"testing"
	"time"
)

func TestSmokePong(t *testing.T) {
	dir := t.TempDir() + "/run"
	srv, err := New(WithRunDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := New(WithRunDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, f := range []Format{PktLine, LibIPC, LibIPCC} {
		name := "pong-" + f.String()
		ln, err := srv.Listen(name, f)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		id, err := cli.Connect(ctx, name, f)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			for {
				ev, err := srv.WaitEvent(ctx)
				if err != nil {
					done <- err
					return
				}
				switch ev.Kind {
				case Connection:
					if ev.Listener != ln {
						t.Errorf("listener %d, want %d", ev.Listener, ln)
					}
				case MessageRx:
					if err := srv.WriteTyped(ev.Conn, ev.UserType, ev.Data); err != nil {
						done <- err
						return
					}
				case Disconnection:
					done <- ev.Err
					return
				}
			}
		}()
		for i := 0; i < 100; i++ {
			msg := []byte("hello " + name)
			if err := cli.WriteTyped(id, 7, msg); err != nil {
				t.Fatal(err)
			}
			ev, err := cli.WaitEvent(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Kind != MessageRx || string(ev.Data) != string(msg) {
				t.Fatalf("%s: got %v %q", f, ev.Kind, ev.Data)
			}
			if f == LibIPCC && ev.UserType != 7 {
				t.Fatalf("user type %d", ev.UserType)
			}
		}
		cli.CloseConn(id)
		if err := <-done; err != nil {
			t.Fatalf("%s: server: %v", f, err)
		}
		cancel()
	}
}

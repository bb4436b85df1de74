//go:build linux

package events

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pktipc/pktipc/frame"
)

const fuzzMax = 4096

// reference decodes a whole stream with the frame package alone: the
// messages, and whether the stream ends cleanly.
func reference(f Format, b []byte) (msgs [][]byte, clean bool) {
	switch f {
	case LibIPC:
		for {
			p, n, err := frame.DecodeLibIPC(b, fuzzMax)
			if err != nil {
				return msgs, false
			}
			if n == 0 {
				return msgs, len(b) == 0
			}
			msgs = append(msgs, p)
			b = b[n:]
		}
	case LibIPCC:
		for {
			cf, n, err := frame.DecodeLibIPCC(b)
			if err != nil || n > 0 && len(cf.Payload) > fuzzMax {
				return msgs, false
			}
			if len(b) >= 5 && int(b[1])<<24|int(b[2])<<16|int(b[3])<<8|int(b[4]) > fuzzMax {
				return msgs, false
			}
			if n == 0 {
				return msgs, len(b) == 0
			}
			if cf.Type == frame.CServerClose {
				return msgs, true
			}
			msgs = append(msgs, cf.Payload)
			b = b[n:]
		}
	}
	a := frame.NewAssembler(frame.Persistent, fuzzMax)
	for {
		msg, n, done, err := a.Next(b)
		if err != nil {
			return msgs, false
		}
		b = b[n:]
		if done {
			msgs = append(msgs, bytes.Clone(msg))
			continue
		}
		if n == 0 {
			return msgs, len(b) == 0 && a.Buffered() == 0
		}
	}
}

// FuzzStream feeds any bytes, in pieces of any sizes, to a Loop
// connection of each format: no panic, and exactly the messages the
// frame package decodes from the whole stream, then a Disconnection that
// is clean exactly when the stream ended between frames.
func FuzzStream(f *testing.F) {
	f.Add(uint8(0), uint16(7), []byte("0009hello0000000aworld0000"))
	f.Add(uint8(1), uint16(3), []byte("\x00\x00\x00\x05hello\x00\x00\x00\x00\x00\x00\x00\x01A"))
	f.Add(uint8(2), uint16(1), []byte("\x02\x00\x00\x00\x05\x2ahello\x00\x00\x00\x00\x00\x00"))
	f.Add(uint8(1), uint16(2), []byte("\xff\xff\xff\xff"))
	f.Add(uint8(2), uint16(9), []byte("\x05\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, which uint8, seed uint16, data []byte) {
		if len(data) > 32<<10 {
			return
		}
		format := formats[int(which)%len(formats)]
		want, clean := reference(format, data)
		l, err := New(WithMaxMessageSize(fuzzMax))
		if err != nil {
			t.Fatal(err)
		}
		id, peer := pair(t, l, format)
		wdone := make(chan struct{})
		// The writer ends before the peer's descriptor is closed, so its
		// number is never reused under it by the next input.
		defer func() { l.Close(); <-wdone }()
		// Pieces of 1 to 64 bytes chosen by the seed, so frames split
		// everywhere; the Loop reads concurrently.
		go func() {
			defer close(wdone)
			s := uint32(seed) | 1
			for b := data; len(b) > 0; {
				s ^= s << 13
				s ^= s >> 17
				s ^= s << 5
				k := min(int(s%64)+1, len(b))
				if _, err := unix.Write(peer, b[:k]); err != nil {
					return
				}
				b = b[k:]
			}
			unix.Shutdown(peer, unix.SHUT_WR)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var got [][]byte
		for {
			ev, err := l.WaitEvent(ctx)
			if err != nil {
				t.Fatalf("WaitEvent: %v", err)
			}
			if ev.Conn != id {
				t.Fatalf("event on %d", ev.Conn)
			}
			if ev.Kind == MessageRx {
				got = append(got, bytes.Clone(ev.Data))
				continue
			}
			if ev.Kind != Disconnection {
				t.Fatalf("got %v", ev.Kind)
			}
			if (ev.Err == nil) != clean {
				t.Fatalf("end %v, reference clean %v", ev.Err, clean)
			}
			var ce *ConnError
			if ev.Err != nil && !errors.As(ev.Err, &ce) {
				t.Fatalf("untyped end: %#v", ev.Err)
			}
			break
		}
		if len(got) != len(want) {
			t.Fatalf("%d messages, reference %d", len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("message %d differs", i)
			}
		}
	})
}

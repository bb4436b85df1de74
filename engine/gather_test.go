package engine

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/pktipc/pktipc/frame"
)

// TestGatherLayout: the pieces of a gathered write are exactly the bytes
// the copying encoder makes, for payloads around the packet boundaries,
// and advance/rest resume at any byte.
func TestGatherLayout(t *testing.T) {
	var g gather
	for _, n := range []int{0, 1, frame.MaxPayloadSize - 1, frame.MaxPayloadSize, frame.MaxPayloadSize + 1, 3*frame.MaxPayloadSize + 17} {
		for _, head := range [][]byte{nil, []byte("0008abcd0000")} {
			for _, flush := range []bool{true, false} {
				t.Run(fmt.Sprint(n, len(head), flush), func(t *testing.T) {
					payload := bytes.Repeat([]byte{'p'}, n)
					want := append([]byte(nil), head...)
					if flush {
						want = frame.AppendMessage(want, payload)
					} else {
						want = frame.AppendData(want, payload)
					}
					g.set(head, payload, flush)
					var got []byte
					g.rest(func(b []byte) { got = append(got, b...) })
					if !bytes.Equal(got, want) {
						t.Fatalf("pieces make %d bytes, want %d (%q...)", len(got), len(want), got[:min(len(got), 16)])
					}
					// Written in uneven steps, the rest is always the tail.
					for off, step := 0, 1; off < len(want); off, step = off+step, step*3+1 {
						step = min(step, len(want)-off)
						g.advance(step)
						var tail []byte
						g.rest(func(b []byte) { tail = append(tail, b...) })
						if !bytes.Equal(tail, want[off+step:]) {
							t.Fatalf("after %d bytes the rest is %d bytes, want %d", off+step, len(tail), len(want)-off-step)
						}
					}
					if !g.done() {
						t.Fatal("not done after every byte")
					}
					g.release()
				})
			}
		}
	}
}

package frame_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/pktipc/pktipc/frame"
)

// Decoding packets in place from a buffer that fills up over time.
func ExampleDecode() {
	in := []byte("0009hello0000")
	for _, b := range [][]byte{in[:3], in[:7], in} {
		kind, payload, n, err := frame.Decode(b)
		fmt.Printf("%d bytes buffered: %v %q consumed %d err %v\n", len(b), kind, payload, n, err)
	}
	kind, _, n, _ := frame.Decode(in[9:])
	fmt.Println(kind, n)
	_, _, _, err := frame.Decode([]byte("0x10"))
	fmt.Println(errors.Is(err, frame.ErrBadHeader), err)
	// Output:
	// 3 bytes buffered: need-more "" consumed 0 err <nil>
	// 7 bytes buffered: need-more "" consumed 0 err <nil>
	// 13 bytes buffered: data "hello" consumed 9 err <nil>
	// flush 4
	// true frame: non-hex byte in packet header at offset 0 (header "0x10")
}

// An Assembler over a connection's read buffer: git's simple-ipc rules, a
// request split over two packets, and a second request behind it.
func ExampleAssembler() {
	a := frame.NewAssembler(frame.SimpleIPC, 0)
	buf := []byte("0008ping0005!00000008pong0000")
	for len(buf) > 0 {
		msg, n, done, err := a.Next(buf)
		if err != nil || !done {
			fmt.Println("need more or failed:", err)
			break
		}
		fmt.Printf("message %q, consumed %d\n", msg, n)
		buf = buf[n:] // discard what Next consumed
	}
	fmt.Println(a.Truncated(len(buf)) == io.EOF)
	// Output:
	// message "ping!", consumed 17
	// message "pong", consumed 12
	// true
}

// Encoding a reply: data packets of at most 65516 bytes, then a flush.
func ExampleAppendMessage() {
	out := frame.AppendMessage(nil, []byte("pong"))
	fmt.Printf("%s\n", out)
	big := frame.AppendMessage(nil, make([]byte, 100000))
	fmt.Println(len(big), frame.EncodedLen(100000), string(big[:4]), string(big[65520:65524]))
	// Output:
	// 0008pong0000
	// 100012 100012 fff0 86b8
}

// A blocking client: write a request, read the reply.
func ExampleReader() {
	var conn bytes.Buffer // stands in for a net.Conn
	w := frame.NewWriter(&conn)
	if err := w.WriteMessage([]byte("ping")); err != nil {
		fmt.Println(err)
	}
	r := frame.NewReader(&conn, frame.SimpleIPC, 0)
	msg, err := r.ReadMessage()
	fmt.Printf("%q %v\n", msg, err)
	_, err = r.ReadMessage()
	fmt.Println(err)
	// Output:
	// "ping" <nil>
	// EOF
}

// The two LibIPC framings.
func ExampleDecodeLibIPC() {
	in, _ := frame.AppendLibIPC(nil, []byte("hello"))
	payload, n, err := frame.DecodeLibIPC(in, 0)
	fmt.Printf("% x -> %q %d %v\n", in, payload, n, err)

	c, _ := frame.AppendLibIPCC(nil, frame.CFrame{Type: frame.CData, UserType: 42, Payload: []byte("hi")})
	f, n, err := frame.DecodeLibIPCC(c)
	fmt.Printf("% x -> %v %d %q %d %v\n", c, f.Type, f.UserType, f.Payload, n, err)
	// Output:
	// 00 00 00 05 68 65 6c 6c 6f -> "hello" 9 <nil>
	// 02 00 00 00 02 2a 68 69 -> DATA 42 "hi" 8 <nil>
}

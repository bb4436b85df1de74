package fdpass_test

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/pktipc/pktipc/fdpass"
)

// Pass the read end of a pipe with a little data over a socketpair and
// read through the received descriptor.
func Example() {
	a, b, err := fdpass.Pair()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close()
	defer b.Close()

	r, w, err := os.Pipe()
	if err != nil {
		fmt.Println(err)
		return
	}
	w.WriteString("hello through a passed pipe")
	w.Close()

	sent := make(chan error, 1)
	// a owns r from now on and closes it once it is in the kernel.
	if err := a.Send([]*os.File{r}, []byte("greeting"), func(err error) { sent <- err }); err != nil {
		fmt.Println(err)
		return
	}
	m, err := b.Recv(time.Now().Add(5 * time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("sent:", <-sent)
	f := m.Files()[0] // the file now owns the descriptor
	content, _ := io.ReadAll(f)
	f.Close()
	fmt.Printf("%s: %s\n", m.Data, content)
	// Output:
	// sent: <nil>
	// greeting: hello through a passed pipe
}

// Raw mode speaks AnyEvent::FDpasser's wire shape: one 0x00 byte and one
// descriptor per message, no data.
func Example_raw() {
	a, b, err := fdpass.Pair(fdpass.WithMode(fdpass.Raw))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close()
	defer b.Close()

	var files []*os.File
	for i := 0; i < 3; i++ {
		r, w, _ := os.Pipe()
		fmt.Fprintf(w, "pipe %d", i)
		w.Close()
		files = append(files, r)
	}
	a.Send(files, nil, nil) // three one-byte messages, in one sendmmsg
	var m fdpass.Message
	for i := 0; i < 3; i++ {
		if err := b.RecvInto(time.Now().Add(5*time.Second), &m); err != nil {
			fmt.Println(err)
			return
		}
		f := m.Files()[0]
		content, _ := io.ReadAll(f)
		f.Close()
		fmt.Printf("%d data bytes, %s\n", len(m.Data), content)
	}
	// Output:
	// 0 data bytes, pipe 0
	// 0 data bytes, pipe 1
	// 0 data bytes, pipe 2
}

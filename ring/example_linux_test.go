//go:build 386 || amd64 || arm64 || loong64 || ppc64le || riscv64

package ring_test

import (
	"fmt"
	"log"

	"github.com/pktipc/pktipc/ring"
)

// A ring made here; in real use the memfd goes to another process over a
// Unix socket (package fdpass), which maps the other side of it.
func Example() {
	f, err := ring.Create(64 << 10)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	w, err := ring.NewWriter(f, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	r, err := ring.NewReader(f, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()

	// Copying in and out.
	w.Write([]byte("hello"))
	msg, err := r.ReadMessage(nil, 1024)
	fmt.Printf("%s %v\n", msg, err)

	// In place: the payload is written into, and read from, the mapping.
	b, _ := w.Reserve(5)
	n := copy(b, "world")
	w.Commit(n, false)
	p, more, err := r.Next()
	fmt.Printf("%s %v %v\n", p, more, err)
	r.Release()
	// Output:
	// hello <nil>
	// world false <nil>
}

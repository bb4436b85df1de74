package fdpass

import (
	"fmt"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// benchWindow bounds the messages in flight per benchmark sender, so the
// queue stays far below MaxQueue and the kernel's socket buffer is kept
// busy.
const benchWindow = 64

// BenchmarkFDPass measures descriptors per second; one op is one
// descriptor passed and closed by the receiver.
//
//   - shape=fdpasser: the FDpasser wire shape the way a Go program emits
//     it: WriteMsgUnix with one 0x00 byte and one fd per sendmsg, ReadMsgUnix
//     with a 1-byte buffer and a CMSG_SPACE(4) control buffer per fd.
//   - mode=raw: the same wire shape through a Raw Passer (sendmmsg batches).
//   - batch=N: the Framed batched path with N descriptors per message
//     (small messages are bundled several to a sendmsg).
//   - bundles=off: the same with NoBundles.
func BenchmarkFDPass(b *testing.B) {
	b.Run("shape=fdpasser", benchStdlib)
	b.Run("mode=raw", func(b *testing.B) { benchPasser(b, 1, WithMode(Raw)) })
	for _, n := range []int{1, 16, MaxFDsPerSendmsg} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) { benchPasser(b, n) })
	}
	// Without bundles every message costs the receiver one recvmsg (plus
	// the spare-slot close and dup).
	for _, n := range []int{1, 16} {
		b.Run(fmt.Sprintf("batch=%d/bundles=off", n), func(b *testing.B) { benchPasser(b, n, NoBundles()) })
	}
}

func benchFD(b *testing.B) int {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		b.Fatal(err)
	}
	unix.Close(p[1])
	return p[0]
}

func benchStdlib(b *testing.B) {
	c1, c2, err := Socketpair()
	if err != nil {
		b.Fatal(err)
	}
	defer c1.Close()
	defer c2.Close()
	fd := benchFD(b)
	defer unix.Close(fd)
	b.ReportAllocs()
	b.ResetTimer()
	errc := make(chan error, 1)
	go func(c *net.UnixConn) {
		for i := 0; i < b.N; i++ {
			if _, _, err := c.WriteMsgUnix([]byte{0}, unix.UnixRights(fd), nil); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}(c1)
	var buf [1]byte
	oob := make([]byte, unix.CmsgSpace(4))
	for i := 0; i < b.N; i++ {
		_, oobn, _, _, err := c2.ReadMsgUnix(buf[:], oob)
		if err != nil {
			b.Fatal(err)
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			b.Fatalf("control: %v", err)
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			b.Fatalf("rights: %v", err)
		}
		unix.Close(fds[0])
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "fds/s")
}

func benchPasser(b *testing.B, batch int, opts ...Option) {
	a, r, err := Pair(append([]Option{KeepOpen()}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	defer a.Close()
	fd := benchFD(b)
	defer unix.Close(fd)
	fds := make([]int, batch)
	for i := range fds {
		fds[i] = fd
	}
	sem := make(chan struct{}, benchWindow)
	done := func(err error) {
		if err != nil {
			b.Error(err)
		}
		<-sem
	}
	msgs := (b.N + batch - 1) / batch
	b.ReportAllocs()
	b.ResetTimer()
	errc := make(chan error, 1)
	go func() {
		for i := 0; i < msgs; i++ {
			n := min(batch, b.N-i*batch)
			sem <- struct{}{}
			if err := a.SendFDs(fds[:n], nil, done); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	var m Message
	for got := 0; got < b.N; {
		if err := r.RecvInto(deadline(), &m); err != nil {
			b.Fatal(err)
		}
		got += len(m.FDs)
		m.Close()
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "fds/s")
}

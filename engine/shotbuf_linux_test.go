package engine

import (
	"context"
	"io"
	"os"
	"syscall"
	"testing"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/internal/leakcheck"
	"github.com/pktipc/pktipc/uds"
)

// A worker keeps its one-shot reply buffer across large replies, which it
// sends in parts as the handler writes them.
func TestWorkerShotBufKeepsWhileLarge(t *testing.T) {
	leakcheck.Check(t)
	big := pattern(1<<20, 5)
	ts := startServer(t, HandlerFunc(func(_ context.Context, _ []byte, w *ReplyWriter) error {
		_, err := w.Write(big)
		return err
	}))
	s := ts.Server
	req := frame.AppendMessage(nil, []byte("big"))
	var buf shotBuf
	var sink []byte
	for i := range 3 {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.SetNonblock(fds[0], true); err != nil {
			t.Fatal(err)
		}
		client := os.NewFile(uintptr(fds[1]), "client")
		if _, err := client.Write(req); err != nil {
			t.Fatal(err)
		}
		read := make(chan int64)
		go func() {
			n, _ := io.Copy(io.Discard, client)
			client.Close()
			read <- n
		}()
		// As the accept loop hands a shot over (poolOneShot).
		s.adm.admit(uds.Cred{})
		c := s.newShotConn(Peer{})
		c.shot, c.shotFD, c.shotIn = true, fds[0], len(req)
		c.req = bufPool.Get()
		c.req.B = append(c.req.B[:0], "big"...)
		c.reqMsg = c.req.B
		c.prepareHandler(false)
		s.shots.add(c)
		s.serveShot(c, &buf, &sink)
		if n := <-read; n != int64(len(frame.AppendFlush(frame.AppendData(nil, big)))) {
			t.Fatalf("reply %d: %d bytes", i+1, n)
		}
		if buf.small != 0 || cap(buf.B) <= shotReplyKeep {
			t.Fatalf("after %d large replies: %d small in a row, a buffer of %d bytes", i+1, buf.small, cap(buf.B))
		}
	}
}

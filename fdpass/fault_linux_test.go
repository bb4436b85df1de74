package fdpass

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/pktipc/pktipc/internal/leakcheck"
	"golang.org/x/sys/unix"
)

// Seam swaps. Call them before creating passers: the restore is a cleanup
// registered earlier, so it runs after the passers' Close.
func swapSendmmsg(t *testing.T, f func(int, []mmsghdr, int) (int, error)) {
	old := sysSendmmsg
	sysSendmmsg = f
	t.Cleanup(func() { sysSendmmsg = old })
}

func swapRecvmsg(t *testing.T, f func(int, *unix.Msghdr, int) (int, error)) {
	old := sysRecvmsg
	sysRecvmsg = f
	t.Cleanup(func() { sysRecvmsg = old })
}

func highestFD() int {
	d, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	hi := 0
	for _, e := range d {
		if n, err := strconv.Atoi(e.Name()); err == nil && n > hi {
			hi = n
		}
	}
	return hi
}

// fillTable lowers RLIMIT_NOFILE near the highest descriptor and opens
// /dev/null until the table is full, then frees free slots; undo closes the
// fillers and restores the limit. The passer p must still hold its spare
// slots afterwards: its reader releases them around every receive,
// including the first one it tries when it starts, and a filler opened in
// that window would take them for good. So fillTable checks the reserve
// (the dups of p's reserve pipe, found with fstat: nothing can be opened
// once the table is full) and, while it is short, gives a slot back, waits
// for the reader to re-take it and fills again.
func fillTable(p *Passer, free int) (undo func(), err error) {
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		return nil, err
	}
	lim := unix.Rlimit{Cur: uint64(highestFD() + 32), Max: old.Max}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return nil, err
	}
	var fillers []int
	undo = func() {
		for _, fd := range fillers {
			unix.Close(fd)
		}
		unix.Setrlimit(unix.RLIMIT_NOFILE, &old)
	}
	fill := func() error {
		for {
			fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err == unix.EMFILE {
				return nil
			}
			if err != nil {
				return err
			}
			fillers = append(fillers, fd)
		}
	}
	giveBack := func() {
		unix.Close(fillers[len(fillers)-1])
		fillers = fillers[:len(fillers)-1]
	}
	if err := fill(); err != nil {
		undo()
		return nil, err
	}
	for end := time.Now().Add(10 * time.Second); sparesHeld(p, int(lim.Cur)) < p.opts.reserveFDs; {
		if time.Now().After(end) {
			undo()
			return nil, errors.New("the passer never re-took its spare slots")
		}
		giveBack()
		// The reader retries after 50 ms, then every 500 ms.
		for sparesHeld(p, int(lim.Cur)) < p.opts.reserveFDs && time.Now().Before(end) {
			time.Sleep(10 * time.Millisecond)
		}
		if err := fill(); err != nil {
			undo()
			return nil, err
		}
	}
	for range free {
		giveBack()
	}
	return undo, nil
}

// sparesHeld counts the descriptors below limit that are p's spare slots:
// dups of its reserve pipe other than the pipe itself.
func sparesHeld(p *Passer, limit int) int {
	orig := p.r.res.orig // set before the reader starts, then never changed
	var o unix.Stat_t
	if unix.Fstat(orig, &o) != nil {
		return 0
	}
	n := 0
	for fd := 0; fd < limit; fd++ {
		var st unix.Stat_t
		if fd != orig && unix.Fstat(fd, &st) == nil && st.Ino == o.Ino && st.Dev == o.Dev {
			n++
		}
	}
	return n
}

func init() {
	// rlimit-recv: a receiver at its RLIMIT_NOFILE with 2 free slots (plus
	// the passer's spare) gets a 10-descriptor message; the kernel installs
	// what fits, closes the rest and sets MSG_CTRUNC.
	helpers["rlimit-recv"] = func() error {
		base := leakcheck.CountFDs() - 1 // the inherited socket is consumed
		p, err := FromEnv()
		if err != nil {
			return err
		}
		undo, err := fillTable(p, 2)
		if err != nil {
			return err
		}
		fmt.Println("ready")
		var m Message
		err = p.RecvInto(deadline(), &m)
		var te *TruncatedError
		if !errors.As(err, &te) {
			undo()
			return fmt.Errorf("first message: %v, want *TruncatedError", err)
		}
		fmt.Printf("truncated want %d got %d data %s fds %d\n", te.Want, te.Got, m.Data, len(m.FDs))
		// The stream is still aligned: the next message arrives whole.
		if err := p.RecvInto(deadline(), &m); err != nil {
			undo()
			return fmt.Errorf("second message: %v", err)
		}
		content, _ := readFD(m.FDs[0])
		fmt.Printf("next %s %s\n", m.Data, content)
		m.Close()
		undo()
		st := p.Stats()
		p.Close()
		fmt.Printf("fds %d %d pauses %d\n", base, leakcheck.CountFDs(), st.TablePauses)
		return nil
	}
	// fulltable-recv: FDpasser's own test. No free slot but the spare;
	// every one-descriptor message must still arrive, none lost.
	helpers["fulltable-recv"] = func() error {
		base := leakcheck.CountFDs() - 1
		var opts []Option
		if helperArgs()[1] == "raw" {
			opts = append(opts, WithMode(Raw))
		}
		p, err := FromEnv(opts...)
		if err != nil {
			return err
		}
		undo, err := fillTable(p, 0)
		if err != nil {
			return err
		}
		fmt.Println("ready")
		n, _ := strconv.Atoi(helperArgs()[0])
		var m Message
		for i := 0; i < n; i++ {
			if err := p.RecvInto(deadline(), &m); err != nil {
				undo()
				return fmt.Errorf("message %d: %v (%+v)", i, err, p.Stats())
			}
			content, _ := readFD(m.FDs[0])
			m.Close()
			fmt.Printf("got %s\n", content)
		}
		undo()
		st := p.Stats()
		p.Close()
		fmt.Printf("fds %d %d pauses %d truncated %d\n", base, leakcheck.CountFDs(), st.TablePauses, st.Truncated)
		return nil
	}
}

// TestRlimitTruncation: at RLIMIT_NOFILE the receive still succeeds; the
// kernel installs what fits and sets MSG_CTRUNC, the passer closes it and
// reports a typed error with the counts, the stream stays aligned and the
// child's descriptor count returns to its baseline.
func TestRlimitTruncation(t *testing.T) {
	leakcheck.Check(t)
	c := startChild(t, helperCmd(t, "rlimit-recv"))
	c.expect("ready")
	var fds []int
	for i := 0; i < 10; i++ {
		fds = append(fds, pipeWith(t, "lost"))
	}
	// One after the other, so the two messages are not bundled into one
	// receive.
	ch, _ := c.p.SendChan(fds, []byte("ten"))
	<-ch
	c.p.SendFDs([]int{pipeWith(t, "arrived")}, []byte("one"), nil)
	var want, got, kept int
	var data string
	fmt.Sscanf(c.expect("truncated"), "want %d got %d data %s fds %d", &want, &got, &data, &kept)
	// Two free slots plus the released spare: three descriptors fit.
	if want != 10 || got != 3 || data != "ten" || kept != 0 {
		t.Errorf("truncation: want %d got %d data %q fds kept %d; want 10, 3, \"ten\", 0", want, got, data, kept)
	}
	if next := c.expect("next"); next != "one arrived" {
		t.Errorf("message after truncation: %q", next)
	}
	var before, after, pauses int
	fmt.Sscanf(c.expect("fds"), "%d %d pauses %d", &before, &after, &pauses)
	if before != after {
		t.Errorf("child descriptor count %d before, %d after", before, after)
	}
	c.wait()
}

// TestFullTableNoLoss: with the table full but for the spare slot, every
// descriptor arrives; the reader pauses instead of losing any. This is
// AnyEvent::FDpasser's own test, in its wire shape (Raw), and in Framed
// mode with one-descriptor messages that are not bundled.
func TestFullTableNoLoss(t *testing.T) {
	leakcheck.Check(t)
	const n = 8
	for _, mode := range []Mode{Raw, Framed} {
		t.Run(mode.String(), func(t *testing.T) {
			c := startChild(t, helperCmd(t, "fulltable-recv", strconv.Itoa(n), mode.String()), WithMode(mode), NoBundles())
			c.expect("ready")
			for i := 0; i < n; i++ {
				c.p.SendFDs([]int{pipeWith(t, strconv.Itoa(i))}, nil, nil)
			}
			for i := 0; i < n; i++ {
				if got := c.expect("got"); got != strconv.Itoa(i) {
					t.Fatalf("message %d carried %q", i, got)
				}
			}
			var before, after, pauses, trunc int
			fmt.Sscanf(c.expect("fds"), "%d %d pauses %d truncated %d", &before, &after, &pauses, &trunc)
			if before != after || pauses == 0 || trunc != 0 {
				t.Errorf("child: fds %d before, %d after; %d table pauses (want > 0); %d truncated (want 0)", before, after, pauses, trunc)
			}
			c.wait()
		})
	}
}

// TestSplitLargeSends: 255 and 1000 descriptors in one message are split
// into sendmsg entries of at most 253 (the kernel's SCM_MAX_FD) and arrive
// complete and in order (identity checked by inode).
func TestSplitLargeSends(t *testing.T) {
	leakcheck.Check(t)
	var mu sync.Mutex
	var perEntry []int
	swapSendmmsg(t, func(fd int, msgs []mmsghdr, flags int) (int, error) {
		n, err := sendmmsg(fd, msgs, flags)
		mu.Lock()
		for i := 0; i < n; i++ {
			if msgs[i].Hdr.Control != nil {
				h := (*unix.Cmsghdr)(unsafe.Pointer(msgs[i].Hdr.Control))
				perEntry = append(perEntry, (int(h.Len)-unix.CmsgLen(0))/4)
			}
		}
		mu.Unlock()
		return n, err
	})
	a, b := pair(t)
	for _, n := range []int{255, 1000} {
		mu.Lock()
		perEntry = perEntry[:0]
		mu.Unlock()
		fds := make([]int, n)
		inodes := make([]uint64, n)
		for i := range fds {
			fds[i] = pipeWith(t, "")
			inodes[i] = inode(t, fds[i])
		}
		ch, err := a.SendChan(fds, []byte(fmt.Sprint(n)))
		if err != nil {
			t.Fatal(err)
		}
		m, err := b.Recv(deadline())
		if err != nil {
			t.Fatal(err)
		}
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
		if len(m.FDs) != n || string(m.Data) != fmt.Sprint(n) {
			t.Fatalf("got %d descriptors, data %q; want %d", len(m.FDs), m.Data, n)
		}
		for i, fd := range m.FDs {
			if inode(t, fd) != inodes[i] {
				t.Fatalf("descriptor %d of %d is out of order", i, n)
			}
		}
		m.Close()
		mu.Lock()
		total := 0
		for _, k := range perEntry {
			if k > MaxFDsPerSendmsg {
				t.Errorf("a sendmsg entry carried %d descriptors", k)
			}
			total += k
		}
		if total != n || len(perEntry) != chunkCount(n) {
			t.Errorf("%d descriptors went in %d entries %v", n, len(perEntry), perEntry)
		}
		mu.Unlock()
	}
	// The kernel itself refuses 254 in one sendmsg (EINVAL).
	s1, s2, err := Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	defer s2.Close()
	many := make([]int, MaxFDsPerSendmsg+1) // descriptor 0, 254 times
	if _, _, err := s1.WriteMsgUnix([]byte{0}, unix.UnixRights(many...), nil); !errors.Is(err, unix.EINVAL) {
		t.Errorf("254 descriptors in one sendmsg: %v, want EINVAL", err)
	}
}

// rawPeer returns a Passer and the raw other end of its socket, for
// crafting wire bytes with unix.Sendmsg.
func rawPeer(t *testing.T, opts ...Option) (*Passer, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := fdConn(fds[0], "test")
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(conn, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(); unix.Close(fds[1]) })
	return p, fds[1]
}

func header(flags byte, nfds, dlen int) []byte {
	b := make([]byte, headerSize)
	putHeader(b, flags, nfds, dlen)
	return b
}

// sendRaw sends b with n fresh pipe descriptors attached, closing our
// copies after the call.
func sendRaw(t *testing.T, sock int, b []byte, n int) {
	t.Helper()
	var oob []byte
	var fds []int
	for i := 0; i < n; i++ {
		fds = append(fds, pipeWith(t, "x"))
	}
	if n > 0 {
		oob = unix.UnixRights(fds...)
	}
	err := unix.Sendmsg(sock, b, oob, nil, 0)
	for _, fd := range fds {
		unix.Close(fd)
	}
	// EPIPE: the passer already failed on earlier bytes and closed.
	if err != nil && err != unix.EPIPE {
		t.Fatal(err)
	}
}

// TestProtocolErrors: crafted streams fail the passer with a
// *ProtocolError, and every descriptor that arrived is closed (the leak
// check covers both ends, which live in this process). Rows named C4 send a
// header whose declared count disagrees with the descriptors that came with
// it; rows named C5 put descriptors on a byte that no header allows them
// on; the rest break the header format, the limits or raw mode's rule of
// one 0x00 byte with exactly one descriptor.
func TestProtocolErrors(t *testing.T) {
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	type send struct {
		b   []byte
		fds int
	}
	cases := []struct {
		name       string
		mode       Mode
		sends      []send
		want, got  int
		reasonPart string
		eof        bool
	}{
		{"C4 fewer descriptors than declared", Framed, []send{{header(0, 3, 0), 2}}, 3, 2, "count does not match", false},
		{"C4 more descriptors than declared", Framed, []send{{header(0, 1, 0), 2}}, 1, 2, "count does not match", false},
		{"C4 declared but none arrived", Framed, []send{{header(0, 1, 0), 0}}, 1, 0, "did not arrive", false},
		{"C5 descriptors on a data byte", Framed, []send{{header(0, 0, 4), 0}, {[]byte("data"), 1}}, 0, 1, "no header declares", false},
		{"C5 descriptors on a header declaring none", Framed, []send{{header(0, 0, 0), 2}}, 0, 2, "no header declares", false},
		{"C5 descriptors on two headers declaring none", Framed, []send{{cat(header(0, 0, 0), header(0, 0, 0)), 1}}, 0, 1, "no header declares", false},
		{"C4 one header's descriptors split over two sendmsg", Framed, []send{{header(0, 2, 0)[:1], 1}, {header(0, 2, 0)[1:], 1}}, 2, 1, "count does not match", false},
		{"bad magic", Framed, []send{{[]byte{0xAB, 0x10, 0, 0, 0, 0, 0, 0}, 0}}, 0, 0, "bad magic", false},
		{"raw peer on a framed passer", Framed, []send{{[]byte{0}, 1}}, 0, 0, "raw FDpasser", true},
		{"bad version", Framed, []send{{[]byte{0xFD, 0x20, 0, 0, 0, 0, 0, 0}, 0}}, 0, 0, "version", false},
		{"unknown flag", Framed, []send{{[]byte{0xFD, 0x18, 0, 0, 0, 0, 0, 0}, 0}}, 0, 0, "flags", false},
		{"continuation without message", Framed, []send{{header(flagCont, 1, 0), 1}}, 0, 0, "continuation", false},
		{"split chunk without descriptors", Framed, []send{{header(flagMore, 0, 0), 0}}, 0, 0, "without descriptors", false},
		{"over 253 in a chunk", Framed, []send{{header(0, 254, 0), 0}}, 254, 0, "more than the kernel", false},
		{"over the message limit", Framed, []send{{header(0, 0, DefaultMaxMessageSize+1), 0}}, 0, 0, "exceeds the limit", false},
		{"bundle without descriptors", Framed, []send{{cat(header(flagBundle, 0, 8), header(0, 0, 0)), 0}}, 0, 0, "bundle without", false},
		{"bundle with an unclaimed descriptor", Framed, []send{{cat(header(flagBundle, 3, 16), header(0, 1, 0), header(0, 1, 0)), 3}}, 1, 0, "did not claim", false},
		{"bundled messages claim too many", Framed, []send{{cat(header(flagBundle, 2, 16), header(0, 1, 0), header(0, 2, 0)), 2}}, 2, 1, "more descriptors than their bundle", false},
		{"bundled message with flags", Framed, []send{{cat(header(flagBundle, 1, 8), header(flagMore, 1, 0)), 1}}, 0, 0, "bundled message with flags", false},
		{"bundled message overruns", Framed, []send{{cat(header(flagBundle, 1, 8), header(0, 1, 4), []byte("data")), 1}}, 0, 0, "overruns", false},
		{"bundle count mismatch", Framed, []send{{cat(header(flagBundle, 2, 16), header(0, 1, 0), header(0, 1, 0)), 1}}, 2, 1, "count does not match", false},
		{"bundle inside a split message", Framed, []send{{header(flagMore, 1, 0), 1}, {cat(header(flagBundle, 1, 8), header(0, 1, 0)), 1}}, 0, 0, "continuation", false},
		{"raw byte without descriptor", Raw, []send{{[]byte{0}, 0}}, 1, 0, "exactly one", false},
		{"raw byte with two descriptors", Raw, []send{{[]byte{0}, 2}}, 1, 2, "exactly one", false},
		{"raw byte glued to the next", Raw, []send{{[]byte{0}, 0}, {[]byte{0}, 1}}, 0, 0, "", false},
		{"raw nonzero byte", Raw, []send{{[]byte{7}, 1}}, 0, 0, "0x07", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			leakcheck.Check(t)
			p, sock := rawPeer(t, WithMode(tc.mode))
			for _, s := range tc.sends {
				sendRaw(t, sock, s.b, s.fds)
			}
			_, err := p.Recv(deadline())
			var pe *ProtocolError
			if !errors.As(err, &pe) || !errors.Is(err, ErrProtocol) {
				t.Fatalf("got %v, want a *ProtocolError", err)
			}
			if !strings.Contains(pe.Reason, tc.reasonPart) {
				t.Errorf("reason %q does not mention %q", pe.Reason, tc.reasonPart)
			}
			if tc.want != 0 || tc.got != 0 {
				if pe.Want != tc.want || pe.Got != tc.got {
					t.Errorf("counts declared %d arrived %d, want %d and %d", pe.Want, pe.Got, tc.want, tc.got)
				}
			}
			fd := pipeWith(t, "")
			if err := p.SendFDs([]int{fd}, nil, nil); !errors.Is(err, ErrProtocol) {
				t.Errorf("send after a protocol error: %v", err)
			}
			unix.Close(fd) // not taken: the send failed
		})
	}
	t.Run("EOF inside a message", func(t *testing.T) {
		leakcheck.Check(t)
		p, sock := rawPeer(t)
		sendRaw(t, sock, header(0, 1, 10), 1)
		unix.Shutdown(sock, unix.SHUT_WR)
		if _, err := p.Recv(deadline()); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
		}
	})
	t.Run("valid split message crafted by hand", func(t *testing.T) {
		leakcheck.Check(t)
		p, sock := rawPeer(t)
		sendRaw(t, sock, cat(header(flagMore, 2, 3), []byte("abc")), 2)
		sendRaw(t, sock, header(flagCont, 1, 0), 1)
		m, err := p.Recv(deadline())
		if err != nil || string(m.Data) != "abc" || len(m.FDs) != 3 {
			t.Fatalf("got %q with %d fds, %v", m.Data, len(m.FDs), err)
		}
		m.Close()
	})
	t.Run("valid bundle crafted by hand", func(t *testing.T) {
		leakcheck.Check(t)
		p, sock := rawPeer(t)
		body := cat(header(0, 2, 2), []byte("m1"), header(0, 0, 0), header(0, 1, 2), []byte("m3"))
		sendRaw(t, sock, cat(header(flagBundle, 3, len(body)), body, header(0, 0, 2), []byte("m4")), 3)
		for i, want := range []struct {
			data string
			fds  int
		}{{"m1", 2}, {"", 0}, {"m3", 1}, {"m4", 0}} {
			m, err := p.Recv(deadline())
			if err != nil || string(m.Data) != want.data || len(m.FDs) != want.fds {
				t.Fatalf("message %d: %q with %d fds, %v", i, m.Data, len(m.FDs), err)
			}
			m.Close()
		}
	})
}

// shortSendmmsg sends through the real syscall but, on every other call,
// only some entries, the last of them cut to about half its bytes: a
// short entry at the end, where the kernel's sendmmsg stops, or a single
// short sendmsg, which a stream socket may also return.
func shortSendmmsg() func(int, []mmsghdr, int) (int, error) {
	calls := 0
	return func(fd int, msgs []mmsghdr, flags int) (int, error) {
		calls++
		if calls%2 == 0 {
			return sendmmsg(fd, msgs, flags)
		}
		m := min(len(msgs), 1+calls%3)
		local := make([]mmsghdr, m)
		copy(local, msgs[:m])
		last := &local[m-1]
		iovs := unsafe.Slice(last.Hdr.Iov, last.Hdr.Iovlen)
		total := 0
		for _, v := range iovs {
			total += int(v.Len)
		}
		cut := total / 2
		if cut > 0 {
			cp := make([]unix.Iovec, 0, len(iovs))
			left := cut
			for _, v := range iovs {
				if left == 0 {
					break
				}
				l := min(int(v.Len), left)
				v.SetLen(l)
				cp = append(cp, v)
				left -= l
			}
			last.Hdr.Iov = &cp[0]
			last.Hdr.SetIovlen(len(cp))
		}
		n, err := sendmmsg(fd, local, flags)
		for i := 0; i < n; i++ {
			msgs[i].Len = local[i].Len
		}
		runtime.KeepAlive(local)
		return n, err
	}
}

// TestShortWrites: partial entries are completed without their control
// data (it went with their first byte); every message and descriptor
// arrives once.
func TestShortWrites(t *testing.T) {
	leakcheck.Check(t)
	swapSendmmsg(t, shortSendmmsg())
	a, b := pair(t)
	const n = 300
	totalFDs := 0
	for i := 0; i < n; i++ {
		data := []byte(strings.Repeat(strconv.Itoa(i%10), (i*37)%3000))
		var fds []int
		for k := 0; k < i%4; k++ {
			fds = append(fds, pipeWith(t, fmt.Sprintf("%d.%d", i, k)))
		}
		totalFDs += len(fds)
		if err := a.SendFDs(fds, data, nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		m, err := b.Recv(deadline())
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if want := strings.Repeat(strconv.Itoa(i%10), (i*37)%3000); string(m.Data) != want {
			t.Fatalf("message %d: %d data bytes, want %d", i, len(m.Data), len(want))
		}
		var want []string
		for k := 0; k < i%4; k++ {
			want = append(want, fmt.Sprintf("%d.%d", i, k))
		}
		checkContents(t, &m, want...)
	}
	if got := b.Stats().FDsReceived; got != uint64(totalFDs) {
		t.Errorf("received %d descriptors, sent %d", got, totalFDs)
	}
}

// TestBackpressureSeam: ETOOMANYREFS (the sender has more descriptors in
// flight than its RLIMIT_NOFILE allows) keeps the batch queued and
// retries; past BackpressureTimeout the passer fails and every queued
// descriptor is closed.
func TestBackpressureSeam(t *testing.T) {
	leakcheck.Check(t)
	var refuse atomic.Int32
	swapSendmmsg(t, func(fd int, msgs []mmsghdr, flags int) (int, error) {
		if refuse.Add(-1) >= 0 {
			return 0, unix.ETOOMANYREFS
		}
		return sendmmsg(fd, msgs, flags)
	})
	refuse.Store(5)
	a, b := pair(t)
	ch, err := a.SendChan([]int{pipeWith(t, "late")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := b.Recv(deadline())
	if err != nil {
		t.Fatal(err)
	}
	checkContents(t, &m, "late")
	if err := <-ch; err != nil {
		t.Fatal(err)
	}
	if st := a.Stats(); st.Backpressure != 5 {
		t.Errorf("Backpressure = %d, want 5", st.Backpressure)
	}
	a.Close()
	b.Close()

	refuse.Store(1 << 30)
	c, _ := pair(t, BackpressureTimeout(100*time.Millisecond))
	ch1, _ := c.SendChan([]int{pipeWith(t, "never")}, nil)
	ch2, _ := c.SendChan([]int{pipeWith(t, "never")}, nil)
	for _, ch := range []<-chan error{ch1, ch2} {
		if err := <-ch; !errors.Is(err, ErrBackpressure) {
			t.Errorf("got %v, want ErrBackpressure", err)
		}
	}
	refuse.Store(0)
}

func init() {
	// tmr-sender: as an unprivileged user with a low RLIMIT_NOFILE, send
	// one descriptor many times while the parent does not read, until the
	// kernel answers ETOOMANYREFS; then let the parent drain.
	helpers["tmr-sender"] = func() error {
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 64, Max: 64}); err != nil {
			return err
		}
		p, err := FromEnv(KeepOpen())
		if err != nil {
			return err
		}
		defer p.Close()
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		n, _ := strconv.Atoi(helperArgs()[0])
		var wg sync.WaitGroup
		var failed atomic.Int32
		wg.Add(n)
		for i := 0; i < n; i++ {
			err := p.SendFDs([]int{fd}, []byte(strconv.Itoa(i)), func(err error) {
				if err != nil {
					failed.Add(1)
				}
				wg.Done()
			})
			if err != nil {
				return err
			}
		}
		for end := time.Now().Add(20 * time.Second); p.Stats().Backpressure == 0; {
			if time.Now().After(end) {
				return errors.New("no ETOOMANYREFS within 20 s")
			}
			time.Sleep(time.Millisecond)
		}
		fmt.Println("stalled")
		wg.Wait()
		fmt.Printf("done failed %d\n", failed.Load())
		return p.Shutdown(context.Background())
	}
}

// TestBackpressureUID: the real kernel limit, not a seam. An unprivileged
// sender (root is exempt) hits ETOOMANYREFS once 64 descriptors are in
// flight; the passer keeps them queued and everything arrives in order once
// the receiver drains.
func TestBackpressureUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the sender as uid 65534")
	}
	leakcheck.Check(t)
	dir, err := os.MkdirTemp("", "pk")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "fdpass.test")
	if err := copyFile(os.Args[0], bin); err != nil {
		t.Fatal(err)
	}
	const n = 200
	cmd := helperCmd(t, "tmr-sender", strconv.Itoa(n))
	cmd.Path, cmd.Args[0] = bin, bin
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	// Our reader pauses after one unclaimed message, so the kernel keeps
	// the rest in flight and the sender's count reaches its limit.
	c := startChild(t, cmd, MaxUnclaimedFDs(1))
	c.expect("stalled")
	for i := 0; i < n; i++ {
		m, err := c.p.Recv(deadline())
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if string(m.Data) != strconv.Itoa(i) || len(m.FDs) != 1 {
			t.Fatalf("message %d: %q with %d fds", i, m.Data, len(m.FDs))
		}
		m.Close()
	}
	if got := c.expect("done"); got != "failed 0" {
		t.Errorf("sender: %s", got)
	}
	c.wait()
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// dropLastFD is a recvmsg seam that, when drop says so, plays a kernel
// that could install all but the last descriptor: it closes that one,
// shortens the control message and sets MSG_CTRUNC. It reports whether
// it dropped one.
func dropLastFD(msg *unix.Msghdr) bool {
	if msg.Controllen == 0 {
		return false
	}
	ctrl := unsafe.Slice(msg.Control, msg.Controllen)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[0]))
	nfds := (int(h.Len) - unix.CmsgLen(0)) / 4
	if nfds < 1 {
		return false
	}
	last := unix.CmsgLen(4 * (nfds - 1))
	unix.Close(int(*(*int32)(unsafe.Pointer(&ctrl[last]))))
	h.SetLen(unix.CmsgLen(4 * (nfds - 1)))
	msg.SetControllen(unix.CmsgSpace(4 * (nfds - 1)))
	msg.Flags |= unix.MSG_CTRUNC
	return true
}

// TestTruncationSeam: MSG_CTRUNC on every receive
// (as a security module refusing descriptors would cause) fails each
// message with the counts, closes what arrived, and does not busy-loop;
// in a bundle only the messages that lost descriptors fail;
// StrictTruncation fails the passer instead.
func TestTruncationSeam(t *testing.T) {
	leakcheck.Check(t)
	swapRecvmsg(t, func(fd int, msg *unix.Msghdr, flags int) (int, error) {
		n, err := recvmsg(fd, msg, flags)
		if err == nil {
			dropLastFD(msg)
		}
		return n, err
	})
	a, b := pair(t, NoBundles())
	const n = 20
	for i := 0; i < n; i++ {
		a.SendFDs([]int{pipeWith(t, "a"), pipeWith(t, "b"), pipeWith(t, "c")}, []byte(strconv.Itoa(i)), nil)
	}
	a.SendFDs(nil, []byte("plain"), nil)
	for i := 0; i < n; i++ {
		m, err := b.Recv(deadline())
		var te *TruncatedError
		if !errors.As(err, &te) || te.Want != 3 || te.Got != 2 || string(m.Data) != strconv.Itoa(i) || len(m.FDs) != 0 {
			m.Close()
			t.Fatalf("message %d: %q, %d fds, %v; want *TruncatedError{3, 2}", i, m.Data, len(m.FDs), err)
		}
	}
	if m, err := b.Recv(deadline()); err != nil || string(m.Data) != "plain" {
		t.Fatalf("after truncations: %q, %v", m.Data, err)
	}
	if st := b.Stats(); st.RecvCalls > 2*n+2 || st.Truncated != n {
		t.Errorf("%d receives, %d truncated for %d messages", st.RecvCalls, st.Truncated, n)
	}
	a.Close()
	b.Close()

	// A bundle of five two-descriptor messages loses its last descriptor:
	// four messages arrive whole, the fifth is truncated.
	c, d := pair(t)
	entered, release := make(chan struct{}), make(chan struct{})
	c.SendFDs(nil, nil, func(error) { close(entered); <-release })
	<-entered // the writer waits, so the next five queue up and bundle
	for i := 0; i < 5; i++ {
		c.SendFDs([]int{pipeWith(t, "x"), pipeWith(t, "y")}, []byte(strconv.Itoa(i)), nil)
	}
	close(release)
	if m, err := d.Recv(deadline()); err != nil || len(m.Data) != 0 {
		t.Fatalf("first message: %v", err)
	}
	for i := 0; i < 5; i++ {
		m, err := d.Recv(deadline())
		var te *TruncatedError
		switch {
		case i < 4 && err == nil && len(m.FDs) == 2:
			checkContents(t, &m, "x", "y")
		case i == 4 && errors.As(err, &te) && te.Want == 2 && te.Got == 1 && len(m.FDs) == 0:
		default:
			m.Close()
			t.Fatalf("bundled message %d: %d fds, %v", i, len(m.FDs), err)
		}
	}
	if st := d.Stats(); st.RecvCalls > 2 {
		t.Errorf("%d receives for a plain message and a bundle", st.RecvCalls)
	}
	c.Close()
	d.Close()

	e, f := pair(t, StrictTruncation(), NoBundles())
	e.SendFDs([]int{pipeWith(t, "a"), pipeWith(t, "b")}, nil, nil)
	e.SendFDs([]int{pipeWith(t, "a")}, nil, nil)
	if _, err := f.Recv(deadline()); !errors.Is(err, ErrTruncated) {
		t.Fatalf("strict: %v", err)
	}
	if err := f.SendFDs(nil, nil, nil); !errors.Is(err, ErrTruncated) {
		t.Errorf("strict truncation did not fail the passer: %v", err)
	}
}

// TestControlMessages: credentials, a pidfd and an unknown control message
// beside SCM_RIGHTS (what SO_PASSCRED and SO_PASSPIDFD add); the pidfd is
// closed, the message gets exactly its own descriptors. A malformed
// cmsg_len is a protocol error.
func TestControlMessages(t *testing.T) {
	leakcheck.Check(t)
	var malformed atomic.Bool
	swapRecvmsg(t, func(fd int, msg *unix.Msghdr, flags int) (int, error) {
		n, err := recvmsg(fd, msg, flags)
		if err != nil || n == 0 {
			return n, err
		}
		ctrl := unsafe.Slice(msg.Control, controlBufferSize)
		off := cmsgAlignTo(int(msg.Controllen))
		put := func(level, typ int32, data []byte, bogusLen int) {
			h := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[off]))
			h.Level, h.Type = level, typ
			h.SetLen(unix.CmsgLen(len(data)))
			if bogusLen > 0 {
				h.SetLen(bogusLen)
			}
			copy(ctrl[off+unix.CmsgLen(0):], data)
			off += unix.CmsgSpace(len(data))
		}
		put(unix.SOL_SOCKET, unix.SCM_CREDENTIALS, make([]byte, 12), 0)
		pidfd := pipeWith(t, "")
		var b [4]byte
		*(*int32)(unsafe.Pointer(&b[0])) = int32(pidfd)
		put(unix.SOL_SOCKET, unix.SCM_PIDFD, b[:], 0)
		put(999, 1, []byte{1, 2, 3, 4}, 0)
		if malformed.Load() {
			put(unix.SOL_SOCKET, 77, []byte{0, 0, 0, 0}, 4096)
		}
		msg.SetControllen(off)
		return n, err
	})
	a, b := pair(t)
	for i := 0; i < 5; i++ {
		a.SendFDs([]int{pipeWith(t, "own")}, nil, nil)
		m, err := b.Recv(deadline())
		if err != nil {
			t.Fatal(err)
		}
		checkContents(t, &m, "own")
	}
	a.Close()
	b.Close()
	malformed.Store(true)
	c, d := pair(t)
	c.SendFDs([]int{pipeWith(t, "own")}, nil, nil)
	if _, err := d.Recv(deadline()); !errors.Is(err, ErrProtocol) {
		t.Fatalf("malformed cmsg_len: %v, want a protocol error", err)
	}
}

// TestFullTableSeam: when re-taking the spare slot fails with EMFILE the
// reader pauses and retries, and no message is lost.
func TestFullTableSeam(t *testing.T) {
	leakcheck.Check(t)
	var orig, fails atomic.Int32
	orig.Store(-2)
	old := sysDup
	sysDup = func(fd int) (int, error) {
		if int32(fd) == orig.Load() && fails.Add(-1) >= 0 {
			return -1, unix.EMFILE
		}
		return dupCloexec(fd)
	}
	t.Cleanup(func() { sysDup = old })
	a, b := pair(t)
	orig.Store(int32(b.r.res.orig))
	fails.Store(2)
	for i := 0; i < 5; i++ {
		a.SendFDs([]int{pipeWith(t, strconv.Itoa(i))}, nil, nil)
	}
	for i := 0; i < 5; i++ {
		m, err := b.Recv(deadline())
		if err != nil {
			t.Fatal(err)
		}
		checkContents(t, &m, strconv.Itoa(i))
	}
	if st := b.Stats(); st.TablePauses == 0 {
		t.Error("no table pause recorded")
	}
}

// TestGCStress: files whose only reference is the queue survive until
// sendmsg returns, with collections running all the time (a finalizer that
// closed a file mid-send would make sendmsg fail with EBADF).
func TestGCStress(t *testing.T) {
	leakcheck.Check(t)
	a, b := pair(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				runtime.GC()
			}
		}
	}()
	const n = 300
	var sendErrs atomic.Int32
	for i := 0; i < n; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		w.WriteString(strconv.Itoa(i))
		w.Close()
		if err := a.Send([]*os.File{r}, nil, func(err error) {
			if err != nil {
				sendErrs.Add(1)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		m, err := b.Recv(deadline())
		if err != nil {
			t.Fatal(err)
		}
		checkContents(t, &m, strconv.Itoa(i))
	}
	close(stop)
	wg.Wait()
	if sendErrs.Load() != 0 {
		t.Errorf("%d sends failed", sendErrs.Load())
	}
}

// TestConcurrentSenders: per-sender order holds with many goroutines
// sending at once, and each descriptor arrives with its own message.
func TestConcurrentSenders(t *testing.T) {
	leakcheck.Check(t)
	a, b := pair(t)
	const senders, per = 8, 250
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				tag := fmt.Sprintf("%d:%d", s, i)
				if err := a.SendFDs([]int{pipeWith(t, tag)}, []byte(tag), nil); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	next := make([]int, senders)
	for i := 0; i < senders*per; i++ {
		m, err := b.Recv(deadline())
		if err != nil {
			t.Fatal(err)
		}
		var s, seq int
		fmt.Sscanf(string(m.Data), "%d:%d", &s, &seq)
		if seq != next[s] {
			t.Fatalf("sender %d: got sequence %d, want %d", s, seq, next[s])
		}
		next[s]++
		checkContents(t, &m, string(m.Data))
	}
	wg.Wait()
}

package fdpass

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pktipc/pktipc/internal/leakcheck"
	"golang.org/x/sys/unix"
)

func pair(t *testing.T, opts ...Option) (*Passer, *Passer) {
	t.Helper()
	a, b, err := Pair(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// checkContents reads every descriptor of m (pipes) and compares with want,
// then closes them.
func checkContents(t *testing.T, m *Message, want ...string) {
	t.Helper()
	if len(m.FDs) != len(want) {
		t.Fatalf("got %d descriptors, want %d", len(m.FDs), len(want))
	}
	for i, fd := range m.FDs {
		got, err := readFD(fd)
		if err != nil || got != want[i] {
			t.Errorf("descriptor %d: read %q, %v; want %q", i, got, err, want[i])
		}
	}
	if err := m.Close(); err != nil {
		t.Error(err)
	}
}

// TestRecvTimeoutsDoNotAccumulate: receives that give up at their deadline
// leave the waiting queue bounded, also behind a receiver that waits
// without one; the messages that come later go, in order, to the waiters
// still there.
func TestRecvTimeoutsDoNotAccumulate(t *testing.T) {
	a, b := pair(t)
	long := make(chan error, 1)
	var lm Message
	go func() { long <- b.RecvInto(time.Time{}, &lm) }()
	waitQueued := func(n int) {
		t.Helper()
		for start := time.Now(); ; time.Sleep(time.Millisecond) {
			b.mu.Lock()
			got := b.consumers.len() - b.cancelled
			b.mu.Unlock()
			if got == n {
				return
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("%d receivers waiting, want %d", got, n)
			}
		}
	}
	waitQueued(1)
	var m Message
	for i := range 10_000 {
		past := time.Now().Add(-time.Second)
		if i%2 == 1 {
			past = time.Now().Add(time.Microsecond)
		}
		if err := b.RecvInto(past, &m); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("receive %d: %v, want a deadline error", i, err)
		}
	}
	b.mu.Lock()
	queued, cancelled := b.consumers.len(), b.cancelled
	b.mu.Unlock()
	if queued > 3 || cancelled > 2 {
		t.Fatalf("after 10,000 receives that gave up: %d queued, %d of them cancelled", queued, cancelled)
	}
	if err := a.Send(nil, []byte("first"), nil); err != nil {
		t.Fatal(err)
	}
	if err := <-long; err != nil || string(lm.Data) != "first" {
		t.Fatalf("the receiver without a deadline got %q, %v", lm.Data, err)
	}
}

func TestFramedRoundTrip(t *testing.T) {
	leakcheck.Check(t)
	a, b := pair(t)
	sizes := []int{0, 1, 255, 256, 257, 100000}
	for i, size := range sizes {
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(i + j)
		}
		var fds []int
		var want []string
		for k := 0; k < i; k++ {
			s := fmt.Sprintf("m%d-f%d", i, k)
			fds = append(fds, pipeWith(t, s))
			want = append(want, s)
		}
		ch, err := a.SendChan(fds, data)
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
		if string(m.Data) != string(data) {
			t.Fatalf("message %d: data mismatch (%d bytes, want %d)", i, len(m.Data), size)
		}
		for _, fd := range m.FDs {
			if !isCloexec(fd) {
				t.Errorf("received descriptor %d is not close-on-exec (C11)", fd)
			}
		}
		checkContents(t, &m, want...)
	}
	// Sent descriptors were owned and closed by the sender.
	st := a.Stats()
	if st.FDsSent != 15 {
		t.Errorf("FDsSent = %d, want 15", st.FDsSent)
	}
}

func TestRawRoundTrip(t *testing.T) {
	leakcheck.Check(t)
	a, b := pair(t, WithMode(Raw))
	if err := a.SendFDs(nil, nil, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty raw send: %v, want ErrInvalid", err)
	}
	if err := a.SendFDs([]int{0}, []byte("x"), nil); !errors.Is(err, ErrRawData) {
		t.Errorf("raw send with data: %v, want ErrRawData", err)
	}
	var fds []int
	for i := 0; i < 100; i++ {
		fds = append(fds, pipeWith(t, strconv.Itoa(i)))
	}
	ch, err := a.SendChan(fds, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		m, err := b.Recv(deadline())
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Data) != 0 {
			t.Errorf("raw message data %q", m.Data)
		}
		checkContents(t, &m, strconv.Itoa(i))
	}
	if err := <-ch; err != nil {
		t.Fatal(err)
	}
	if st := a.Stats(); st.SendCalls >= 100 || st.SendEntries != 100 {
		t.Errorf("raw sends: %d sendmmsg calls for %d entries; want entries=100 in fewer calls", st.SendCalls, st.SendEntries)
	}
}

// TestBatching checks that queued messages are coalesced: many one-fd
// messages go out in few sendmmsg calls, and descriptor-less messages
// share entries.
func TestBatching(t *testing.T) {
	leakcheck.Check(t)
	a, b := pair(t, KeepOpen())
	fd := pipeWith(t, "")
	defer unix.Close(fd)
	const n = 640
	var wg sync.WaitGroup
	wg.Add(n)
	done := func(err error) {
		if err != nil {
			t.Error(err)
		}
		wg.Done()
	}
	for i := 0; i < n; i++ {
		var fds []int
		if i%2 == 0 {
			fds = []int{fd}
		}
		if err := a.SendFDs(fds, []byte{byte(i)}, done); err != nil {
			t.Fatal(err)
		}
	}
	var m Message
	for i := 0; i < n; i++ {
		if err := b.RecvInto(deadline(), &m); err != nil {
			t.Fatal(err)
		}
		if len(m.Data) != 1 || m.Data[0] != byte(i) || len(m.FDs) != (1-i%2) {
			t.Fatalf("message %d: data %v, %d fds", i, m.Data, len(m.FDs))
		}
		m.Close()
	}
	wg.Wait()
	st := a.Stats()
	t.Logf("%d messages: %d sendmmsg calls, %d entries", n, st.SendCalls, st.SendEntries)
	if st.SendEntries > n/2+st.SendCalls {
		t.Errorf("descriptor-less messages did not share entries: %d entries", st.SendEntries)
	}
}

func TestSendErrors(t *testing.T) {
	leakcheck.Check(t)
	a, _ := pair(t, MaxQueue(2), MaxMessageSize(10), MaxFDsPerMessage(2))
	if err := a.SendFDs([]int{-1}, nil, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative fd: %v", err)
	}
	if err := a.SendFDs([]int{a.sockfd}, nil, nil); !errors.Is(err, ErrSelfPass) {
		t.Errorf("own socket: %v, want ErrSelfPass (C9)", err)
	}
	if err := a.SendFDs(nil, make([]byte, 11), nil); !errors.Is(err, ErrTooLarge) {
		t.Errorf("11 bytes: %v, want ErrTooLarge", err)
	}
	if err := a.SendFDs([]int{0, 1, 2}, nil, nil); !errors.Is(err, ErrTooLarge) {
		t.Errorf("3 fds: %v, want ErrTooLarge", err)
	}
	if err := a.Send([]*os.File{nil}, nil, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil file: %v", err)
	}
	// Hold the writer in the first completion so later sends stay queued.
	entered, release := make(chan struct{}), make(chan struct{})
	if err := a.SendFDs(nil, nil, func(error) { close(entered); <-release }); err != nil {
		t.Fatal(err)
	}
	<-entered
	for i := 0; i < 2; i++ {
		if err := a.SendFDs(nil, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.SendFDs(nil, nil, nil); !errors.Is(err, ErrQueueFull) {
		t.Errorf("full queue: %v, want ErrQueueFull", err)
	}
	close(release)
	for _, o := range []Option{MaxQueue(0), MaxFDsPerMessage(0), MaxFDsPerMessage(maxFDsPerMessageLimit + 1), ReserveFDs(-1), WithMode(7), WithLogger(nil), MaxUnclaimedAge(-1)} {
		c1, c2, err := Socketpair()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := New(c1, o); !errors.Is(err, ErrInvalid) {
			t.Errorf("bad option: %v, want ErrInvalid", err)
		}
		c1.Close()
		c2.Close()
	}
}

// TestCloseFailsEverything: queued sends and pending receivers get
// ErrClosed, owned queued descriptors and unclaimed received ones are
// closed (the leak check), later calls fail.
func TestCloseFailsEverything(t *testing.T) {
	leakcheck.Check(t)
	a, b := pair(t, MaxUnclaimedBytes(1))
	// b stops reading after one unclaimed message, so a's socket buffer
	// fills and later messages stay queued in a.
	const n = 5
	results := make([]<-chan error, n)
	for i := range results {
		ch, err := a.SendChan([]int{pipeWith(t, "x")}, make([]byte, 1<<20))
		if err != nil {
			t.Fatal(err)
		}
		results[i] = ch
	}
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.recvq.len() == 1 && b.readerPaused })
	// Pending receivers on a.
	rerr := make(chan error, 1)
	go func() { _, err := a.Recv(time.Time{}); rerr <- err }()
	cbErr := make(chan error, 1)
	a.RecvFunc(func(m *Message, err error) { cbErr <- err })
	waitFor(t, func() bool { a.mu.Lock(); defer a.mu.Unlock(); return a.consumers.len() == 2 })
	a.Close()
	b.Close()
	for _, ch := range []chan error{rerr, cbErr} {
		if err := <-ch; !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
			t.Errorf("pending receiver got %v, want ErrClosed", err)
		}
	}
	if err := <-results[0]; err != nil {
		t.Errorf("first message: %v", err)
	}
	if err := <-results[n-1]; !errors.Is(err, ErrClosed) {
		t.Errorf("queued message: %v, want ErrClosed", err)
	}
	if err := a.SendFDs(nil, nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("send after close: %v", err)
	}
	if _, err := b.Recv(time.Time{}); !errors.Is(err, ErrClosed) {
		t.Errorf("recv after close: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	end := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(end) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRecvDeadlineAndEOF(t *testing.T) {
	leakcheck.Check(t)
	a, b := pair(t)
	_, err := b.Recv(time.Now().Add(20 * time.Millisecond))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want os.ErrDeadlineExceeded", err)
	}
	if _, err := b.Recv(time.Now().Add(-time.Second)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("past deadline: %v", err)
	}
	// A message queued before the peer's close is still delivered, then EOF.
	if err := a.SendFDs(nil, []byte("last"), nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	m, err := b.Recv(deadline())
	if err != nil || string(m.Data) != "last" {
		t.Fatalf("got %q, %v", m.Data, err)
	}
	if _, err := b.Recv(deadline()); err != io.EOF {
		t.Fatalf("after peer close: %v, want io.EOF", err)
	}
}

// TestReceiveOrder: blocking receivers and RecvFunc callbacks are served
// in the order they asked; the OnRecv handler takes the rest and hears the
// terminal error once.
func TestReceiveOrder(t *testing.T) {
	leakcheck.Check(t)
	a, b := pair(t)
	var mu sync.Mutex
	var order []string
	record := func(who string) func(*Message, error) {
		return func(m *Message, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				order = append(order, who+":"+err.Error())
				return
			}
			order = append(order, who+"="+string(m.Data))
		}
	}
	b.RecvFunc(record("cb1"))
	b.RecvFunc(record("cb2"))
	waiter := make(chan string, 1)
	go func() {
		m, err := b.Recv(deadline())
		if err != nil {
			waiter <- err.Error()
			return
		}
		waiter <- string(m.Data)
	}()
	// Wait until the waiter is queued behind the callbacks.
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.consumers.len() == 3 })
	for i := 0; i < 5; i++ {
		a.SendFDs(nil, []byte(strconv.Itoa(i)), nil)
	}
	if got := <-waiter; got != "2" {
		t.Errorf("blocking receiver got %q, want the third message", got)
	}
	b.OnRecv(record("h"))
	a.Close()
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == 5 })
	mu.Lock()
	defer mu.Unlock()
	want := []string{"cb1=0", "cb2=1", "h=3", "h=4", "h:" + io.EOF.Error()}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Errorf("order %v, want %v", order, want)
	}
}

// TestKeepOpenAndFiles: with KeepOpen the sender's descriptors stay open;
// Send with *os.File leaves a non-blocking file non-blocking (Fd is never
// called).
func TestKeepOpenAndFiles(t *testing.T) {
	leakcheck.Check(t)
	a, b := pair(t, KeepOpen())
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	ch := make(chan error, 1)
	if err := a.Send([]*os.File{r}, nil, func(err error) { ch <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-ch; err != nil {
		t.Fatal(err)
	}
	m, err := b.Recv(deadline())
	if err != nil {
		t.Fatal(err)
	}
	fs := m.Files()
	defer fs[0].Close()
	w.Write([]byte("still open"))
	w.Close()
	got, _ := io.ReadAll(fs[0])
	if string(got) != "still open" {
		t.Errorf("read %q through the received copy", got)
	}
	rc, _ := r.SyscallConn()
	rc.Control(func(fd uintptr) {
		fl, _ := unix.FcntlInt(fd, unix.F_GETFL, 0)
		if fl&unix.O_NONBLOCK == 0 {
			t.Error("sending an *os.File made it blocking")
		}
	})
}

// TestUnclaimedLimits: reading pauses at MaxUnclaimedFDs (the kernel keeps
// the rest) and resumes as messages are claimed; an unclaimed message older
// than MaxUnclaimedAge fails the passer and its descriptors are closed.
func TestUnclaimedLimits(t *testing.T) {
	leakcheck.Check(t)
	a, b := pair(t, MaxUnclaimedFDs(4), NoBundles())
	for i := 0; i < 10; i++ {
		if err := a.SendFDs([]int{pipeWith(t, strconv.Itoa(i))}, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return b.Stats().FDsReceived >= 4 })
	time.Sleep(30 * time.Millisecond)
	if n := b.Stats().FDsReceived; n != 4 {
		t.Errorf("received %d descriptors past the limit of 4", n)
	}
	for i := 0; i < 10; i++ {
		m, err := b.Recv(deadline())
		if err != nil {
			t.Fatal(err)
		}
		checkContents(t, &m, strconv.Itoa(i))
	}

	c, d := pair(t, MaxUnclaimedAge(50*time.Millisecond))
	if err := c.SendFDs([]int{pipeWith(t, "old")}, nil, nil); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	waitFor(t, func() bool { return d.Stats().FDsReceived == 1 })
	go func() {
		time.Sleep(300 * time.Millisecond)
		_, err := d.Recv(deadline())
		errc <- err
	}()
	if err := <-errc; !errors.Is(err, ErrUnclaimed) {
		t.Errorf("got %v, want ErrUnclaimed", err)
	}
}

func TestListenDial(t *testing.T) {
	leakcheck.Check(t)
	dir, err := os.MkdirTemp("", "pk")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "s")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); err == nil {
		t.Error("second Listen on a live path succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv := make(chan *Passer, 1)
	go func() {
		p, err := l.Accept(ctx)
		if err != nil {
			t.Error(err)
		}
		srv <- p
	}()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-srv
	if s == nil {
		t.FailNow()
	}
	defer s.Close()
	c.SendFDs([]int{pipeWith(t, "via path")}, []byte("hi"), nil)
	m, err := s.Recv(deadline())
	if err != nil {
		t.Fatal(err)
	}
	checkContents(t, &m, "via path")
	// Accept honours its context.
	short, cancel2 := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel2()
	if _, err := l.Accept(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Accept with expired context: %v", err)
	}
	// A cancelled Accept leaves the listener usable.
	go func() {
		p, err := l.Accept(ctx)
		if err != nil {
			t.Error(err)
		}
		srv <- p
	}()
	c2, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
	if s2 := <-srv; s2 != nil {
		s2.Close()
	}
	// Close does not unlink a path that now names someone else's socket.
	os.Remove(path)
	other, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	other.SetUnlinkOnClose(false)
	defer other.Close()
	l.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("Listener.Close removed a successor's socket: %v", err)
	}
}

func init() {
	// echo: receive messages and send each back unchanged (the passer owns
	// and closes the received descriptors after sending); at EOF report the
	// descriptor counts before and after.
	helpers["echo"] = func() error {
		var opts []Option
		if len(helperArgs()) > 0 && helperArgs()[0] == "raw" {
			opts = append(opts, WithMode(Raw))
		}
		// The inherited socket is consumed by the passer and closed by
		// Shutdown, so the baseline excludes it.
		before := leakcheck.CountFDs() - 1
		p, err := FromEnv(opts...)
		if err != nil {
			return err
		}
		if _, ok := os.LookupEnv(EnvFD); ok {
			return errors.New("FromEnv left the variable set")
		}
		fmt.Println("ready")
		var m Message
		n := 0
		for {
			err := p.RecvInto(time.Time{}, &m)
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			n++
			if err := p.SendFDs(m.FDs, m.Data, nil); err != nil {
				return err
			}
			m.FDs = m.FDs[:0] // the passer owns them now
		}
		if err := p.Shutdown(context.Background()); err != nil {
			return err
		}
		fmt.Printf("fds %d %d messages %d\n", before, leakcheck.CountFDs(), n)
		return nil
	}
}

// TestStartChild passes descriptors to a child started with os/exec and
// back, in both modes.
func TestStartChild(t *testing.T) {
	leakcheck.Check(t)
	for _, mode := range []Mode{Framed, Raw} {
		t.Run(mode.String(), func(t *testing.T) {
			c := startChild(t, helperCmd(t, "echo", mode.String()), WithMode(mode))
			c.expect("ready")
			for i := 0; i < 20; i++ {
				var data []byte
				if mode == Framed {
					data = []byte(strconv.Itoa(i))
				}
				if err := c.p.SendFDs([]int{pipeWith(t, "c"+strconv.Itoa(i))}, data, nil); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < 20; i++ {
				m, err := c.p.Recv(deadline())
				if err != nil {
					t.Fatal(err)
				}
				if mode == Framed && string(m.Data) != strconv.Itoa(i) {
					t.Errorf("echo %d: data %q", i, m.Data)
				}
				checkContents(t, &m, "c"+strconv.Itoa(i))
			}
			c.p.Shutdown(context.Background())
			var before, after, n int
			fmt.Sscanf(c.expect("fds"), "%d %d messages %d", &before, &after, &n)
			if before != after || n != 20 {
				t.Errorf("child: fds %d before, %d after, %d messages", before, after, n)
			}
			c.wait()
		})
	}
}

// TestRefuseFDs: a socket marked with SO_PASSRIGHTS=0 (Linux 6.16+) makes
// the sender's descriptor-carrying sendmsg fail with EPERM, and the passer
// reports it to the completion.
func TestRefuseFDs(t *testing.T) {
	leakcheck.Check(t)
	c1, c2, err := Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := RefuseFDs(c2); errors.Is(err, errors.ErrUnsupported) {
		c1.Close()
		t.Skipf("kernel without SO_PASSRIGHTS (needs 6.16+): %v", err)
	} else if err != nil {
		c1.Close()
		t.Fatal(err)
	}
	p, err := New(c1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ch, err := p.SendChan([]int{pipeWith(t, "refused")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-ch; !errors.Is(err, unix.EPERM) {
		t.Errorf("send to a socket refusing descriptors: %v, want EPERM", err)
	}
}

// TestExecDoesNotInherit: a child started with os/exec does not see
// received descriptors (they are received with MSG_CMSG_CLOEXEC).
func TestExecDoesNotInherit(t *testing.T) {
	leakcheck.Check(t)
	a, b := pair(t)
	a.SendFDs([]int{pipeWith(t, "secret")}, nil, nil)
	m, err := b.Recv(deadline())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	out, err := exec.Command("ls", "/proc/self/fd").Output()
	if err != nil {
		t.Skipf("ls: %v", err)
	}
	if m.FDs[0] <= 3 {
		t.Skipf("received descriptor %d may collide with ls's own", m.FDs[0])
	}
	for _, name := range strings.Fields(string(out)) {
		if name == strconv.Itoa(m.FDs[0]) {
			t.Errorf("child inherited received descriptor %d", m.FDs[0])
		}
	}
}

// TestOwnershipMixed: with the default ownership every sent descriptor is
// closed by the passer, whether it came as an *os.File or an int, on
// recycled queue items (the leak check counts).
func TestOwnershipMixed(t *testing.T) {
	leakcheck.Check(t)
	a, b := pair(t)
	for i := 0; i < 20; i++ {
		var err error
		if i%2 == 0 {
			r, w, perr := os.Pipe()
			if perr != nil {
				t.Fatal(perr)
			}
			w.WriteString(strconv.Itoa(i))
			w.Close()
			err = a.Send([]*os.File{r}, nil, nil)
		} else {
			err = a.SendFDs([]int{pipeWith(t, strconv.Itoa(i))}, nil, nil)
		}
		if err != nil {
			t.Fatal(err)
		}
		m, err := b.Recv(deadline())
		if err != nil {
			t.Fatal(err)
		}
		checkContents(t, &m, strconv.Itoa(i))
	}
}

// TestBundles: queued small messages with descriptors share receives,
// arrive in order with their own descriptors, and mix with messages that
// cannot be bundled (large data, more than 253 descriptors, none).
func TestBundles(t *testing.T) {
	leakcheck.Check(t)
	a, b := pair(t)
	entered, release := make(chan struct{}), make(chan struct{})
	a.SendFDs(nil, nil, func(error) { close(entered); <-release })
	<-entered // hold the writer so everything below is queued together
	const n = 200
	want := make([][]string, n)
	for i := 0; i < n; i++ {
		var fds []int
		k := i % 4
		if i%50 == 49 {
			k = 260
		}
		for j := 0; j < k; j++ {
			s := fmt.Sprintf("%d.%d", i, j)
			fds = append(fds, pipeWith(t, s))
			want[i] = append(want[i], s)
		}
		data := []byte(strconv.Itoa(i))
		if i%30 == 7 {
			data = []byte(strings.Repeat("x", 1000) + strconv.Itoa(i))
		}
		if err := a.SendFDs(fds, data, nil); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	if _, err := b.Recv(deadline()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		m, err := b.Recv(deadline())
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !strings.HasSuffix(string(m.Data), strconv.Itoa(i)) {
			t.Fatalf("message %d: data %.20q", i, m.Data)
		}
		checkContents(t, &m, want[i]...)
	}
	st := b.Stats()
	t.Logf("%d messages in %d receives", n+1, st.RecvCalls)
	if st.RecvCalls > n/4 {
		t.Errorf("%d receives for %d messages: not bundled", st.RecvCalls, n+1)
	}
}

// TestSendToClosedPeer: a send after the peer closed fails with
// ErrPeerClosed, an error a caller can branch on, not only the system
// call's.
func TestSendToClosedPeer(t *testing.T) {
	leakcheck.Check(t)
	a, b := pair(t)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Recv(deadline()); err != io.EOF {
		t.Fatalf("after the peer closed: %v, want io.EOF", err)
	}
	ch, err := a.SendChan([]int{pipeWith(t, "x")}, []byte("late"))
	if err != nil {
		if !errors.Is(err, ErrPeerClosed) {
			t.Fatalf("SendChan: %v, want ErrPeerClosed", err)
		}
		return
	}
	select {
	case err := <-ch:
		if !errors.Is(err, ErrPeerClosed) || !errors.Is(err, unix.EPIPE) {
			t.Fatalf("send to a closed peer: %v, want ErrPeerClosed wrapping EPIPE", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the send never finished")
	}
	if _, err := a.SendChan(nil, []byte("later")); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("a send after the failure: %v, want ErrPeerClosed", err)
	}
}

// TestFromEnvRefusesWhatItDidNotInherit: FromEnv takes only a Unix stream
// socket inherited open across exec; a stale variable that names a
// descriptor this process opened itself (close-on-exec), another kind of
// socket, a file or nothing is refused with ErrNoEnv, and the descriptor
// is left open. The variable is gone afterwards either way.
func TestFromEnvRefusesWhatItDidNotInherit(t *testing.T) {
	leakcheck.Check(t)
	inherited := func(fd int) int { // as exec leaves an inherited descriptor
		t.Helper()
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			t.Fatal(err)
		}
		return fd
	}
	socketPair := func() [2]int {
		t.Helper()
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
		return fds
	}
	own := socketPair()
	tcp, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(tcp)
	file, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	for _, tc := range []struct {
		name  string
		value string
		fd    int // the descriptor named, which must stay open; -1: none
	}{
		{"not a number", "three", -1},
		{"closed", "999999", -1},
		{"opened here", strconv.Itoa(own[0]), own[0]},
		{"a TCP socket", strconv.Itoa(inherited(tcp)), tcp},
		{"a file", strconv.Itoa(inherited(int(file.Fd()))), int(file.Fd())},
	} {
		t.Setenv(EnvFD, tc.value)
		p, err := FromEnv()
		if p != nil {
			p.Close()
		}
		if !errors.Is(err, ErrNoEnv) {
			t.Errorf("%s: FromEnv gave %v, want ErrNoEnv", tc.name, err)
		}
		if _, ok := os.LookupEnv(EnvFD); ok {
			t.Errorf("%s: FromEnv left %s set", tc.name, EnvFD)
		}
		if _, err := unix.FcntlInt(uintptr(tc.fd), unix.F_GETFD, 0); tc.fd >= 0 && err != nil {
			t.Errorf("%s: descriptor %d closed: %v", tc.name, tc.fd, err)
		}
	}
	os.Unsetenv(EnvFD)
	if _, err := FromEnv(); !errors.Is(err, ErrNoEnv) {
		t.Errorf("no variable: %v, want ErrNoEnv", err)
	}
	// What StartChild hands over is taken.
	ok := socketPair()
	fd, err := unix.Dup(ok[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvFD, strconv.Itoa(inherited(fd)))
	p, err := FromEnv()
	if err != nil {
		unix.Close(fd)
		t.Fatalf("an inherited Unix stream socket: %v", err)
	}
	p.Close()
}

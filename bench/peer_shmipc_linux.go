//go:build amd64 || arm64

package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudwego/shmipc-go"
	"golang.org/x/sys/unix"
)

// shmipcNoLog is shmipc's log level that prints nothing (levelNoPrint,
// which it does not export), as its own benchmark sets. Some of its loggers
// write to standard output, where a child of this binary talks to its
// parent, and the client's is the benchmark's own output.
const shmipcNoLog = 5

// shmipcSlack is what shmipc's benchmark adds to the message size for its
// slices.
const shmipcSlack = 256

// shmipcConfig returns the configuration of both sides for messages of
// size payload bytes. The client's counts (it creates the mappings); the
// server takes the same so that its checks pass.
//
// From shmipc's benchmark (bench_test.go, benchmarkConfig and
// newBenchmarkClientServer):
//   - MemMapType: MemMapTypeMemFd, memfds passed over the Unix socket
//     rather than files in /dev/shm;
//   - ShareMemoryBufferCap: 256 MiB, 512 MiB for messages of 4 MiB or more;
//   - BufferSliceSizes: 70% of the buffer in slices of the message size
//     plus 256 bytes, 20% in 16 KiB and 10% in 64 KiB slices, so that a
//     whole message, with our 4-byte length, is one slice written and read
//     in place (the defaults, 8, 32 and 128 KiB slices, split a large
//     message into a chain of slices and copy it on reading);
//   - QueueCap: 65535 (default 8192), ConnectionWriteTimeout: 1s.
//
// Beyond it:
//   - InitializeTimeout: startTimeout instead of 1s. The server's handshake
//     waits while the client writes the header of every slice, more than
//     half a million of them for small messages, which can take longer on
//     a loaded machine or under the race detector.
//   - LogOutput: standard error, never standard output (see shmipcNoLog).
func shmipcConfig(size int) *shmipc.Config {
	c := shmipc.DefaultConfig()
	c.MemMapType = shmipc.MemMapTypeMemFd
	c.ShareMemoryBufferCap = 256 << 20
	if size >= 4<<20 {
		c.ShareMemoryBufferCap = 512 << 20
	}
	c.BufferSliceSizes = shmipcSlices(uint32(size) + shmipcSlack)
	c.QueueCap = 65535
	c.ConnectionWriteTimeout = time.Second
	c.InitializeTimeout = startTimeout
	c.LogOutput = os.Stderr
	return c
}

// shmipcSlices returns the benchmark's slice sizes with message-sized
// slices. shmipc returns a slice to the first list of its size, so a
// message size equal to one of the others takes that list's share.
func shmipcSlices(message uint32) []*shmipc.SizePercentPair {
	pairs := []*shmipc.SizePercentPair{{Size: message, Percent: 70}}
	for _, p := range []shmipc.SizePercentPair{{Size: 16 << 10, Percent: 20}, {Size: 64 << 10, Percent: 10}} {
		if p.Size == message {
			pairs[0].Percent += p.Percent
			continue
		}
		pairs = append(pairs, &p)
	}
	return pairs
}

// populateMemfds faults in every page of this process's shared memfd
// mappings, writable, without touching their contents
// (MADV_POPULATE_WRITE, Linux 5.14). In the shmipc children those are
// shmipc's buffer and queues. shmipc hands out the slices of a list in
// turn, so without this a run pays a page fault for every page of a
// message in each process until it has been once through the buffer, a
// cost a long-lived session has long paid and a run of a few seconds with
// large messages never stops paying.
func populateMemfds() error {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return err
	}
	for line := range strings.Lines(string(maps)) {
		// start-end perms offset dev inode path
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[5], "/memfd:") || len(f[1]) < 4 || f[1][1] != 'w' || f[1][3] != 's' {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end < start {
			return fmt.Errorf("bench: bad line in /proc/self/maps: %q", line)
		}
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_POPULATE_WRITE); errno != 0 {
			return fmt.Errorf("bench: madvise(MADV_POPULATE_WRITE) on %s: %w", f[5], errno)
		}
	}
	return nil
}

// Prepare checks that this kernel has memfd_create, which shmipc's memfd
// mappings need.
func (shmipcPeer) Prepare(context.Context, *Env) error {
	fd, err := shmipc.MemfdCreate("probe", 0)
	if err != nil {
		return &UnavailableError{Peer: "shmipc", Reason: "memfd_create failed", Err: err}
	}
	syscall.Close(fd)
	return nil
}

func serveShmipc(ctx context.Context, cfg serverConfig, s shmipcServerSettings, ready func()) error {
	shmipc.SetLogLevel(shmipcNoLog)
	l, err := listenUnix(cfg.Socket)
	if err != nil {
		return err
	}
	conf := shmipcConfig(cfg.Size)
	sink := cfg.Scenario == Stream
	var (
		mu       sync.Mutex
		sessions []*shmipc.Session
	)
	ready()
	errc := make(chan error, 1)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				errc <- err
				return
			}
			go func() {
				c := *conf // a session keeps its configuration
				sess, err := shmipc.Server(conn, &c)
				if err != nil {
					conn.Close()
					fmt.Fprintf(os.Stderr, "shmipc server: %v\n", err)
					return
				}
				mu.Lock()
				sessions = append(sessions, sess)
				mu.Unlock()
				if err := populateMemfds(); err != nil {
					fmt.Fprintf(os.Stderr, "shmipc server: %v\n", err)
				}
				for {
					st, err := sess.AcceptStream()
					if err != nil {
						return
					}
					go serveShmipcStream(st, sink, s.Corrupt)
				}
			}()
		}
	}()
	select {
	case <-ctx.Done():
		l.Close()
		<-errc
		mu.Lock()
		for _, sess := range sessions {
			sess.Close()
		}
		mu.Unlock()
		return nil
	case err := <-errc:
		return err
	}
}

// serveShmipcStream answers the messages of one stream until it ends: each
// with a copy of itself, or in a sink with an empty message.
func serveShmipcStream(st *shmipc.Stream, sink, corrupt bool) {
	defer st.Close()
	r, w := st.BufferReader(), st.BufferWriter()
	for {
		msg, err := shmipcReceive(r)
		if err != nil {
			return
		}
		if sink {
			msg = nil
		}
		out, err := w.Reserve(shmipcHeader + len(msg))
		if err != nil {
			return
		}
		binary.LittleEndian.PutUint32(out, uint32(len(msg)))
		copy(out[shmipcHeader:], msg)
		if corrupt && len(msg) > 0 {
			out[shmipcHeader] ^= 0xff
		}
		r.ReleasePreviousRead()
		if err := st.Flush(false); err != nil {
			return
		}
	}
}

// shmipcSend writes msg as one message, stamped with seq unless seq is 0,
// and flushes it to the peer.
func shmipcSend(st *shmipc.Stream, msg []byte, seq uint64) error {
	b, err := st.BufferWriter().Reserve(shmipcHeader + len(msg))
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(b, uint32(len(msg)))
	copy(b[shmipcHeader:], msg)
	if seq != 0 {
		stamp(b[shmipcHeader:], seq)
	}
	return st.Flush(false)
}

// shmipcReceive reads one message. Its payload lies in shared memory, valid
// until the reader's next release.
func shmipcReceive(r shmipc.BufferReader) ([]byte, error) {
	h, err := r.ReadBytes(shmipcHeader)
	if err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(h)
	if n > MaxSize {
		return nil, fmt.Errorf("bench: shmipc message of %d bytes", n)
	}
	return r.ReadBytes(int(n))
}

// shmipcClient is the client child's side: one SessionManager, whose
// streams are the run's clients.
type shmipcClient struct {
	sm   *shmipc.SessionManager
	sess *shmipc.Session // its one session
	// bad holds the first reply that failed its check.
	bad atomic.Pointer[error]
}

func runShmipcClient(ctx context.Context, cfg serverConfig, s clientChildSettings, _ func()) error {
	shmipc.SetLogLevel(shmipcNoLog)
	conf := shmipc.DefaultSessionManagerConfig()
	conf.Config = shmipcConfig(cfg.Size)
	conf.Network, conf.Address = "unix", cfg.Socket
	// One session for every client, as in shmipc's benchmark and examples
	// (its advice for a Go peer is a session per four cores).
	conf.SessionNum = 1
	sm, err := shmipc.NewSessionManager(conf)
	if err != nil {
		return err
	}
	perr := populateMemfds()
	c := &shmipcClient{sm: sm}
	if err := c.warm(cfg.Size); err != nil {
		sm.Close()
		return err
	}
	if err := c.ping(); err != nil {
		sm.Close()
		return err
	}
	load, m, err := runInClientChild(ctx, cfg, s, GoClient{Dial: c.dial, OpenStream: c.openStream})
	note := c.fallbacks()
	sm.Close()
	if err != nil {
		return err
	}
	if perr != nil {
		load.Notes = append(load.Notes, perr.Error())
	}
	if note != "" {
		load.Notes = append(load.Notes, note)
	}
	if bad := c.bad.Load(); bad != nil {
		return *bad
	}
	return writeChildLoad(s.Result, load, m)
}

// warm writes once into every slice that messages of size bytes take and
// gives them back. A long-lived session has written its whole buffer; on a
// virtual machine the first write to a page can cost far more than the
// fault that populateMemfds spared, its host backing the page only then.
// Slices of a page or less need not: shmipc wrote the header of each when
// it made the buffer.
func (c *shmipcClient) warm(size int) error {
	slice := uint32(size) + shmipcSlack
	if slice <= uint32(os.Getpagesize()) {
		return nil
	}
	st, err := c.sm.GetStream()
	if err != nil {
		return err
	}
	defer st.Close() // gives the slices back
	w := st.BufferWriter()
	for {
		_, _, before := st.Session().GetMetrics()
		b, err := w.Reserve(shmipcHeader + size)
		if err != nil {
			return err
		}
		// A slice of another list, or of the heap once shared memory is
		// exhausted, ends the pass.
		_, _, after := st.Session().GetMetrics()
		if after.AllInUsedShareMemoryInBytes-before.AllInUsedShareMemoryInBytes != uint64(slice) {
			return nil
		}
		clear(b)
	}
}

// ping makes one round trip of an empty message, which both server modes
// answer, so that the warm-up starts once the server has set up its side
// of the session.
func (c *shmipcClient) ping() error {
	st, err := c.sm.GetStream()
	if err != nil {
		return err
	}
	defer st.Close()
	c.sess = st.Session()
	if err := shmipcSend(st, nil, 0); err != nil {
		return err
	}
	_, err = shmipcReceive(st.BufferReader())
	return err
}

// fallbacks describes the client's messages that did not go through
// shared memory, warm-up included: when the buffer or the queue is full,
// shmipc sends a message over the Unix socket instead, and the stream
// stays on the socket from then on.
func (c *shmipcClient) fallbacks() string {
	_, m, _ := c.sess.GetMetrics()
	if m.AllocShmErrorCount == 0 && m.FallbackWriteCount == 0 && m.FallbackReadCount == 0 && m.QueueFullErrorCount == 0 {
		return ""
	}
	return fmt.Sprintf("shmipc fell back to the Unix socket: %d messages sent and %d received there (%d failed allocations of shared memory, %d full queues)",
		m.FallbackWriteCount, m.FallbackReadCount, m.AllocShmErrorCount, m.QueueFullErrorCount)
}

// shmipcConn is one client: a stream of the session, requests stamped with
// their sequence number.
type shmipcConn struct {
	c   *shmipcClient
	st  *shmipc.Stream
	seq uint64
}

func (c *shmipcClient) dial(context.Context, string) (RoundTripper, error) {
	st, err := c.sm.GetStream()
	if err != nil {
		return nil, err
	}
	return &shmipcConn{c: c, st: st}, nil
}

func (s *shmipcConn) RoundTrip(_ context.Context, req []byte) (int, error) {
	s.seq++
	if err := shmipcSend(s.st, req, s.seq); err != nil {
		return 0, err
	}
	reply, err := shmipcReceive(s.st.BufferReader())
	if err != nil {
		return 0, err
	}
	if err := checkReply(reply, len(req), s.seq); err != nil {
		s.c.bad.CompareAndSwap(nil, &err)
		return 0, err
	}
	// Release the reply and keep its slice for the next request, as
	// shmipc's benchmark does.
	s.st.ReleaseReadAndReuse()
	return len(reply), nil
}

// Close closes the stream, which also wakes a RoundTrip blocked on it.
// shmipc then recycles the stream's buffers while the call it woke may
// still read them, a race that only an aborted run, whose results are
// dropped, lets happen.
func (s *shmipcConn) Close() error { return s.st.Close() }

// shmipcStreamWin bounds a stream's unread replies as engineStreamWin does
// the pktipc peer's. shmipc has no flow control: a sender that outruns its
// reader empties the buffer, and shmipc then moves the stream to the Unix
// socket for good.
const shmipcStreamWin = engineStreamWin

// shmipcStreamer is one client of the stream scenario: it sends without
// waiting and collects the server's empty replies in batches, so that at
// most shmipcStreamWin are unread.
type shmipcStreamer struct {
	st     *shmipc.Stream
	unread int
}

func (c *shmipcClient) openStream(context.Context, string, int) (Streamer, error) {
	st, err := c.sm.GetStream()
	if err != nil {
		return nil, err
	}
	return &shmipcStreamer{st: st}, nil
}

// Send sends msg, first collecting half the window's replies when it is
// full.
func (s *shmipcStreamer) Send(msg []byte) error {
	if s.unread >= shmipcStreamWin {
		if err := s.collect(shmipcStreamWin / 2); err != nil {
			return err
		}
	}
	if err := shmipcSend(s.st, msg, 0); err != nil {
		return err
	}
	s.unread++
	return nil
}

// collect reads n replies, each of which must be empty.
func (s *shmipcStreamer) collect(n int) error {
	r := s.st.BufferReader()
	for range n {
		reply, err := shmipcReceive(r)
		if err != nil {
			return err
		}
		s.unread--
		if len(reply) != 0 {
			return fmt.Errorf("bench: stream reply of %d bytes, want 0", len(reply))
		}
		r.ReleasePreviousRead()
	}
	return nil
}

// Finish sends the closing empty message and collects every reply: the
// last one proves that the server read everything before it.
func (s *shmipcStreamer) Finish(context.Context) error {
	if err := shmipcSend(s.st, nil, 0); err != nil {
		return err
	}
	s.unread++
	return s.collect(s.unread)
}

// Close closes the stream, as shmipcConn.Close does.
func (s *shmipcStreamer) Close() error { return s.st.Close() }

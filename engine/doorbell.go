package engine

import (
	"context"
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/panjf2000/gnet/v2"
)

// A doorbell tells one event loop about work for its connections that other
// goroutines finished, without gnet's task queue, which allocates per task:
// workers that wrote whole replies themselves, and write watches whose peer
// read. It is a socket pair: the loop's end is enrolled in the loop like a
// connection, and a goroutine queues a job and writes a byte to the other
// end when the queue was empty. The loop runs the queue when the byte
// arrives.
type doorbell struct {
	wfd int // the workers' end; closed by the Server after the workers
	lfd int // the loop's end as gnet holds it; set in OnOpen, read by the loop

	mu    sync.Mutex
	queue []bellJob
	spare []bellJob // the loop's; swapped with queue
}

// A bellJob is a connection's work for the loop: take back a reply a
// worker finished (finalTask), or look at its outbound buffer (check).
type bellJob struct {
	c     *conn
	check bool
}

// newDoorbell makes a socket pair and enrolls one end in a loop of cli.
func newDoorbell(cli *gnet.Client) (*doorbell, error) {
	fds, err := socketPair()
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fds[0]), "pktipc-doorbell")
	nc, err := net.FileConn(f) // dups fds[0]
	_ = f.Close()
	if err != nil {
		_ = sysClose(fds[1])
		return nil, err
	}
	b := &doorbell{wfd: fds[1]}
	if _, err := cli.EnrollContext(nc, b); err != nil { // closes nc
		_ = sysClose(fds[1])
		return nil, err
	}
	return b, nil
}

// ring queues j for the loop. Any goroutine.
func (b *doorbell) ring(j bellJob) {
	b.mu.Lock()
	b.queue = append(b.queue, j)
	first := len(b.queue) == 1
	b.mu.Unlock()
	if first {
		// A full socket means wake-ups are pending already; a closed one,
		// that the server is stopping and the connections are closed.
		for {
			if _, err := sysWrite(uintptr(b.wfd), bellByte); err != syscall.EINTR {
				break
			}
		}
	}
}

// answer runs on the loop when the bell rang: it runs every queued job.
func (b *doorbell) answer(gc gnet.Conn) {
	_, _ = gc.Discard(-1)
	b.mu.Lock()
	q := b.queue
	b.queue, b.spare = b.spare[:0], nil
	b.mu.Unlock()
	for i, j := range q {
		if j.check {
			j.c.checkDrain()
		} else {
			_ = j.c.final.Run(context.Background())
		}
		q[i] = bellJob{}
	}
	b.mu.Lock()
	b.spare = q[:0]
	b.mu.Unlock()
}

// wake makes the loop return from a solo wait; answer finds an empty queue.
// Any goroutine.
func (b *doorbell) wake() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.wfd >= 0 {
		_, _ = sysWrite(uintptr(b.wfd), bellByte) // full: a wake-up is pending
	}
}

func (b *doorbell) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	_ = sysClose(b.wfd)
	b.wfd = -1
}

var bellByte = []byte{1}

package engine

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Copies of large messages into rings. Go's copy moves a mebibyte or more
// with non-temporal stores on amd64: the bytes go to memory, past the
// caches, and the peer reads them back from memory. Where the large
// messages of the process's rings fit in the last-level cache that both
// sides share, a copy through the cache leaves them where the peer reads
// them next, and a round trip takes about half the time. Where they do
// not (many connections, each with a large message on its rings), the
// lines would be evicted before the peer reads them, and each store
// through the cache would first read its line from memory: there the
// non-temporal copy is faster, and copyMessage leaves it alone.

// copyPiece is the largest piece of a message copied at once when it goes
// through the cache: below the size where Go's copy turns non-temporal.
const copyPiece = 512 << 10

// cacheBudget is how many bytes of large messages the process's rings may
// hold in the cache: half the last-level cache, or zero where its size is
// unknown (every copy then is Go's own). It is learnt at the first large
// copy (cacheBytes), not when the package loads; an atomic only so that tests
// may change it.
var (
	cacheBudget atomic.Int64
	cacheOnce   sync.Once
)

func cacheBytes() int64 {
	cacheOnce.Do(func() {
		if n, err := lastLevelCache(); err == nil {
			cacheBudget.Store(n / 2)
		}
	})
	return cacheBudget.Load()
}

// copyMessage copies src into dst, a record of a ring, and returns the
// number of bytes copied, as copy does. conns counts the process's ring
// connections, each of which may hold a message as large on its rings:
// while that many fit in cacheBudget, a large message is copied in pieces
// that stay in the cache. conns is read for large messages only: the
// counter's line is written by other goroutines, and a small message
// should not pay for a look at it.
func copyMessage(dst, src []byte, conns *atomic.Int32) int {
	if len(src) <= copyPiece || len(dst) <= copyPiece || int64(conns.Load())*int64(len(src)) > cacheBytes() {
		return copy(dst, src)
	}
	n := 0
	for n < len(src) && n < len(dst) {
		n += copy(dst[n:], src[n:min(len(src), n+copyPiece)])
	}
	return n
}

// ringClients counts the process's Clients with rings mapped: the
// connections whose requests copyMessage weighs. Each Client adds itself
// once when its rings are mapped and takes itself out when they are
// closed (Client.rcounted).
var ringClients atomic.Int32

// parseCacheSize parses a sysfs cache size: a number of bytes with an
// optional K, M or G suffix ("32768K").
func parseCacheSize(size string) (int64, error) {
	s := strings.TrimSpace(size)
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, s[:len(s)-1]
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, s[:len(s)-1]
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > 1<<40/mult {
		return 0, fmt.Errorf("engine: cache size %q", size)
	}
	return n * mult, nil
}

package fsmonitor

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// journal records which paths changed under the current token, each
// stamped with the sequence number that a query will report after it.
//
// Invariant (mu): entries are in stamp order and every stamp lies in
// (floor, seq+1]; changes seen now get stamp seq+1. A query advances seq,
// so the changes it reports stay behind it. A query from s is answered
// with paths only if its token is the current one, complete is true and
// floor <= s <= seq; otherwise trivially. reset starts a new token with
// an empty journal. The watcher goroutine adds; handlers query; a flush
// or the watcher resets.
type journal struct {
	mu       sync.Mutex
	pid      int
	flushes  int
	token    string
	seq      uint64
	floor    uint64
	entries  []entry
	limit    int   // entries kept at most; older ones raise floor
	complete bool  // false while a change may have gone unseen
	why      error // why complete is false
}

type entry struct {
	stamp uint64
	path  string
}

func newJournal(pid, limit int) *journal {
	j := &journal{pid: pid, limit: limit}
	j.reset(nil)
	return j
}

// tokenFor formats git's token id: "<flushes>.<pid>.<UTC yyyymmddThhmmss.uuuuuu>Z".
func tokenFor(flushes, pid int, t time.Time) string {
	return fmt.Sprintf("%d.%d.%sZ", flushes, pid, t.UTC().Format("20060102T150405.000000"))
}

// reset starts a new token with an empty journal; why, if not nil, keeps
// the journal incomplete (replies trivial) until the next reset without
// one. Under no lock: it takes mu.
func (j *journal) reset(why error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.resetLocked(why)
}

func (j *journal) resetLocked(why error) {
	if j.token != "" {
		j.flushes++
	}
	j.token = tokenFor(j.flushes, j.pid, time.Now())
	j.seq, j.floor = 0, 0
	clear(j.entries)
	j.entries = j.entries[:0]
	j.complete, j.why = why == nil, why
}

// spoil marks the journal incomplete without a new token: every reply is
// trivial until the next reset.
func (j *journal) spoil(why error) {
	j.mu.Lock()
	j.complete, j.why = false, why
	j.mu.Unlock()
}

// add records changed paths (relative to the worktree, directories with
// a trailing slash) at the current stamp.
func (j *journal) add(paths []string) {
	if len(paths) == 0 {
		return
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, p := range paths {
		j.entries = append(j.entries, entry{stamp: j.seq + 1, path: p})
	}
	if over := len(j.entries) - j.limit; over > 0 {
		// The oldest entries go; queries from before the last of them
		// can no longer be answered in full.
		j.floor = j.entries[over-1].stamp
		n := copy(j.entries, j.entries[over:])
		clear(j.entries[n:])
		j.entries = j.entries[:n]
	}
}

// answer is a query's result: the token and sequence number to ask with
// next time, and either trivial or the changed paths, sorted.
type answer struct {
	token   string
	seq     uint64
	trivial bool
	paths   []string
}

// query answers a query for changes since (token, since); known is false
// when the request carried no usable token. It advances the sequence
// number, so that changes seen from now on are reported to the next query.
func (j *journal) query(token string, since uint64, known bool) answer {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.seq++
	a := answer{token: j.token, seq: j.seq}
	if !known || token != j.token || !j.complete || since < j.floor || since >= j.seq {
		a.trivial = true
		return a
	}
	// Entries are in stamp order: the ones after since are a suffix.
	i := sort.Search(len(j.entries), func(i int) bool { return j.entries[i].stamp > since })
	seen := make(map[string]struct{}, len(j.entries)-i)
	for _, e := range j.entries[i:] {
		if _, dup := seen[e.path]; !dup {
			seen[e.path] = struct{}{}
			a.paths = append(a.paths, e.path)
		}
	}
	sort.Strings(a.paths)
	return a
}

// state reports the current token and whether replies can be complete.
func (j *journal) state() (token string, seq uint64, why error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.token, j.seq, j.why
}

package fsmonitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// renameCookie renames a cookie file: rename(2) alone, without
// the look at the new name that os.Rename takes first.
func renameCookie(old, new string) error { return unix.Rename(old, new) }

// dirMask is what a directory's watch reports: entries created, deleted,
// moved, written or changed, and the directory's own end. IN_EXCL_UNLINK
// keeps unlinked files still open from reporting; IN_ONLYDIR and
// IN_DONT_FOLLOW keep a watch from landing on a file or through a link
// swapped in between the scan and the watch.
const dirMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MODIFY | unix.IN_ATTRIB |
	unix.IN_CLOSE_WRITE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF |
	unix.IN_ONLYDIR | unix.IN_DONT_FOLLOW | unix.IN_EXCL_UNLINK

// addWatch is a seam for tests (a refused watch); a watcher keeps the
// value it had when the watcher was made.
var addWatch = unix.InotifyAddWatch

// refusedRetry is how often a watcher whose watches the kernel refused
// (the watch limit) walks the tree again to find room, which others may
// have freed: without it, replies would stay trivial until a flush, which
// git never sends. A variable for the tests.
var refusedRetry = 10 * time.Second

// watcher is the inotify side of a Monitor: one watch per directory of
// the worktree except .git, plus the cookie directory.
//
// Invariant (mu): dirs and wds map each watch to its directory (relative,
// "" for the root) and back; the run goroutine holds mu while it handles
// a batch of events, and rescan (a flush) holds it while it walks, so the
// maps change only under mu. Every read of the descriptor is made under
// mu too, by run or by a query's help, and handled before mu is let go.
// refusedNow is set when a watch was refused for want of watches and
// cleared by a rescan that watched everything; unwatched holds the
// directories that exist but could not be watched for another reason (no
// read permission), while the journal is incomplete; readErr is set once,
// when a read failed.
type watcher struct {
	m    *Monitor
	root string
	f    *os.File        // the inotify descriptor, waited for in Go's netpoller
	rc   syscall.RawConn // f's, through which every read goes
	fd   int
	add  func(fd int, path string, mask uint32) (int, error)

	closing atomic.Bool // set before f is closed: run's end is no failure

	mu         sync.Mutex
	dirs       map[int32]string
	wds        map[string]int32
	cookieWd   int32
	refusedNow bool
	retryAt    time.Time        // the read deadline armRetry set, or zero
	sweep      map[string]int32 // during resync: the watches not yet seen by the walk
	unwatched  map[string]error
	overflows  int64
	refused    int64
	changed    []string // scratch for one batch
	// moved: directories moved from or to a name in this batch, settled
	// at its end (settle); resyncDue: the tree is walked again then, under
	// a new token (a mounted filesystem went away under a watch, or the
	// last directory that could not be watched went).
	moved     []string
	resyncDue bool
	buf       []byte // one read's events
	readErr   error  // the read that failed; no more reads after it
}

type watchStats struct {
	overflows int64
	refused   int64
	watches   int
}

func newWatcher(ctx context.Context, m *Monitor) (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("inotify_init1", err)
	}
	w := &watcher{
		m:         m,
		root:      m.opts.Worktree,
		f:         os.NewFile(uintptr(fd), "inotify"),
		fd:        fd,
		buf:       make([]byte, 64<<10),
		add:       addWatch,
		dirs:      make(map[int32]string),
		wds:       make(map[string]int32),
		unwatched: make(map[string]error),
	}
	if w.rc, err = w.f.SyscallConn(); err != nil {
		w.f.Close()
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	wd, err := w.add(fd, m.cookieDir, dirMask)
	if err != nil {
		w.f.Close()
		return nil, fmt.Errorf("fsmonitor: watching %s: %w", m.cookieDir, watchErr(err))
	}
	w.cookieWd = int32(wd)
	if err := w.watchTree(ctx, "", false); err != nil {
		w.f.Close()
		return nil, err
	}
	if _, ok := w.wds[""]; !ok && !w.refusedNow {
		w.f.Close()
		if err := w.unwatched[""]; err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("fsmonitor: watching %s: not a directory", w.root)
	}
	if w.refusedNow {
		w.m.j.reset(ErrWatchLimit)
	}
	return w, nil
}

func watchErr(err error) error {
	if errors.Is(err, unix.ENOSPC) {
		return fmt.Errorf("%w (raise fs.inotify.max_user_watches): %w", ErrWatchLimit, err)
	}
	return err
}

// watchTree watches dir (relative) and every directory under it, watch
// first and read second, so that an entry made in between is either seen
// by the read or reported by the watch. With report, every entry found
// is journaled as changed (a directory that appeared). Under mu.
func (w *watcher) watchTree(ctx context.Context, dir string, report bool) error {
	stack := []string{dir}
	for len(stack) > 0 {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if !w.watchDir(d) {
			continue
		}
		entries, err := os.ReadDir(filepath.Join(w.root, d))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			continue // gone already: its removal is reported by its parent
		}
		if err != nil {
			// Watched, but what it holds is unknown (out of descriptors,
			// no permission any more): as a directory that cannot be
			// watched, replies are trivial until it can be read.
			w.unwatchable(d, "read", err)
			continue
		}
		for _, e := range entries {
			rel := path.Join(d, e.Name())
			if d == "" && e.Name() == ".git" {
				continue
			}
			if e.Type()&fs.ModeDir != 0 {
				stack = append(stack, rel)
				if report {
					w.changed = append(w.changed, rel+"/")
				}
			} else if report {
				w.changed = append(w.changed, rel)
			}
		}
	}
	return nil
}

// watchDir adds or refreshes the watch of one directory. A directory that
// is gone, or is no directory any more, is left to its parent's events;
// one that is there but cannot be watched leaves the journal incomplete:
// changes in it would go unseen. Under mu.
func (w *watcher) watchDir(rel string) bool {
	wd, err := w.add(w.fd, filepath.Join(w.root, rel), dirMask)
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.ENOMEM):
			w.refused++
			if !w.refusedNow {
				w.m.log.Error("fsmonitor: the kernel refused a watch; replies are trivial until a flush", "dir", rel, "err", watchErr(err))
			}
			w.refusedNow = true
			w.m.j.spoil(watchErr(err))
		case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
		default:
			// No read permission, say: git may still stat tracked files
			// in it. Watched again when its attributes change.
			w.unwatchable(rel, "watched", err)
		}
		return false
	}
	delete(w.unwatched, rel)
	if old, ok := w.wds[rel]; ok && old != int32(wd) {
		// Another directory under this name before: its watch goes.
		delete(w.dirs, old)
		unix.InotifyRmWatch(w.fd, uint32(old))
	}
	if oldRel, ok := w.dirs[int32(wd)]; ok && oldRel != rel {
		// The same directory under a new name (a move whose old name
		// was not forgotten yet).
		delete(w.wds, oldRel)
	}
	w.dirs[int32(wd)] = rel
	w.wds[rel] = int32(wd)
	delete(w.sweep, rel)
	return true
}

// unwatchable leaves rel among the directories not watched whole (it
// could not be watched, or read: how), and the journal incomplete. Under
// mu.
func (w *watcher) unwatchable(rel, how string, err error) {
	w.refused++
	if _, ok := w.unwatched[rel]; !ok {
		w.m.log.Error("fsmonitor: a directory cannot be "+how+"; replies are trivial until it can", "dir", rel, "err", err)
	}
	err = fmt.Errorf("fsmonitor: %s cannot be %s: %w", filepath.Join(w.root, rel), how, err)
	w.unwatched[rel] = err
	w.m.j.spoil(err)
}

// forget drops the watches of dir and everything under it: it moved away,
// and its watches with it. It looks at every watch, so it is not for
// deletions: the kernel ends a deleted directory's watch itself
// (IN_IGNORED), and a tree of directories removed one by one would cost
// a look at every watch for each. Under mu.
func (w *watcher) forget(dir string) {
	w.forgetUnwatched(dir)
	prefix := dir + "/"
	for rel, wd := range w.wds {
		if rel == dir || strings.HasPrefix(rel, prefix) {
			delete(w.wds, rel)
			delete(w.dirs, wd)
			unix.InotifyRmWatch(w.fd, uint32(wd))
		}
	}
}

// forgetUnwatched drops dir and everything under it from the directories
// that could not be watched: they are gone. Under mu.
func (w *watcher) forgetUnwatched(dir string) {
	if len(w.unwatched) == 0 {
		return
	}
	prefix := dir + "/"
	for rel := range w.unwatched {
		if rel == dir || strings.HasPrefix(rel, prefix) {
			delete(w.unwatched, rel)
		}
	}
	if len(w.unwatched) == 0 && !w.refusedNow {
		// The last directory that could not be watched is gone: every
		// directory is watched, and a new token (a walk) ends the trivial
		// replies, which nothing else would before a flush.
		w.resyncDue = true
	}
}

// run reads and handles events until the descriptor is closed or a read
// fails. While watches are refused it wakes every refusedRetry to try
// again (a read deadline).
func (w *watcher) run() {
	for {
		err := w.rc.Read(func(fd uintptr) bool {
			w.mu.Lock()
			defer w.mu.Unlock()
			stop := w.drain(int(fd), nil)
			w.armRetry()
			return stop
		})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			w.mu.Lock()
			if w.refusedNow {
				w.changed = w.changed[:0]
				w.resync()
			}
			// The deadline has passed: cleared, or every read would fail.
			w.retryAt = time.Time{}
			_ = w.f.SetReadDeadline(time.Time{})
			w.armRetry()
			w.mu.Unlock()
			continue
		}
		if err != nil && !w.closing.Load() {
			w.mu.Lock()
			w.failed(err)
			w.mu.Unlock()
		}
		return
	}
}

// armRetry sets the read deadline at which run tries the refused watches
// again, or clears it once none is refused. Under mu.
func (w *watcher) armRetry() {
	switch {
	case w.refusedNow && w.retryAt.IsZero():
		w.retryAt = time.Now().Add(refusedRetry)
		_ = w.f.SetReadDeadline(w.retryAt)
	case !w.refusedNow && !w.retryAt.IsZero():
		w.retryAt = time.Time{}
		_ = w.f.SetReadDeadline(time.Time{})
	}
}

// help reads and handles events on a query's goroutine until the query's
// cookie is seen (seen closed) or the queue is empty. The cookie's event
// is queued by the time the query's rename returns, so the query need not
// wait for the watcher goroutine to be woken and scheduled; when the
// goroutine holds mu it is handling events already, and the query waits
// for it instead. What help leaves in the queue the goroutine reads: each
// event queued since its last empty read woke it.
func (w *watcher) help(seen <-chan struct{}) {
	if !w.mu.TryLock() {
		return
	}
	defer w.mu.Unlock()
	// Control keeps the descriptor open while drain reads it, without
	// the read lock that run's waiting Read holds.
	w.rc.Control(func(fd uintptr) { w.drain(int(fd), seen) })
}

// drain reads and handles events until the queue is empty or, when seen
// is not nil, seen is closed, and reports whether reading must stop for
// good (a read failed). Every read of the descriptor is under mu, so
// events are handled in the kernel's order whichever goroutine reads
// them. Under mu.
func (w *watcher) drain(fd int, seen <-chan struct{}) (stop bool) {
	if w.readErr != nil {
		return true
	}
	for {
		if seen != nil {
			select {
			case <-seen:
				return false
			default:
			}
		}
		n, err := unix.Read(fd, w.buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false
		case err != nil:
			w.failed(os.NewSyscallError("read", err))
			return true
		case n == 0:
			w.failed(io.ErrUnexpectedEOF)
			return true
		}
		w.handle(w.buf[:n])
	}
}

// failed makes every reply trivial once reading the queue failed: what
// the kernel reports from then on cannot be trusted to be complete.
func (w *watcher) failed(err error) {
	if w.readErr != nil {
		return
	}
	w.readErr = err
	w.m.log.Error("fsmonitor: reading inotify events", "err", err)
	w.m.j.spoil(err)
}

// handle journals one read's events, in order; a cookie's waiter is woken
// only after every event before it is journaled. Under mu.
func (w *watcher) handle(b []byte) {
	w.changed = w.changed[:0]
	for {
		ev, rest, ok := nextEvent(b)
		if !ok {
			break // the kernel writes whole events; nothing to do with a part
		}
		b = rest
		w.event(ev.wd, ev.mask, string(ev.name))
	}
	w.settle()
	w.flushChanged()
}

func (w *watcher) flushChanged() {
	w.m.j.add(w.changed)
	clear(w.changed)
	w.changed = w.changed[:0]
}

// event handles one event. Under mu.
func (w *watcher) event(wd int32, mask uint32, name string) {
	if mask&unix.IN_Q_OVERFLOW != 0 {
		w.overflow()
		return
	}
	if wd == w.cookieWd {
		if mask&(unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE) != 0 && name != "" {
			w.settle() // what came before the cookie is journaled before its query is answered
			w.flushChanged()
			w.m.cookies.seen(name)
		}
		if mask&(unix.IN_DELETE_SELF|unix.IN_IGNORED) != 0 {
			w.m.log.Error("fsmonitor: the cookie directory went away; replies are trivial")
			w.m.j.spoil(errors.New("fsmonitor: cookie directory removed"))
			w.m.setGone()
		}
		return
	}
	dir, ok := w.dirs[wd]
	if !ok {
		return // a watch already forgotten (moved or deleted)
	}
	if mask&unix.IN_UNMOUNT != 0 {
		// A filesystem mounted in the worktree went away: what is there
		// now was never watched, and its contents changed at once.
		w.resyncDue = true
	}
	if mask&unix.IN_IGNORED != 0 {
		delete(w.dirs, wd)
		if w.wds[dir] == wd {
			delete(w.wds, dir)
		}
		return
	}
	if name == "" {
		// About the directory itself.
		if dir == "" && mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF) != 0 {
			w.m.log.Error("fsmonitor: the worktree moved or was deleted; replies are trivial")
			w.m.j.spoil(errors.New("fsmonitor: worktree moved or deleted"))
			w.m.setGone()
		}
		return
	}
	if dir == "" && name == ".git" {
		return
	}
	rel := path.Join(dir, name)
	if mask&unix.IN_ISDIR == 0 {
		w.changed = append(w.changed, rel)
		return
	}
	w.changed = append(w.changed, rel+"/")
	switch {
	case mask&unix.IN_CREATE != 0:
		w.watchTree(context.Background(), rel, true)
	case mask&(unix.IN_MOVED_FROM|unix.IN_MOVED_TO) != 0:
		w.moved = append(w.moved, rel) // settled at the batch's end
	case mask&unix.IN_DELETE != 0:
		w.forgetUnwatched(rel) // its watch ends with IN_IGNORED
	case mask&unix.IN_ATTRIB != 0:
		if _, ok := w.unwatched[rel]; ok {
			// Perhaps readable now: what changed in it meanwhile went
			// unseen, so the journal starts over, as after an overflow.
			w.changed = w.changed[:0]
			w.resync()
		}
	}
}

// overflow handles a full kernel queue: events were lost, so the journal
// starts over under a new token and every directory is watched again
// (those made while events were lost have no watch yet). Under mu.
func (w *watcher) overflow() {
	w.overflows++
	w.m.log.Warn("fsmonitor: inotify queue overflowed; new token")
	w.startOver()
}

// startOver drops the batch's changes, walks the tree again under a new
// token and wakes every query waiting for a cookie. Under mu.
func (w *watcher) startOver() {
	w.changed = w.changed[:0]
	w.moved = w.moved[:0]
	w.resyncDue = false
	w.resync()
	w.m.cookies.wakeAll()
}

// settle brings the watches of the directories moved in this batch in
// line with what the names hold now: each one's watches go, and what
// is a directory under the name now is watched afresh, its entries
// journaled. The events name the directories as they were, and the
// filesystem is read as it is by the end of the batch: handled one by
// one, a swap of two directories (rename with RENAME_EXCHANGE: moved
// from A, to B, from B, to A) took the watch of the directory now named
// B away for good. Then a walk under a new token, when one is due
// (resyncDue). Under mu.
func (w *watcher) settle() {
	if len(w.moved) > 0 {
		slices.Sort(w.moved)
		w.moved = slices.Compact(w.moved)
		for _, rel := range w.moved {
			w.forget(rel)
		}
		for _, rel := range w.moved {
			w.watchTree(context.Background(), rel, true)
		}
		w.moved = w.moved[:0]
	}
	if w.resyncDue {
		w.m.log.Warn("fsmonitor: the watches changed under the journal (an unmount, the last unwatchable directory gone); new token")
		w.startOver()
	}
}

// resync walks the whole tree again and starts a new token, incomplete
// while a directory is left unwatched. Under mu.
func (w *watcher) resync() {
	w.refusedNow = false
	clear(w.unwatched)
	// The watches the walk does not reach are of directories that moved
	// out of the worktree, or went, while events were lost: they go.
	w.sweep = maps.Clone(w.wds)
	w.watchTree(context.Background(), "", false)
	for rel, wd := range w.sweep {
		if w.wds[rel] == wd {
			delete(w.wds, rel)
		}
		// The same watch may have come back under another name (a
		// directory renamed within the worktree): then it stays.
		if w.dirs[wd] == rel {
			delete(w.dirs, wd)
			unix.InotifyRmWatch(w.fd, uint32(wd))
		}
	}
	w.sweep = nil
	w.changed = w.changed[:0]
	var why error
	for _, err := range w.unwatched {
		why = err
		break
	}
	if w.refusedNow {
		why = ErrWatchLimit
	}
	w.m.j.reset(why)
}

// rescan is a flush: a new token, after watching every directory again.
func (w *watcher) rescan() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.resync()
}

func (w *watcher) stats() watchStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return watchStats{overflows: w.overflows, refused: w.refused, watches: len(w.dirs) + 1}
}

// close closes the inotify descriptor, which ends run's read and drops
// every watch.
func (w *watcher) close() error {
	w.closing.Store(true)
	return w.f.Close()
}

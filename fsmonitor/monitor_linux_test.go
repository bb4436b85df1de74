package fsmonitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

// worktree makes an empty worktree with a .git directory.
func worktree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, ".git"), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func start(t *testing.T, root string, cookie time.Duration) *Monitor {
	t.Helper()
	m, err := Start(context.Background(), Options{Worktree: root, CookieTimeout: cookie, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func write(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// asker runs queries as git does, each with the token of the last reply.
type asker struct {
	t     *testing.T
	m     *Monitor
	token string
}

func (a *asker) ask() (paths []string, trivial bool) {
	a.t.Helper()
	next, paths, trivial := a.m.Query(context.Background(), a.token)
	a.token = next
	return paths, trivial
}

// expect asks and checks that the reply is complete and holds want (and
// nothing under .git).
func (a *asker) expect(what string, want ...string) []string {
	a.t.Helper()
	paths, trivial := a.ask()
	if trivial {
		a.t.Fatalf("%s: trivial reply", what)
	}
	for _, w := range want {
		if !slices.Contains(paths, w) {
			a.t.Fatalf("%s: %q missing from %q", what, w, paths)
		}
	}
	for _, p := range paths {
		if p == ".git" || strings.HasPrefix(p, ".git/") {
			a.t.Fatalf("%s: %q reported", what, p)
		}
	}
	return paths
}

func TestMonitorReportsChanges(t *testing.T) {
	leakcheck.Check(t)
	root := worktree(t)
	write(t, root, "old/keep.txt", "x")
	m := start(t, root, 5*time.Second)
	a := &asker{t: t, m: m, token: "builtin:fake"}
	if _, trivial := a.ask(); !trivial {
		t.Fatal("a query without a token got a complete reply")
	}
	if paths := a.expect("nothing changed"); len(paths) != 0 {
		t.Fatalf("nothing changed, yet %q", paths)
	}

	write(t, root, "a.txt", "1")
	a.expect("create", "a.txt")
	write(t, root, "a.txt", "2")
	a.expect("modify", "a.txt")
	if err := os.Rename(filepath.Join(root, "a.txt"), filepath.Join(root, "b.txt")); err != nil {
		t.Fatal(err)
	}
	a.expect("rename", "a.txt", "b.txt")

	// A tree made at once: files written right after their directory, so
	// some land before its watch and some after; all must be reported.
	var want []string
	for i := range 50 {
		rel := fmt.Sprintf("n1/n2/n3/f%d", i)
		write(t, root, rel, "x")
		want = append(want, rel)
	}
	a.expect("new tree", append(want, "n1/", "n1/n2/", "n1/n2/n3/")...)

	// A directory moved: both names reported, and the moved tree stays
	// watched under its new name.
	if err := os.Rename(filepath.Join(root, "n1"), filepath.Join(root, "m1")); err != nil {
		t.Fatal(err)
	}
	a.expect("directory move", "n1/", "m1/")
	write(t, root, "m1/n2/n3/f0", "changed")
	a.expect("change in the moved tree", "m1/n2/n3/f0")

	if err := os.RemoveAll(filepath.Join(root, "m1")); err != nil {
		t.Fatal(err)
	}
	a.expect("directory removed", "m1/")
	write(t, root, "m1/again", "x")
	a.expect("a directory made again under the same name", "m1/", "m1/again")

	// Moved out of the tree and back in.
	outside := t.TempDir()
	if err := os.Rename(filepath.Join(root, "old"), filepath.Join(outside, "old")); err != nil {
		t.Fatal(err)
	}
	a.expect("moved out", "old/")
	if err := os.Rename(filepath.Join(outside, "old"), filepath.Join(root, "back")); err != nil {
		t.Fatal(err)
	}
	a.expect("moved in", "back/", "back/keep.txt")

	write(t, root, ".git/index", "not a change")
	if paths := a.expect("a write in .git"); len(paths) != 0 {
		t.Fatalf("a write in .git reported %q", paths)
	}
	if st := m.Stats(); st.Trivial != 1 || st.Watches != 4 {
		t.Fatalf("stats %+v: want 1 trivial reply, the cookie directory, the root, back, m1 watched", st)
	}
}

// TestMonitorOverflow overflows the kernel's queue for real: the watcher
// is held while more events than it may queue happen.
func TestMonitorOverflow(t *testing.T) {
	leakcheck.Check(t)
	limit := 16384
	if b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events"); err == nil {
		limit, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if limit > 100000 {
		t.Skipf("max_queued_events is %d: too many files to overflow it here", limit)
	}
	root := worktree(t)
	m := start(t, root, 5*time.Second)
	a := &asker{t: t, m: m, token: "builtin:fake"}
	a.ask()
	before, _ := m.Token()

	m.w.mu.Lock()
	dir := filepath.Join(root, "flood")
	os.Mkdir(dir, 0o755)
	for i := 0; i <= limit; i++ {
		f, err := os.Create(filepath.Join(root, "f"+strconv.Itoa(i)))
		if err != nil {
			m.w.mu.Unlock()
			t.Fatal(err)
		}
		f.Close()
	}
	write(t, root, "flood/late/file", "made while events were lost")
	m.w.mu.Unlock()

	if _, trivial := a.ask(); !trivial {
		t.Fatal("the first reply after an overflow was complete")
	}
	if after, why := m.Token(); after == before || why != nil {
		t.Fatalf("token %q -> %q (%v): an overflow must start a new token", before, after, why)
	}
	if m.Stats().Overflows == 0 {
		t.Fatal("no overflow counted")
	}
	// The directory made while events were lost is watched now.
	write(t, root, "flood/late/file", "after")
	a.expect("after the overflow", "flood/late/file")
}

// startRefusing starts a Monitor of root whose kernel, as its watcher
// sees it, refuses with errno the watches of the paths that match while
// the returned flag is set (it is, at first).
func startRefusing(t *testing.T, root string, match func(path string) bool, errno unix.Errno) (*Monitor, *atomic.Bool) {
	t.Helper()
	refuse := new(atomic.Bool)
	refuse.Store(true)
	addWatch = func(fd int, path string, mask uint32) (int, error) {
		if refuse.Load() && match(path) {
			return -1, errno
		}
		return unix.InotifyAddWatch(fd, path, mask)
	}
	t.Cleanup(func() { addWatch = unix.InotifyAddWatch })
	m := start(t, root, 5*time.Second)
	addWatch = unix.InotifyAddWatch // the watcher keeps its own
	return m, refuse
}

// noWatch matches the paths of the "nowatch" directories.
func noWatch(path string) bool { return strings.Contains(path, "nowatch") }

func TestMonitorWatchLimit(t *testing.T) {
	leakcheck.Check(t)
	root := worktree(t)
	m, refuse := startRefusing(t, root, noWatch, unix.ENOSPC)
	a := &asker{t: t, m: m, token: "builtin:fake"}
	a.ask()

	write(t, root, "nowatch/file", "x")
	if _, trivial := a.ask(); !trivial {
		t.Fatal("a complete reply while a directory is not watched")
	}
	if _, why := m.Token(); !errors.Is(why, ErrWatchLimit) {
		t.Fatalf("Token's reason %v, want ErrWatchLimit", why)
	}
	write(t, root, "nowatch/file", "y")
	if _, trivial := a.ask(); !trivial {
		t.Fatal("replies must stay trivial until a flush watches everything")
	}
	if m.Stats().Refused == 0 {
		t.Fatal("no refused watch counted")
	}
	m.Flush() // still refused: still trivial
	if _, trivial := a.ask(); !trivial {
		t.Fatal("a flush that could not watch everything made replies complete")
	}
	refuse.Store(false)
	m.Flush()
	if _, why := m.Token(); why != nil {
		t.Fatalf("after a flush with room: %v", why)
	}
	a.ask() // the new token
	write(t, root, "nowatch/file", "z")
	a.expect("watched after the flush", "nowatch/file")
}

// TestMonitorWatchLimitRetry: after the kernel refused watches, the
// watcher tries again by itself (refusedRetry), without a flush, and
// replies are complete once everything is watched.
func TestMonitorWatchLimitRetry(t *testing.T) {
	leakcheck.Check(t)
	root := worktree(t)
	write(t, root, "nowatch/file", "x")
	old := refusedRetry
	refusedRetry = 20 * time.Millisecond
	t.Cleanup(func() { refusedRetry = old })
	m, refuse := startRefusing(t, root, noWatch, unix.ENOSPC)
	if _, why := m.Token(); !errors.Is(why, ErrWatchLimit) {
		t.Fatalf("Token's reason %v, want ErrWatchLimit", why)
	}
	time.Sleep(100 * time.Millisecond) // retries that still find no room
	if _, why := m.Token(); !errors.Is(why, ErrWatchLimit) {
		t.Fatalf("after retries without room: %v, want ErrWatchLimit", why)
	}
	refuse.Store(false)
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		if _, why := m.Token(); why == nil {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("replies still trivial 10 s after watches became available")
		}
	}
	a := &asker{t: t, m: m, token: "builtin:fake"}
	a.ask()
	write(t, root, "nowatch/file", "y")
	a.expect("watched after the retry", "nowatch/file")
}

// startLocked starts a monitor of a new worktree holding locked/file,
// whose directory locked the kernel refuses to watch (EACCES) while
// refuse holds, and an asker that has asked once.
func startLocked(t *testing.T) (root string, m *Monitor, refuse *atomic.Bool, a *asker) {
	t.Helper()
	root = worktree(t)
	write(t, root, "locked/file", "x")
	locked := func(path string) bool { return strings.HasSuffix(path, "/locked") }
	m, refuse = startRefusing(t, root, locked, unix.EACCES)
	a = &asker{t: t, m: m, token: "builtin:fake"}
	a.ask()
	return root, m, refuse, a
}

// TestMonitorUnwatchableDir: a directory the kernel will not watch for a
// reason other than the watch limit (no read permission: git may still
// stat the tracked files in it) leaves every reply trivial; once its
// attributes change and it can be watched, the journal starts over under a
// new token, complete, and reports changes in it.
func TestMonitorUnwatchableDir(t *testing.T) {
	leakcheck.Check(t)
	root, m, refuse, a := startLocked(t)
	write(t, root, "locked/file", "y")
	if _, trivial := a.ask(); !trivial {
		t.Fatal("a complete reply while a directory is not watched")
	}
	before, why := m.Token()
	if !errors.Is(why, unix.EACCES) {
		t.Fatalf("Token's reason %v, want the refused watch's", why)
	}
	refuse.Store(false)
	if err := os.Chmod(filepath.Join(root, "locked"), 0o700); err != nil {
		t.Fatal(err)
	}
	a.ask() // its cookie comes after the attribute change
	if after, why := m.Token(); after == before || why != nil {
		t.Fatalf("token %q -> %q (%v) once the directory can be watched: want a new, complete one", before, after, why)
	}
	a.ask() // the new token
	write(t, root, "locked/file", "z")
	a.expect("watched once its attributes changed", "locked/file")
}

// TestMonitorRemovedTreeUnwatched: the watches of a removed tree of
// directories end (the kernel's IN_IGNORED for each), as do those of a
// tree moved out of the worktree (forget), and the removal is reported.
func TestMonitorRemovedTreeUnwatched(t *testing.T) {
	leakcheck.Check(t)
	root := worktree(t)
	for _, d := range []string{"gone", "moved"} {
		for i := range 20 {
			write(t, root, fmt.Sprintf("%s/d%d/e/file", d, i), "x")
		}
	}
	m := start(t, root, 5*time.Second)
	a := &asker{t: t, m: m, token: "builtin:fake"}
	a.ask()
	if n := m.Stats().Watches; n != 2+2*(1+20*2) {
		t.Fatalf("%d watches, want %d", n, 2+2*(1+20*2))
	}
	if err := os.RemoveAll(filepath.Join(root, "gone")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(root, "moved"), filepath.Join(t.TempDir(), "moved")); err != nil {
		t.Fatal(err)
	}
	a.expect("a tree removed and one moved away", "gone/", "moved/")
	if n := m.Stats().Watches; n != 2 {
		t.Fatalf("%d watches after the trees went, want 2 (the root and the cookies)", n)
	}
}

// TestMonitorResyncDropsUnreached: a walk after lost events (an
// overflow, a flush) drops the watches of directories it no longer
// reaches, which moved out of the worktree meanwhile.
func TestMonitorResyncDropsUnreached(t *testing.T) {
	leakcheck.Check(t)
	root := worktree(t)
	write(t, root, "away/sub/file", "x")
	write(t, root, "stay/file", "x")
	m := start(t, root, 5*time.Second)
	if n := m.Stats().Watches; n != 5 { // the root, the cookies, away, away/sub, stay
		t.Fatalf("%d watches, want 5", n)
	}
	m.w.mu.Lock() // the move's events wait, as lost ones would
	err := os.Rename(filepath.Join(root, "away"), filepath.Join(t.TempDir(), "away"))
	if err == nil {
		m.w.resync()
	}
	n := len(m.w.dirs) + 1
	m.w.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("%d watches after the walk, want 3 (the root, the cookies, stay)", n)
	}

	// A directory renamed within the worktree while events were lost
	// keeps its watch (the kernel's, under its new name): the walk's
	// sweep of the old name must not take it away.
	m.w.mu.Lock()
	err = os.Rename(filepath.Join(root, "stay"), filepath.Join(root, "renamed"))
	if err == nil {
		m.w.resync()
	}
	n = len(m.w.dirs) + 1
	m.w.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("%d watches after a rename and the walk, want 3", n)
	}
	a := &asker{t: t, m: m, token: "builtin:fake"}
	a.ask()
	write(t, root, "renamed/file", "y")
	a.expect("a file in the renamed directory", "renamed/file")
}

// TestMonitorWorktreeLink: a worktree named through a symbolic link is
// watched in the directory the link names (the watches follow no links).
func TestMonitorWorktreeLink(t *testing.T) {
	leakcheck.Check(t)
	root := worktree(t)
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(root, link); err != nil {
		t.Fatal(err)
	}
	m := start(t, link, 5*time.Second)
	a := &asker{t: t, m: m, token: "builtin:fake"}
	a.ask()
	write(t, root, "a.txt", "x")
	a.expect("a file written through the real path", "a.txt")
}

func TestMonitorCookieTimeout(t *testing.T) {
	leakcheck.Check(t)
	root := worktree(t)
	m := start(t, root, 50*time.Millisecond)
	a := &asker{t: t, m: m, token: "builtin:fake"}
	a.ask()
	m.w.mu.Lock() // the watcher cannot see the cookie
	_, trivial := a.ask()
	m.w.mu.Unlock()
	if !trivial {
		t.Fatal("a complete reply without the cookie")
	}
	a.expect("with the watcher back")
	// The late cookie's file went back to the pool, and the next query
	// took it again.
	if entries, _ := os.ReadDir(m.cookieDir); len(entries) > 1 {
		t.Fatalf("cookies left behind: %v", entries)
	}
	closeEmpties(t, m)
}

// closeEmpties closes m and checks that its cookie files went with it.
func closeEmpties(t *testing.T, m *Monitor) {
	t.Helper()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(m.cookieDir); len(entries) != 0 {
		t.Fatalf("cookie files after Close: %v", entries)
	}
}

// TestMonitorCookieFiles: queries rename the same cookie file rather
// than make one each, a burst of queries leaves a bounded pool, a file
// removed from under the pool is made again, a new Monitor removes what
// an old one left, and Close removes the pool.
func TestMonitorCookieFiles(t *testing.T) {
	leakcheck.Check(t)
	root := worktree(t)
	m := start(t, root, 5*time.Second)
	a := &asker{t: t, m: m, token: "builtin:fake"}
	a.ask() // trivial, without a cookie
	a.expect("the first query with a token")
	inode := func() uint64 {
		t.Helper()
		entries, _ := os.ReadDir(m.cookieDir)
		if len(entries) != 1 {
			t.Fatalf("cookie files %v, want one", entries)
		}
		info, err := entries[0].Info()
		if err != nil {
			t.Fatal(err)
		}
		return info.Sys().(*syscall.Stat_t).Ino
	}
	first := inode()
	for i := range 20 {
		write(t, root, "f.txt", strconv.Itoa(i))
		a.expect("a sequential query", "f.txt")
	}
	if ino := inode(); ino != first {
		t.Fatalf("the cookie file is inode %d, was %d: made anew", ino, first)
	}

	var wg sync.WaitGroup
	for range 4 * maxIdleCookies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, trivial := m.Query(context.Background(), a.token); trivial {
				t.Error("a trivial reply in a burst")
			}
		}()
	}
	wg.Wait()
	entries, _ := os.ReadDir(m.cookieDir)
	if len(entries) == 0 || len(entries) > maxIdleCookies {
		t.Fatalf("%d cookie files after a burst, want 1 to %d", len(entries), maxIdleCookies)
	}

	for _, e := range entries {
		os.Remove(filepath.Join(m.cookieDir, e.Name()))
	}
	write(t, root, "g.txt", "x")
	a.expect("with the pool removed", "g.txt")
	inode()

	stale := filepath.Join(m.cookieDir, "1-1")
	if err := os.WriteFile(stale, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	m2 := start(t, root, 5*time.Second)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("a stale cookie survived a new Monitor: %v", err)
	}
	m2.Close()
	closeEmpties(t, m)
}

func TestMonitorClose(t *testing.T) {
	leakcheck.Check(t)
	root := worktree(t)
	m := start(t, root, time.Minute)
	a := &asker{t: t, m: m, token: "builtin:fake"}
	a.ask()
	m.w.mu.Lock()
	done := make(chan bool)
	go func() {
		_, _, trivial := a.m.Query(context.Background(), a.token)
		done <- trivial
	}()
	for m.queries.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	m.w.mu.Unlock()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	// The query ends: trivially, or completely where the watcher saw its
	// cookie before Close (the test cannot tell which comes first); a
	// query that Close left waiting would hang the test.
	<-done
	closeEmpties(t, m) // a second Close, once the query put its file back
}

// TestMonitorDirectorySwap: two directories swapped at once (rename with
// RENAME_EXCHANGE, as `mv --exchange` does) are both reported, and both
// stay watched under their new names: a change in either is reported
// after the swap, not only at it.
func TestMonitorDirectorySwap(t *testing.T) {
	leakcheck.Check(t)
	root := worktree(t)
	write(t, root, "A/x/f", "a")
	write(t, root, "B/y/g", "b")
	m := start(t, root, 5*time.Second)
	a := &asker{t: t, m: m, token: "builtin:fake"}
	a.ask()
	if err := unix.Renameat2(unix.AT_FDCWD, filepath.Join(root, "A"), unix.AT_FDCWD, filepath.Join(root, "B"), unix.RENAME_EXCHANGE); err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			t.Skipf("RENAME_EXCHANGE: %v", err)
		}
		t.Fatal(err)
	}
	a.expect("the swap", "A/", "B/", "A/y/g", "B/x/f")
	write(t, root, "B/x/f", "changed")
	a.expect("a change in what is now B", "B/x/f")
	write(t, root, "A/y/g", "changed")
	a.expect("a change in what is now A", "A/y/g")
	write(t, root, "B/x/new", "new")
	a.expect("a file made in what is now B", "B/x/new")
}

// TestMonitorUnwatchableDirRemoved: once the only directory that could not
// be watched is removed, a new token ends the trivial replies (a flush
// was the only way out before), and changes are reported again.
func TestMonitorUnwatchableDirRemoved(t *testing.T) {
	leakcheck.Check(t)
	root, m, _, a := startLocked(t)
	if _, trivial := a.ask(); !trivial {
		t.Fatal("a complete reply while a directory is not watched")
	}
	before, _ := m.Token()
	if err := os.RemoveAll(filepath.Join(root, "locked")); err != nil {
		t.Fatal(err)
	}
	a.ask() // its cookie comes after the removal
	if after, why := m.Token(); after == before || why != nil {
		t.Fatalf("token %q -> %q (%v) once the unwatched directory went: want a new, complete one", before, after, why)
	}
	a.ask() // the new token
	write(t, root, "other", "x")
	a.expect("a change after the unwatched directory went", "other")
}

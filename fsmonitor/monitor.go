package fsmonitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pktipc/pktipc/engine"
)

// Defaults of Options.
const (
	DefaultCookieTimeout = time.Second
	DefaultJournalLimit  = 1 << 20
)

// Options configure a Monitor.
type Options struct {
	// Worktree is the root of the worktree to watch. Required.
	Worktree string
	// GitDir is the repository's git directory: cookies are made in its
	// fsmonitor--daemon/cookies. Default: Worktree/.git.
	GitDir string
	// CookieTimeout bounds the wait for a query's cookie; past it the
	// reply is trivial. Default DefaultCookieTimeout.
	CookieTimeout time.Duration
	// JournalLimit is how many changed paths the journal keeps; queries
	// from before the oldest get trivial replies. Default
	// DefaultJournalLimit.
	JournalLimit int
	// Logger receives overflows, refused watches and watcher errors.
	// Default: slog.Default().
	Logger *slog.Logger
	// AllowRemote lets the worktree be on a network or FUSE filesystem
	// (git's fsmonitor.allowRemote). The kernel reports only the changes
	// made on this machine there, so replies may miss others'.
	AllowRemote bool
}

// Stats counts what a Monitor has done.
type Stats struct {
	Queries   int64 // queries answered (trivially or not)
	Trivial   int64 // trivial replies
	Overflows int64 // kernel queue overflows
	Watches   int   // directories watched now, the cookie directory included
	Refused   int64 // watches the kernel refused
}

// A Monitor watches a worktree and answers git's fsmonitor queries. Its
// methods are safe for concurrent use.
type Monitor struct {
	opts Options
	log  *slog.Logger
	j    *journal
	w    *watcher

	cookieDir    string
	cookiePrefix string // "<pid>-<monitor>-", before each cookie's number
	cookieSeq    atomic.Uint64
	cookies      cookieSet
	files        cookieFiles

	queries, trivial atomic.Int64

	goneOnce sync.Once
	gone     chan struct{} // closed when the worktree or the git directory went away

	closeOnce sync.Once
	done      chan struct{} // closed when the watcher goroutine has ended
	closeErr  error
}

// Start watches opts.Worktree and returns a Monitor whose journal starts
// now, under a new token. ctx bounds the initial scan only. Close stops
// it.
func Start(ctx context.Context, opts Options) (*Monitor, error) {
	if opts.Worktree == "" {
		return nil, errors.New("fsmonitor: Options.Worktree is required")
	}
	root, err := filepath.Abs(opts.Worktree)
	if err != nil {
		return nil, err
	}
	// The watches take no links (a link swapped in must not move them),
	// so the root is the real directory.
	if root, err = filepath.EvalSymlinks(root); err != nil {
		return nil, fmt.Errorf("fsmonitor: worktree: %w", err)
	}
	if !opts.AllowRemote {
		if kind, err := fsKind(root); err == nil && kind == fsRemote {
			return nil, fmt.Errorf("%w: %s (set AllowRemote to watch it anyway)", ErrRemote, root)
		}
	}
	opts.Worktree = root
	if opts.GitDir == "" {
		opts.GitDir = filepath.Join(root, ".git")
	}
	if opts.GitDir, err = filepath.Abs(opts.GitDir); err != nil {
		return nil, err
	}
	if opts.CookieTimeout <= 0 {
		opts.CookieTimeout = DefaultCookieTimeout
	}
	if opts.JournalLimit <= 0 {
		opts.JournalLimit = DefaultJournalLimit
	}
	m := &Monitor{
		opts:         opts,
		log:          opts.Logger,
		j:            newJournal(os.Getpid(), opts.JournalLimit),
		cookieDir:    filepath.Join(opts.GitDir, "fsmonitor--daemon", "cookies"),
		cookiePrefix: strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(monitors.Add(1), 10) + "-",
		done:         make(chan struct{}),
		gone:         make(chan struct{}),
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if err := os.MkdirAll(m.cookieDir, 0o700); err != nil {
		return nil, fmt.Errorf("fsmonitor: cookie directory: %w", err)
	}
	removeStaleCookies(m.cookieDir)
	m.w, err = newWatcher(ctx, m)
	if err != nil {
		return nil, err
	}
	go func() {
		defer close(m.done)
		m.w.run()
	}()
	return m, nil
}

// Gone returns a channel closed once the worktree or its git directory
// (where the cookies are) was removed or moved away; the Monitor answers
// trivially from then on. Any goroutine.
func (m *Monitor) Gone() <-chan struct{} { return m.gone }

// setGone closes gone, once. Under the watcher's mu.
func (m *Monitor) setGone() { m.goneOnce.Do(func() { close(m.gone) }) }

// Close stops the watcher, waits for its goroutine and releases its
// descriptors. Queries waiting for cookies end with trivial replies.
func (m *Monitor) Close() error {
	m.closeOnce.Do(func() {
		m.closeErr = m.w.close()
		<-m.done
		m.files.close()
	})
	return m.closeErr
}

// Token returns the current token id and why replies are trivial now (nil
// when they need not be).
func (m *Monitor) Token() (token string, why error) {
	token, _, why = m.j.state()
	return token, why
}

// Stats returns the Monitor's counters.
func (m *Monitor) Stats() Stats {
	ws := m.w.stats()
	return Stats{
		Queries:   m.queries.Load(),
		Trivial:   m.trivial.Load(),
		Overflows: ws.overflows,
		Watches:   ws.watches,
		Refused:   ws.refused,
	}
}

// Flush drops the journal and starts a new token, as git's "flush"
// request does, after watching again any directory the kernel refused
// before.
func (m *Monitor) Flush() {
	m.w.rescan()
}

// query syncs with the watcher through a cookie and answers from the
// journal.
func (m *Monitor) query(ctx context.Context, req []byte) answer {
	m.queries.Add(1)
	token, since, known := parseQuery(req)
	if known {
		if err := m.sync(ctx); err != nil {
			known = false
			m.log.Warn("fsmonitor: trivial reply", "err", err)
		}
	}
	a := m.j.query(token, since, known)
	if a.trivial {
		m.trivial.Add(1)
	}
	return a
}

// ServeIPC answers one request of git's fsmonitor protocol: "quit" stops
// the server (an empty reply), "flush" starts a new token (a trivial
// reply), "builtin:<token>:<seq>" gets the changes since then, and
// anything else a trivial reply. It is the Monitor's engine.Handler;
// handlers must run on the engine's workers, not inline, since a query
// waits for its cookie.
func (m *Monitor) ServeIPC(ctx context.Context, req []byte, w *engine.ReplyWriter) error {
	switch string(req) {
	case reqQuit:
		return engine.ErrQuit
	case reqFlush:
		m.Flush()
		req = nil
	}
	a := m.query(ctx, req)
	buf := make([]byte, 0, 4096)
	return writeReply(a, buf, func(p []byte) error {
		_, err := w.Write(p)
		return err
	})
}

// Query answers a query for the changes since token as git would send it
// ("builtin:<token>:<seq>"), for programs that embed the Monitor: the
// token to ask with next time, and the changed paths, or trivial when
// everything must be assumed changed.
func (m *Monitor) Query(ctx context.Context, token string) (next string, paths []string, trivial bool) {
	a := m.query(ctx, []byte(token))
	return builtinPrefix + a.token + ":" + strconv.FormatUint(a.seq, 10), a.paths, a.trivial
}

package fsmonitor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// monitors numbers the Monitors of this process, so that two of the same
// worktree (in tests) never name a cookie alike.
var monitors atomic.Uint64

// maxIdleCookies bounds the cookie files kept between queries: as many
// as queries usually wait at once; a burst beyond makes and removes more.
const maxIdleCookies = 16

// cookieSet holds the queries waiting for their cookie. The watcher
// closes a waiter's channel when it sees the cookie, after journaling
// every event before it. Invariant (mu): a name is in m from just before
// its file is created until its query stops waiting.
type cookieSet struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

func (c *cookieSet) add(name string) chan struct{} {
	ch := make(chan struct{})
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]chan struct{})
	}
	c.m[name] = ch
	c.mu.Unlock()
	return ch
}

func (c *cookieSet) remove(name string) {
	c.mu.Lock()
	delete(c.m, name)
	c.mu.Unlock()
}

// wakeAll wakes every waiting query: after an overflow their cookies'
// events may be lost, and the new token makes their replies trivial
// anyway. The watcher goroutine calls it.
func (c *cookieSet) wakeAll() {
	c.mu.Lock()
	for name, ch := range c.m {
		close(ch)
		delete(c.m, name)
	}
	c.mu.Unlock()
}

// seen wakes the query waiting for the cookie name, if any. The watcher
// goroutine calls it.
func (c *cookieSet) seen(name string) {
	c.mu.Lock()
	if ch, ok := c.m[name]; ok {
		close(ch)
		delete(c.m, name)
	}
	c.mu.Unlock()
}

// cookieFiles are the files a Monitor's queries rename to make their
// cookies. A rename within the cookie directory makes an event as
// ordered as a create's, without allocating an inode: creating and
// removing a file per query churns inodes, and a file system without a
// journal (ext4 in that mode) then scans past every recently deleted one
// to allocate the next, which made a create cost more than the rest of
// a query. Invariant (mu): idle lists files that exist under those names
// and that no query is renaming; once closed, nothing is added and
// every file put back is removed.
type cookieFiles struct {
	mu     sync.Mutex
	idle   []string
	closed bool
}

// make makes a file named path: an idle file renamed, or a new one
// when none is idle or the rename fails (someone removed the file).
func (c *cookieFiles) make(path string) error {
	for {
		c.mu.Lock()
		n := len(c.idle)
		if n == 0 {
			c.mu.Unlock()
			break
		}
		old := c.idle[n-1]
		c.idle = c.idle[:n-1]
		c.mu.Unlock()
		if renameCookie(old, path) == nil {
			return nil
		}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}

// put keeps the file path for a later query, or removes it when enough
// are idle or the Monitor is closed.
func (c *cookieFiles) put(path string) {
	c.mu.Lock()
	if c.closed || len(c.idle) >= maxIdleCookies {
		c.mu.Unlock()
		os.Remove(path)
		return
	}
	c.idle = append(c.idle, path)
	c.mu.Unlock()
}

// close removes the idle files; files still in use are removed when
// their queries put them back.
func (c *cookieFiles) close() {
	c.mu.Lock()
	idle := c.idle
	c.idle, c.closed = nil, true
	c.mu.Unlock()
	for _, p := range idle {
		os.Remove(p)
	}
}

// removeStaleCookies removes the files a daemon that did not close left
// in the cookie directory. Removing one that another Monitor of the
// same worktree still uses costs it nothing but a create.
func removeStaleCookies(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Type().IsRegular() {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// sync makes a cookie and waits until the watcher has seen it: every
// change made before the cookie is then in the journal.
func (m *Monitor) sync(ctx context.Context) error {
	name := m.cookiePrefix + strconv.FormatUint(m.cookieSeq.Add(1), 10)
	seen := m.cookies.add(name)
	defer m.cookies.remove(name)
	path := filepath.Join(m.cookieDir, name)
	if err := m.files.make(path); err != nil {
		return fmt.Errorf("fsmonitor: cookie: %w", err)
	}
	defer m.files.put(path)
	m.w.help(seen)
	t := time.NewTimer(m.opts.CookieTimeout)
	defer t.Stop()
	select {
	case <-seen:
		return nil
	case <-t.C:
		return ErrCookieTimeout
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-m.done:
		return ErrClosed
	}
}

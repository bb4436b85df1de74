package fsmonitor

import "errors"

var (
	// ErrClosed is returned by a Monitor's methods after Close.
	ErrClosed = errors.New("fsmonitor: monitor closed")

	// ErrCookieTimeout means that a cookie file did not come back from the
	// watcher within Options.CookieTimeout: the journal may miss changes
	// made just before the query, so the reply is trivial.
	ErrCookieTimeout = errors.New("fsmonitor: cookie not seen in time")

	// ErrWatchLimit means that the kernel refused a watch
	// (fs.inotify.max_user_watches): a directory is not watched, and
	// replies are trivial until a flush, or the watcher's own retry,
	// watches every directory.
	ErrWatchLimit = errors.New("fsmonitor: out of inotify watches")

	// ErrRemote is Start's refusal of a worktree on a network or FUSE
	// filesystem, where the kernel reports only this machine's changes
	// (Options.AllowRemote, git's fsmonitor.allowRemote).
	ErrRemote = errors.New("fsmonitor: worktree on a remote filesystem")

	// ErrGone is Serve's return when the worktree or its git directory
	// was removed or moved away (Monitor.Gone): there is nothing left to
	// watch, as git's own daemon concludes.
	ErrGone = errors.New("fsmonitor: worktree or git directory gone")
)

// Package fsmonitor is a filesystem monitor for git, built on pktipc's
// engine: it watches a worktree and answers git's fsmonitor protocol
// ("which paths changed since token T?") over the worktree's simple-ipc
// socket, as `git fsmonitor--daemon` does, so that `git status` with
// core.fsmonitor=true asks it instead of scanning the tree.
//
// # Tokens
//
// A Monitor keeps a journal of changed paths under a token,
// "<flushes>.<pid>.<UTC time>Z", and stamps each change with a sequence
// number. A query "builtin:<token>:<seq>" is answered with the paths
// changed after seq and the token and sequence number to ask with next
// time. Whenever the monitor cannot promise that the list is complete (an
// unknown or old token, a sequence number older than the journal keeps,
// a kernel queue overflow, a watch the kernel refused, a cookie that did
// not come back in time) the reply is trivial instead: "/", everything may
// have changed, and git scans. A reply is never wrong, only trivial.
//
// # Cookies
//
// Before it answers, the monitor creates a cookie file in the git
// directory and waits (Options.CookieTimeout) until its watcher sees it:
// the kernel reports events in order, so every change made before the
// query has then been journaled.
//
// # Watching
//
// On Linux the watcher holds one inotify watch per directory of the
// worktree, ignoring .git (except the cookie directory). A directory that
// appears is watched before it is read, so nothing created in it is
// missed; a directory that moves or disappears is reported with a
// trailing slash, which git takes as "everything under it". An overflow
// of the kernel's queue starts a new token and watches what was missed;
// running out of watches (fs.inotify.max_user_watches) is logged as an
// error and turns every reply trivial until a flush, or one of the
// watcher's own tries every few seconds, finds room again; a
// directory that cannot be watched for another reason (no read
// permission) turns them trivial until it can be. A worktree on a network
// or FUSE filesystem, where the kernel sees only this machine's changes,
// is refused unless Options.AllowRemote; once the worktree or its git
// directory is removed, Serve stops (ErrGone). Other platforms return
// errors.ErrUnsupported.
package fsmonitor

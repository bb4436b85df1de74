//go:build !linux

package fsmonitor

import (
	"context"
	"errors"
	"os"
)

type watcher struct{}

type watchStats struct {
	overflows int64
	refused   int64
	watches   int
}

func renameCookie(old, new string) error { return os.Rename(old, new) }

func newWatcher(context.Context, *Monitor) (*watcher, error) { return nil, errors.ErrUnsupported }

func (w *watcher) run()                 {}
func (w *watcher) rescan()              {}
func (w *watcher) help(<-chan struct{}) {}
func (w *watcher) stats() watchStats    { return watchStats{} }
func (w *watcher) close() error         { return errors.ErrUnsupported }

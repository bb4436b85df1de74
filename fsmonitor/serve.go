package fsmonitor

import (
	"context"
	"errors"
	"path/filepath"
	"sync"

	"github.com/pktipc/pktipc/engine"
	"github.com/pktipc/pktipc/uds"
)

// Serve watches opts.Worktree and serves git's fsmonitor protocol on
// pktipc's engine at socket (SocketPath of opts.GitDir when empty) until
// ctx ends, a client sends "quit", the socket is stolen, or the worktree
// or its git directory goes away. It returns nil after a quit, ctx's
// error when ctx ended, and ErrGone when there is nothing left to watch
// (Monitor.Gone); the engine's claim on the
// path (a live daemon there is refused, a dead socket replaced) applies.
// Handlers run on the engine's workers: options that make them inline are
// overridden.
func Serve(ctx context.Context, opts Options, socket string, serverOpts ...engine.Option) error {
	m, err := Start(ctx, opts)
	if err != nil {
		return err
	}
	defer m.Close()
	if socket == "" {
		if socket, err = SocketPath(m.opts.GitDir, m.opts.Worktree, ""); err != nil {
			return err
		}
	}
	// git's socket lives in the git directory, which is normally open for
	// others to enter (0755): checkSocketDir applies the checks that
	// matter there instead of the engine's for private directories.
	if err := checkSocketDir(filepath.Dir(socket)); err != nil {
		return err
	}
	serverOpts = append(serverOpts, engine.WithInlineHandlers(false), engine.WithListenOptions(uds.WithInsecureDir()))
	srv, err := engine.NewServer(socket, m, serverOpts...)
	if err != nil {
		return err
	}
	m.log.Info("fsmonitor: serving", "worktree", m.opts.Worktree, "socket", srv.Path())
	sctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-m.Gone():
			cancel(ErrGone)
		case <-sctx.Done():
		}
	})
	err = srv.Serve(sctx)
	cancel(nil)
	wg.Wait()
	switch {
	case errors.Is(err, engine.ErrServerClosed):
		return nil
	case ctx.Err() == nil && errors.Is(context.Cause(sctx), ErrGone):
		return ErrGone
	}
	return err
}

package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"sync"
	"time"
)

const (
	// startTimeout bounds a server's start-up: a re-executed Go binary
	// under the race detector on a loaded two-core machine takes a second
	// or two; more means it is stuck.
	startTimeout = 20 * time.Second
	// stopTimeout is how long a server has between SIGTERM and SIGKILL.
	stopTimeout = 3 * time.Second
	// dialPoll is the interval between readiness probes of a ReadyDial
	// server.
	dialPoll = 5 * time.Millisecond
	// stderrTail is how much of a child's standard error is kept for error
	// messages.
	stderrTail = 4 << 10
)

var errExited = errors.New("exited")

// tailWriter keeps the last stderrTail bytes written to it. Safe for
// concurrent use (exec copies into it from its own goroutine).
type tailWriter struct {
	mu  sync.Mutex
	buf []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if over := len(w.buf) - stderrTail; over > 0 {
		w.buf = append(w.buf[:0], w.buf[over:]...)
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(bytes.TrimSpace(w.buf))
}

// readyWriter closes ready when it sees the line "ready". Safe for
// concurrent use.
type readyWriter struct {
	tailWriter
	once  sync.Once
	ready chan struct{}
}

func (w *readyWriter) Write(p []byte) (int, error) {
	n, _ := w.tailWriter.Write(p)
	w.mu.Lock()
	seen := bytes.Contains(w.buf, []byte(readyLine))
	w.mu.Unlock()
	if seen {
		w.once.Do(func() { close(w.ready) })
	}
	return n, nil
}

// serverProc is a running server child.
type serverProc struct {
	peer    string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	stderr  *tailWriter
	exited  chan struct{} // closed when Wait returned
	waitErr error         // Wait's result, set before exited closes
}

// startServer starts sc and waits until it accepts connections on socket.
func startServer(ctx context.Context, peer string, sc *ServerCmd, socket string) (*serverProc, error) {
	cmd := sc.Cmd
	setChildAttrs(cmd)
	p := &serverProc{peer: peer, cmd: cmd, stderr: &tailWriter{}, exited: make(chan struct{})}
	stdout := &readyWriter{ready: make(chan struct{})}
	cmd.Stdout = stdout
	cmd.Stderr = p.stderr
	cmd.WaitDelay = stopTimeout
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, &ServerError{Peer: peer, Stage: "start", Err: err}
	}
	p.stdin = stdin
	if err := cmd.Start(); err != nil {
		stdin.Close()
		return nil, &ServerError{Peer: peer, Stage: "start", Err: err}
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()

	var ready <-chan struct{} = stdout.ready
	var dialDone chan struct{}
	dialCtx, cancelDial := context.WithCancel(ctx)
	if sc.Ready == ReadyDial {
		dialDone = make(chan struct{})
		ready = dialDone
		go func() {
			defer close(dialDone)
			waitDial(dialCtx, socket)
		}()
	}
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	var failure error
	select {
	case <-ready:
	case <-p.exited:
		failure = &ServerError{Peer: peer, Stage: "ready", Stderr: p.stderr.String(), Err: fmt.Errorf("%w before it was ready: %v", errExited, p.waitErr)}
	case <-timer.C:
		failure = &ServerError{Peer: peer, Stage: "ready", Stderr: p.stderr.String(), Err: fmt.Errorf("not ready after %v", startTimeout)}
	case <-ctx.Done():
		failure = ctx.Err()
	}
	cancelDial()
	if dialDone != nil {
		<-dialDone
	}
	if failure != nil {
		p.kill()
		return nil, failure
	}
	// A ReadyDial probe can succeed after an early exit raced with it.
	select {
	case <-p.exited:
		return nil, &ServerError{Peer: peer, Stage: "ready", Stderr: p.stderr.String(), Err: fmt.Errorf("%w: %v", errExited, p.waitErr)}
	default:
	}
	return p, nil
}

// waitDial connects to socket until a connection is accepted or ctx ends.
func waitDial(ctx context.Context, socket string) {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "unix", socket)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(dialPoll):
		}
	}
}

func (p *serverProc) pid() int { return p.cmd.Process.Pid }

// alive reports whether the server is still running.
func (p *serverProc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop ends the server: EOF on stdin and SIGTERM to its process group, then
// SIGKILL after stopTimeout. It reports a server that had died on its own.
func (p *serverProc) stop() error {
	var err error
	if !p.alive() {
		err = &ServerError{Peer: p.peer, Stage: "run", Stderr: p.stderr.String(), Err: fmt.Errorf("%w during the run: %v", errExited, p.waitErr)}
	}
	p.stdin.Close()
	killGroup(p.cmd, false)
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		p.kill()
	}
	return err
}

// kill ends the server at once and waits for it.
func (p *serverProc) kill() {
	p.stdin.Close()
	killGroup(p.cmd, true)
	<-p.exited
}

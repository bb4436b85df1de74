package bench

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/pktipc/pktipc/fdpass"
)

const (
	// fdpassWindow bounds the messages a client has queued in its Passer
	// and not yet seen completed: enough to let the passer batch sends
	// (sendmmsg), small against its send queue limit.
	fdpassWindow = 256
	// fdEndMarker is the data-only message that ends a descriptor stream;
	// the server answers fdAck once it has read everything before it.
	fdEndMarker = 'E'
	fdAck       = 'A'
	// fdMsgMarker is the one data byte of each descriptor message of the
	// unix peer (a stream socket needs a byte to carry SCM_RIGHTS).
	fdMsgMarker = 'F'
	// MaxFDsPerMessage is the largest descriptor count of the fdpass
	// scenario: the kernel's SCM_MAX_FD, what one sendmsg can carry.
	MaxFDsPerMessage = 253
	// fdFinishTimeout bounds the wait for the server's acknowledgement.
	fdFinishTimeout = stallTimeout
)

// fdpassPeer is the "fdpass" peer: pktipc's fdpass package, server and
// client. It runs only the fdpass scenario.
type fdpassPeer struct{}

func (fdpassPeer) Prepare(context.Context, *Env) error { return nil }

func (fdpassPeer) Server(env *Env, run Run) (*ServerCmd, error) {
	return fdpassRole.command(env, run, noSettings{})
}

func (fdpassPeer) Client(ctx context.Context, env *Env, run Run, m *Meter) (Load, error) {
	return GoClient{OpenStream: openFDPassStream, Request: noPayload}.Run(ctx, run, m)
}

func noPayload(int) []byte { return nil }

func serveFDPass(ctx context.Context, cfg serverConfig, _ noSettings, ready func()) error {
	l, err := fdpass.Listen(cfg.Socket)
	if err != nil {
		return err
	}
	ready()
	var (
		mu      sync.Mutex
		passers []*fdpass.Passer
		wg      sync.WaitGroup
	)
	for {
		p, err := l.Accept(ctx)
		if err != nil {
			break
		}
		mu.Lock()
		passers = append(passers, p)
		mu.Unlock()
		wg.Go(func() {
			var m fdpass.Message
			for {
				if err := p.RecvInto(time.Time{}, &m); err != nil {
					return
				}
				if len(m.FDs) > 0 {
					m.Close()
					continue
				}
				if len(m.Data) == 1 && m.Data[0] == fdEndMarker {
					if p.SendFDs(nil, []byte{fdAck}, nil) != nil {
						return
					}
				}
			}
		})
	}
	l.Close()
	mu.Lock()
	for _, p := range passers {
		p.Close()
	}
	mu.Unlock()
	wg.Wait()
	return nil
}

// fdpassStream sends the same descriptor again and again; the passer keeps
// it open (KeepOpen) and the kernel installs a fresh copy at the server.
type fdpassStream struct {
	p      *fdpass.Passer
	file   *os.File
	fds    []int
	window chan struct{}
	done   func(error)
	failed chan error
	once   sync.Once
}

func openFDPassStream(ctx context.Context, socket string, size int) (Streamer, error) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	p, err := fdpass.Dial(ctx, socket, fdpass.KeepOpen())
	if err != nil {
		f.Close()
		return nil, err
	}
	s := &fdpassStream{p: p, file: f, window: make(chan struct{}, fdpassWindow), failed: make(chan error, 1)}
	for range size {
		s.fds = append(s.fds, int(f.Fd()))
	}
	s.done = func(err error) {
		if err != nil {
			select {
			case s.failed <- err:
			default:
			}
		}
		<-s.window
	}
	return s, nil
}

func (s *fdpassStream) Send([]byte) error {
	select {
	case err := <-s.failed:
		return err
	case s.window <- struct{}{}:
	}
	if err := s.p.SendFDs(s.fds, nil, s.done); err != nil {
		<-s.window
		return err
	}
	return nil
}

func (s *fdpassStream) Finish(ctx context.Context) error {
	if err := s.p.SendFDs(nil, []byte{fdEndMarker}, nil); err != nil {
		return err
	}
	m, err := s.p.Recv(time.Now().Add(fdFinishTimeout))
	if err != nil {
		return err
	}
	m.Close()
	if len(m.Data) != 1 || m.Data[0] != fdAck {
		return fmt.Errorf("bench: fdpass ack %q", m.Data)
	}
	select {
	case err := <-s.failed:
		return err
	default:
	}
	return nil
}

// Close closes the passer (pending completions run first) and then the
// descriptor it was sending.
func (s *fdpassStream) Close() error {
	s.once.Do(func() {
		s.p.Close()
		s.file.Close()
	})
	return nil
}

package bench

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ttrpcMaxSize is the largest payload the ttrpc peer runs: ttrpc caps a
// whole message at 4 MiB, and the request envelope (service and method
// names, stream id, protobuf tags) needs a little of it.
const ttrpcMaxSize = 4<<20 - 4<<10

func serveTTRPC(ctx context.Context, cfg serverConfig, _ noSettings, ready func()) error {
	l, err := listenUnix(cfg.Socket)
	if err != nil {
		return err
	}
	s, err := ttrpc.NewServer()
	if err != nil {
		l.Close()
		return err
	}
	s.RegisterService(rpcService, &ttrpc.ServiceDesc{
		Methods: map[string]ttrpc.Method{
			rpcEcho: func(_ context.Context, unmarshal func(any) error) (any, error) {
				var req wrapperspb.BytesValue
				if err := unmarshal(&req); err != nil {
					return nil, err
				}
				return &req, nil
			},
		},
		Streams: map[string]ttrpc.Stream{
			rpcSink: {
				StreamingClient: true,
				Handler: func(_ context.Context, st ttrpc.StreamServer) (any, error) {
					var msg wrapperspb.BytesValue
					for {
						err := st.RecvMsg(&msg)
						if errors.Is(err, io.EOF) {
							return &wrapperspb.BytesValue{}, nil
						}
						if err != nil {
							return nil, err
						}
					}
				},
			},
		},
	})
	ready()
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx, l) }()
	select {
	case <-ctx.Done():
		s.Close()
		<-errc
		return nil
	case err := <-errc:
		return err
	}
}

// ttrpcPeer is the "ttrpc" peer: containerd's ttrpc, the local-socket RPC
// of container shims, registered without generated code; payloads are
// wrapperspb.BytesValue, as ttrpc only speaks protobuf.
type ttrpcPeer struct{}

func (ttrpcPeer) Prepare(context.Context, *Env) error { return nil }

func (ttrpcPeer) Server(env *Env, run Run) (*ServerCmd, error) {
	return ttrpcRole.command(env, run, noSettings{})
}

func (ttrpcPeer) Client(ctx context.Context, env *Env, run Run, m *Meter) (Load, error) {
	return GoClient{Dial: dialTTRPC, OpenStream: openTTRPCStream}.Run(ctx, run, m)
}

type ttrpcConn struct {
	c         *ttrpc.Client
	req, resp wrapperspb.BytesValue
	once      sync.Once
}

func newTTRPCClient(ctx context.Context, socket string) (*ttrpc.Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	return ttrpc.NewClient(c), nil
}

func dialTTRPC(ctx context.Context, socket string) (RoundTripper, error) {
	c, err := newTTRPCClient(ctx, socket)
	if err != nil {
		return nil, err
	}
	return &ttrpcConn{c: c}, nil
}

func (t *ttrpcConn) RoundTrip(ctx context.Context, req []byte) (int, error) {
	t.req.Value = req
	err := t.c.Call(ctx, rpcService, rpcEcho, &t.req, &t.resp)
	t.req.Value = nil
	if err != nil {
		return 0, err
	}
	return len(t.resp.Value), nil
}

// Close closes the client and its connection, failing a pending call.
func (t *ttrpcConn) Close() error {
	t.once.Do(func() { t.c.Close() })
	return nil
}

type ttrpcStream struct {
	c      *ttrpc.Client
	cs     ttrpc.ClientStream
	msg    wrapperspb.BytesValue
	cancel context.CancelFunc
	once   sync.Once
}

func openTTRPCStream(ctx context.Context, socket string, _ int) (Streamer, error) {
	c, err := newTTRPCClient(ctx, socket)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cs, err := c.NewStream(sctx, &ttrpc.StreamDesc{StreamingClient: true}, rpcService, rpcSink, nil)
	if err != nil {
		cancel()
		c.Close()
		return nil, err
	}
	return &ttrpcStream{c: c, cs: cs, cancel: cancel}, nil
}

func (t *ttrpcStream) Send(msg []byte) error {
	t.msg.Value = msg
	err := t.cs.SendMsg(&t.msg)
	t.msg.Value = nil
	return err
}

func (t *ttrpcStream) Finish(context.Context) error {
	if err := t.cs.CloseSend(); err != nil {
		return err
	}
	var resp wrapperspb.BytesValue
	return t.cs.RecvMsg(&resp)
}

func (t *ttrpcStream) Close() error {
	t.once.Do(func() {
		t.cancel()
		t.c.Close()
	})
	return nil
}

package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// rawCodec carries []byte messages as they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *[]byte:
		return *m, nil
	case []byte:
		return m, nil
	}
	return nil, fmt.Errorf("bench: raw codec cannot marshal %T", v)
}

// Unmarshal copies: gRPC reuses data after the call returns.
func (rawCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("bench: raw codec cannot unmarshal into %T", v)
	}
	*m = append((*m)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "pktipc-raw" }

var grpcSinkDesc = grpc.StreamDesc{StreamName: rpcSink, ClientStreams: true}

const (
	grpcEchoMethod = "/" + rpcService + "/" + rpcEcho
	grpcSinkMethod = "/" + rpcService + "/" + rpcSink
)

func serveGRPC(ctx context.Context, cfg serverConfig, _ noSettings, ready func()) error {
	l, err := listenUnix(cfg.Socket)
	if err != nil {
		return err
	}
	s := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}),
		grpc.MaxRecvMsgSize(rpcMaxMessage), grpc.MaxSendMsgSize(rpcMaxMessage))
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: rpcService,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: rpcEcho,
			Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				var b []byte
				if err := dec(&b); err != nil {
					return nil, err
				}
				return &b, nil
			},
		}},
		Streams: []grpc.StreamDesc{{
			StreamName:    rpcSink,
			ClientStreams: true,
			Handler: func(_ any, st grpc.ServerStream) error {
				var b []byte
				for {
					err := st.RecvMsg(&b)
					if errors.Is(err, io.EOF) {
						empty := []byte{}
						return st.SendMsg(&empty)
					}
					if err != nil {
						return err
					}
				}
			},
		}},
	}, struct{}{})
	ready()
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(l) }()
	select {
	case <-ctx.Done():
		s.Stop()
		<-errc
		return nil
	case err := <-errc:
		return err
	}
}

// grpcPeer is the "grpc" peer: google.golang.org/grpc over a Unix socket,
// the RPC most Go users reach for. The service is described by hand (no
// protoc) and uses a raw-bytes codec, so the payload is not wrapped in
// protobuf: gRPC's best case.
type grpcPeer struct{}

func (grpcPeer) Prepare(context.Context, *Env) error { return nil }

func (grpcPeer) Server(env *Env, run Run) (*ServerCmd, error) {
	return grpcRole.command(env, run, noSettings{})
}

func (grpcPeer) Client(ctx context.Context, env *Env, run Run, m *Meter) (Load, error) {
	return GoClient{Dial: dialGRPC, OpenStream: openGRPCStream}.Run(ctx, run, m)
}

func newGRPCConn(socket string) (*grpc.ClientConn, error) {
	return grpc.NewClient("unix://"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}),
			grpc.MaxCallRecvMsgSize(rpcMaxMessage), grpc.MaxCallSendMsgSize(rpcMaxMessage)))
}

// grpcConn is one client: its own ClientConn (and so its own connection).
type grpcConn struct {
	cc   *grpc.ClientConn
	resp []byte
}

// dialGRPC connects at once (NewClient is lazy) so that connect-per-request
// counts the connection and HTTP/2 set-up, as a user's fresh client would.
func dialGRPC(ctx context.Context, socket string) (RoundTripper, error) {
	cc, err := newGRPCConn(socket)
	if err != nil {
		return nil, err
	}
	return &grpcConn{cc: cc}, nil
}

func (g *grpcConn) RoundTrip(ctx context.Context, req []byte) (int, error) {
	if err := g.cc.Invoke(ctx, grpcEchoMethod, &req, &g.resp); err != nil {
		return 0, err
	}
	return len(g.resp), nil
}

// Close closes the ClientConn, failing a pending call; later calls are
// harmless.
func (g *grpcConn) Close() error {
	g.cc.Close()
	return nil
}

type grpcStream struct {
	cc     *grpc.ClientConn
	cs     grpc.ClientStream
	cancel context.CancelFunc
	once   sync.Once
}

func openGRPCStream(ctx context.Context, socket string, _ int) (Streamer, error) {
	cc, err := newGRPCConn(socket)
	if err != nil {
		return nil, err
	}
	// The stream lives beyond this call; Close cancels it.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cs, err := cc.NewStream(sctx, &grpcSinkDesc, grpcSinkMethod)
	if err != nil {
		cancel()
		cc.Close()
		return nil, err
	}
	return &grpcStream{cc: cc, cs: cs, cancel: cancel}, nil
}

func (g *grpcStream) Send(msg []byte) error { return g.cs.SendMsg(&msg) }

func (g *grpcStream) Finish(context.Context) error {
	if err := g.cs.CloseSend(); err != nil {
		return err
	}
	var resp []byte
	return g.cs.RecvMsg(&resp)
}

func (g *grpcStream) Close() error {
	g.once.Do(func() {
		g.cancel()
		g.cc.Close()
	})
	return nil
}

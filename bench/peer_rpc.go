package bench

// Shared by the gRPC and ttrpc peers: one service, hand-described without
// generated code, with a unary echo and a client-streaming sink.
const (
	rpcService = "pktipc.bench.Echo"
	rpcEcho    = "Echo"
	rpcSink    = "Sink"
	// rpcMaxMessage lets the RPC peers carry the largest message a
	// Selection allows, plus their own envelope.
	rpcMaxMessage = MaxSize + 64<<10
)

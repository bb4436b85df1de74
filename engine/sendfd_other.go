//go:build !linux

package engine

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/pktipc/pktipc/frame"
	"github.com/pktipc/pktipc/uds"
)

func send(ctx context.Context, path string, req []byte, o clientOptions) ([]byte, error) {
	return sendConn(ctx, path, req, o)
}

// sendConn is Send over a net.UnixConn, where bare descriptors are not
// available.
func sendConn(ctx context.Context, path string, req []byte, o clientOptions) ([]byte, error) {
	uc, err := uds.Dial(ctx, path, o.dial...)
	if err != nil {
		return nil, &ClientError{"dial", path, fmt.Errorf("%w: %w", ErrNotProcessed, err)}
	}
	defer uc.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = uc.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = uc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := uc.Write(frame.AppendMessage(make([]byte, 0, frame.EncodedLen(len(req))), req)); err != nil {
		return nil, &ClientError{"send", path, sendFailure(ctxOr(ctx, err))}
	}
	msg, err := frame.NewReader(uc, frame.SimpleIPC, o.maxReply).ReadMessage()
	if err != nil {
		return nil, &ClientError{"read", path, readFailure(ctxOr(ctx, err))}
	}
	return bytes.Clone(msg), nil
}

//go:build !linux

package engine

import "context"

func send(ctx context.Context, path string, req []byte, o clientOptions) ([]byte, error) {
	return sendConn(ctx, path, req, o)
}

//go:build !linux || !(amd64 || arm64)

package bench

import (
	"context"
	"errors"
	"runtime"
)

// shmipc-go builds and runs only on Linux on amd64 and arm64.
var errShmipcUnsupported = errors.New("shmipc-go runs on Linux on amd64 and arm64, not " + runtime.GOOS + "/" + runtime.GOARCH)

func (shmipcPeer) Prepare(context.Context, *Env) error {
	return &UnavailableError{Peer: "shmipc", Reason: errShmipcUnsupported.Error()}
}

func serveShmipc(context.Context, serverConfig, shmipcServerSettings, func()) error {
	return errShmipcUnsupported
}

func runShmipcClient(context.Context, serverConfig, clientChildSettings, func()) error {
	return errShmipcUnsupported
}

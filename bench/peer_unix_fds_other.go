//go:build !linux

package bench

import (
	"context"
	"errors"
	"net"
)

var errNoFDs = errors.New("bench: descriptor passing is not supported on this platform")

// openUnixFDStream: descriptor passing with the standard library is wired
// for Linux only.
func openUnixFDStream(ctx context.Context, socket string, size int) (Streamer, error) {
	return nil, errNoFDs
}

func serveUnixFDs(c net.Conn) {}

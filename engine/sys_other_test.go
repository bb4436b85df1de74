//go:build !linux

package engine

import (
	"errors"
	"net"
)

func setNofile(int) error     { return errors.ErrUnsupported }
func nofile() (uint64, error) { return 0, errors.ErrUnsupported }
func unixRights(int) []byte   { return nil }

func sendBufferOf(*net.UnixConn) (int, error) { return 0, errors.ErrUnsupported }
func unreadOf(*net.UnixConn) (int, error)     { return 0, errors.ErrUnsupported }
func wmemMax() (int, bool)                    { return 0, false }

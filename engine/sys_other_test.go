//go:build !linux

package engine

import "errors"

func setNofile(int) error     { return errors.ErrUnsupported }
func nofile() (uint64, error) { return 0, errors.ErrUnsupported }
func unixRights(int) []byte   { return nil }

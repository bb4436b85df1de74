//go:build !linux

package uds

import "errors"

func inherited([]Option) (*Activation, error) { return nil, errors.ErrUnsupported }

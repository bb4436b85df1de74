//go:build !linux

package engine

import "errors"

// lastLevelCache is unknown here: large messages are copied by Go's copy.
func lastLevelCache() (int64, error) { return 0, errors.ErrUnsupported }

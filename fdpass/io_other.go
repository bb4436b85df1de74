//go:build !linux

package fdpass

import "errors"

// readerState and writerState hold the Linux I/O engine's state; elsewhere
// only the fields the portable code touches exist.
type readerState struct {
	free                   []*inbound
	budgetFDs, budgetBytes int
}

type writerState struct{}

// platformInit makes New fail with errors.ErrUnsupported, so the loops
// below never run.
func (p *Passer) platformInit() error { return errors.ErrUnsupported }
func (p *Passer) readLoop()           { p.wg.Done() }
func (p *Passer) writeLoop()          { p.wg.Done() }

func closeFDs(fds []int) error {
	if len(fds) == 0 {
		return nil
	}
	return errors.ErrUnsupported
}

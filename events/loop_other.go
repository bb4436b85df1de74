//go:build !linux

package events

import (
	"context"
	"errors"
	"net"
	"time"
)

// loop is empty: the event loop needs epoll.
type loop struct{}

// conn is empty on this system.
type conn struct{ kind connKind }

type connKind uint8

const kindConn connKind = 0

func newLoop(options) (*loop, error) { return nil, errors.ErrUnsupported }

func (l *loop) listen(string, Format) (ConnID, error) { return 0, errors.ErrUnsupported }
func (l *loop) connect(context.Context, string, Format) (ConnID, error) {
	return 0, errors.ErrUnsupported
}
func (l *loop) adopt(int, Format) (ConnID, error)                    { return 0, errors.ErrUnsupported }
func (l *loop) addExternal(int) (ConnID, error)                      { return 0, errors.ErrUnsupported }
func (l *loop) addSwitch(ConnID, ConnID, Transform, Transform) error { return errors.ErrUnsupported }
func (l *loop) waitEvent(context.Context) (Event, error)             { return Event{}, errors.ErrUnsupported }
func (l *loop) lookup(ConnID) *conn                                  { return nil }
func (l *loop) setTimer(TimerKind, time.Duration)                    {}
func (l *loop) closeID(ConnID) error                                 { return errors.ErrUnsupported }
func (l *loop) detach(ConnID) (*net.UnixConn, error)                 { return nil, errors.ErrUnsupported }
func (l *loop) stats() Stats                                         { return Stats{} }
func (l *loop) close() error                                         { return errors.ErrUnsupported }

func (c *conn) write(uint8, []byte) error          { return errors.ErrUnsupported }
func (c *conn) schedule(uint8, []byte, bool) error { return errors.ErrUnsupported }

package events

import (
	"context"
	"net"
	"time"
)

// Loop is one LibIPC-style context: services, connections, external
// descriptors, switches and timers, and the single stream of events they
// produce. It starts no goroutines: its work happens inside WaitEvent (or
// Run) and inside the Write and Schedule calls.
//
// WaitEvent is called by one goroutine at a time (callers are serialised);
// every other method is safe for concurrent use, from any goroutine, also
// while another goroutine waits in WaitEvent. Transforms run inside
// WaitEvent and may call only Write and Schedule.
type Loop struct {
	l *loop
}

// Stats is a snapshot of a Loop's load.
type Stats struct {
	Conns  int // live message connections
	Queued int // events and turns waiting in the ready queue
}

// New makes a Loop. Close it to release its descriptors.
func New(opts ...Option) (*Loop, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	l, err := newLoop(o)
	if err != nil {
		return nil, err
	}
	return &Loop{l: l}, nil
}

// Listen serves the service name under the run directory (see WithLayout,
// WithRunDir) with uds.Listen's guarantees: a live server's name is never
// taken, a dead one's socket is replaced, the socket is private to our
// user unless the options say otherwise. Clients that connect are reported
// as Connection events and speak format f. The returned ID names the
// service; CloseConn stops it and removes its socket.
func (l *Loop) Listen(name string, f Format) (ConnID, error) { return l.l.listen(name, f) }

// Connect dials the service name under the run directory (uds.Dial; ctx
// bounds it) and adds the connection, speaking format f. No Connection
// event is reported for it.
func (l *Loop) Connect(ctx context.Context, name string, f Format) (ConnID, error) {
	return l.l.connect(ctx, name, f)
}

// AddConn adopts fd, a connected stream socket (a socketpair end, an
// accepted TCP connection), as a message connection speaking format f.
// The Loop owns fd from then on and closes it when the connection ends,
// also when AddConn fails.
func (l *Loop) AddConn(fd int, f Format) (ConnID, error) { return l.l.adopt(fd, f) }

// AddExternal watches fd, which the application keeps owning, for
// readability. Each time it becomes readable one External event is
// reported; the next is reported only after the application called
// WaitEvent again (having had its chance to read), so readiness that the
// application handles is never reported twice and nothing spins while an
// event waits. CloseConn stops watching without closing fd; call it
// before closing fd, whose number could otherwise be reused by a
// connection of the Loop that CloseConn would then stop watching.
func (l *Loop) AddExternal(fd int) (ConnID, error) { return l.l.addExternal(fd) }

// AddSwitch joins two message connections: from then on each message that
// arrives on a passes through in (nil: unchanged) and is scheduled on b,
// and each one that arrives on b passes through out and is scheduled on
// a; WaitEvent reports SwitchRx and SwitchTx for them instead of
// MessageRx and MessageTx. The two sides may speak different formats.
// When either side ends, or a transform returns SwitchError or FDClosing,
// both are closed and each is reported once as Disconnection. A side whose
// partner's queue passes its byte bound is not read until that queue
// drains.
func (l *Loop) AddSwitch(a, b ConnID, in, out Transform) error {
	return l.l.addSwitch(a, b, in, out)
}

// WaitEvent returns the next event: exactly one per call, in the order
// things happened, connections taking turns so that none can starve
// another (a connection with many messages buffered yields one per turn),
// messages of one connection in order, each one whole. It waits until an
// event is ready, ctx ends (its error is returned), or the Loop is closed
// (ErrClosed). What the event's Data points to stays valid until the next
// call. One goroutine at a time; concurrent callers are serialised.
func (l *Loop) WaitEvent(ctx context.Context) (Event, error) { return l.l.waitEvent(ctx) }

// Run is the callback form of WaitEvent: it calls fn with each event until
// fn returns an error (returned), ctx ends or the Loop is closed (their
// errors are returned). fn may call any method but WaitEvent and Run.
func (l *Loop) Run(ctx context.Context, fn func(Event) error) error {
	for {
		ev, err := l.WaitEvent(ctx)
		if err != nil {
			return err
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// Write sends data on connection id now: it returns once the whole frame
// is in the kernel, after any message scheduled before it, or fails. It
// waits for a peer that does not read at most the write timeout
// (WithWriteTimeout); a frame that timed out half written ends the
// connection. data is not kept. Safe for concurrent use; writes to one
// connection are serialised.
func (l *Loop) Write(id ConnID, data []byte) error { return l.WriteTyped(id, 0, data) }

// WriteTyped is Write with the LibIPCC format's user type byte (ignored by
// the other formats).
func (l *Loop) WriteTyped(id ConnID, userType uint8, data []byte) error {
	c := l.l.lookup(id)
	if c == nil || c.kind != kindConn {
		return unknown(id, "write")
	}
	return c.write(userType, data)
}

// Schedule queues data on connection id and returns at once; a MessageTx
// event reports it written, in Schedule order. It is copied, so the caller
// may reuse data. A queue at its bound (WithQueueLimit) fails with
// ErrQueueFull: the peer is not reading. If the connection ends first,
// its MessageTx carries the error instead.
func (l *Loop) Schedule(id ConnID, data []byte) error { return l.ScheduleTyped(id, 0, data) }

// ScheduleTyped is Schedule with the LibIPCC format's user type byte.
func (l *Loop) ScheduleTyped(id ConnID, userType uint8, data []byte) error {
	c := l.l.lookup(id)
	if c == nil || c.kind != kindConn {
		return unknown(id, "schedule")
	}
	return c.schedule(userType, data, false)
}

// SetTimer sets the Idle or the Periodic timer to d; zero turns it off.
// The Idle timer fires after d passes with no event returned, and again
// after each further d of quiet; the Periodic one fires every d, busy or
// not.
func (l *Loop) SetTimer(k TimerKind, d time.Duration) error {
	if (k != Idle && k != Periodic) || d < 0 {
		return &OptionError{Option: "timer", Value: d, Reason: "want Idle or Periodic and a duration >= 0"}
	}
	l.l.setTimer(k, d)
	return nil
}

// CloseConn ends connection id without a Disconnection event: its
// scheduled messages are reported by MessageTx events carrying an error,
// a Write blocked on it fails, its descriptor is closed (an external
// descriptor is only forgotten; a listener's socket is removed). A switch
// partner ends with it and is reported.
func (l *Loop) CloseConn(id ConnID) error { return l.l.closeID(id) }

// Detach takes a message connection out of the Loop without closing it,
// for a protocol the Loop does not speak, such as descriptor passing with
// fdpass.New (the Loop reads with read(2), which would drop descriptors).
// It fails with ErrBuffered if the Loop holds bytes read from it or
// messages queued for it, and with ErrClosed once a write on it failed
// (its Disconnection comes as an event). The MessageTx events of messages
// already written come before Detach returns.
func (l *Loop) Detach(id ConnID) (*net.UnixConn, error) { return l.l.detach(id) }

// Stats returns a snapshot of the Loop's load.
func (l *Loop) Stats() Stats { return l.l.stats() }

// Close closes every connection, listener and switch of the Loop (without
// events) and releases its descriptors; a WaitEvent in progress returns
// ErrClosed. Later calls do nothing. It must not be called from a
// transform.
func (l *Loop) Close() error { return l.l.close() }

package uds

import (
	"fmt"
	"net"
)

// Socket activation: a service manager (systemd, or anything that speaks
// its protocol) creates the sockets, starts the server with them open from
// descriptor 3 on, and says so in the environment: LISTEN_PID is the
// process meant, LISTEN_FDS how many descriptors it passed.

// Activation is what Inherited took over.
type Activation struct {
	// Listeners are the listening Unix stream sockets passed, in order.
	// They hold no claim on their path: the manager made it, and Close
	// leaves it in place.
	Listeners []*Listener
	// Conns are the connected Unix stream sockets passed (a manager that
	// accepts for the server starts one process per connection), in order.
	Conns []*net.UnixConn
}

// InheritError says why Inherited did not take over a descriptor it was
// passed: it is not a Unix stream socket, the policy refused its peer, or
// it could not be looked at.
type InheritError struct {
	FD  int
	Err error
}

func (e *InheritError) Error() string {
	return fmt.Sprintf("uds: inherited descriptor %d: %v", e.FD, e.Err)
}

func (e *InheritError) Unwrap() error { return e.Err }

// Inherited takes over the sockets a service manager passed to this
// process (socket activation). It reads and unsets LISTEN_PID, LISTEN_FDS
// and LISTEN_FDNAMES, so that children do not take them for theirs; when
// they are absent or name another process it takes nothing and returns an
// empty Activation. Every descriptor passed is made close-on-exec and told
// apart with SO_ACCEPTCONN. Listening Unix stream sockets become Listeners
// with opts' policy and SO_PASSRIGHTS setting (the options about the path,
// its directory and mode do not apply; Path is the name the socket was
// bound to). Connected ones become UnixConns once they pass what an
// accepted connection passes: the policy on the peer's credentials, and
// SO_PASSRIGHTS. Other sockets, and connections the policy refuses, are
// closed; a descriptor that is not a socket is left open (it may be the
// runtime's, where the count says more than was passed). The error
// returned beside what was taken joins an *InheritError for each
// descriptor not taken. Call it once, early. On systems other than Linux
// it returns errors.ErrUnsupported.
func Inherited(opts ...Option) (*Activation, error) { return inherited(opts) }

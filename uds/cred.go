package uds

import "net"

// Cred is a peer's identity as the kernel recorded it when the peer called
// connect(2) (SO_PEERCRED): a peer that later changes uid keeps the identity
// it connected with. UID and GID are the peer's effective ids as seen from
// our user namespace; an id unmapped there reads as the overflow id (65534)
// and is treated like any other foreign id. PID is for logging only: a PID
// can be reused, so never authorise by it.
type Cred struct {
	PID      int32
	UID, GID uint32
}

// PeerCred returns the credentials the kernel recorded for c's peer: for an
// accepted connection, the client at connect(2) time; for a dialled one, the
// server at listen(2) time. On systems other than Linux it returns
// errors.ErrUnsupported. Safe for concurrent use.
func PeerCred(c *net.UnixConn) (Cred, error) { return peerCred(c) }

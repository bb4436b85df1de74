package uds

import (
	"fmt"
	"os"
	"slices"
)

// Policy decides whether a peer may use a connection. A non-nil error
// denies; the error should wrap ErrDenied. Allow is called once per
// accepted connection, before any byte is read, from the goroutine that
// calls Accept; implementations used by several listeners must be safe for
// concurrent use (all the policies of this package are).
type Policy interface {
	Allow(Cred) error
}

// PolicyFunc adapts a function to Policy. A nil PolicyFunc denies everyone.
type PolicyFunc func(Cred) error

// Allow calls f. Safe for concurrent use if f is.
func (f PolicyFunc) Allow(c Cred) error {
	if f == nil {
		return fmt.Errorf("%w: nil policy function", ErrDenied)
	}
	return f(c)
}

// SameUser is the default policy: the peer's effective uid equals ours
// (taken when SameUser is called), or the peer is root. A process that runs
// as the overflow id (65534, often "nobody") shares that id with every peer
// whose id is unmapped in its user namespace (Cred), so SameUser admits
// them too: such a server should run as a user of its own.
func SameUser() Policy { return sameUser{euid: uint32(os.Geteuid())} }

type sameUser struct{ euid uint32 }

func (p sameUser) Allow(c Cred) error {
	if c.UID == p.euid || c.UID == 0 {
		return nil
	}
	return &denial{rule: "same user", cred: c}
}

// RootOnly admits only peers whose effective uid is 0.
func RootOnly() Policy { return rootOnly{} }

type rootOnly struct{}

func (rootOnly) Allow(c Cred) error {
	if c.UID == 0 {
		return nil
	}
	return &denial{rule: "root only", cred: c}
}

// AllowUIDs admits peers whose effective uid is in the list. Root is not
// implied: list 0 to admit it.
func AllowUIDs(uids ...uint32) Policy {
	return idList{ids: slices.Clone(uids), gid: false}
}

// AllowGIDs admits peers whose effective primary gid is in the list.
// SO_PEERCRED carries no supplementary groups, so membership through them
// does not count.
func AllowGIDs(gids ...uint32) Policy {
	return idList{ids: slices.Clone(gids), gid: true}
}

type idList struct {
	ids []uint32
	gid bool
}

func (p idList) Allow(c Cred) error {
	id, rule := c.UID, "uid allow-list"
	if p.gid {
		id, rule = c.GID, "gid allow-list"
	}
	if slices.Contains(p.ids, id) {
		return nil
	}
	return &denial{rule: rule, cred: c}
}

// AllowAll admits every peer. It exists so that giving up the credential
// check is an explicit, greppable choice.
func AllowAll() Policy { return allowAll{} }

type allowAll struct{}

func (allowAll) Allow(Cred) error { return nil }

// denial is the error of the built-in policies; it wraps ErrDenied. It is
// built only on the deny path, so admitting a peer allocates nothing.
type denial struct {
	rule string
	cred Cred
}

func (d *denial) Error() string {
	return fmt.Sprintf("uds: peer denied by credential policy (%s): uid %d gid %d pid %d",
		d.rule, d.cred.UID, d.cred.GID, d.cred.PID)
}

func (d *denial) Unwrap() error { return ErrDenied }

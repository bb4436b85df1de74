package bench

import (
	"context"
	"slices"
)

// Peer is one implementation under test, created fresh for each Runner.Run
// by its PeerInfo.New. The runner calls its methods from one goroutine.
type Peer interface {
	// Prepare readies the peer once per Runner.Run: build a binary, check
	// that a tool exists. It returns an *UnavailableError when the peer
	// cannot run here; the runner then skips the peer and reports why.
	Prepare(ctx context.Context, env *Env) error
	// Server describes the child process that serves run on run.Socket:
	// a server role of this binary (role.command), or a foreign server.
	Server(env *Env, run Run) (*ServerCmd, error)
	// Client drives run's load against the ready server. It calls m.Start
	// when the warm-up is over and m.Stop when the measured window ends, and
	// returns what it measured. It returns promptly, with ctx's error, when
	// ctx is cancelled.
	Client(ctx context.Context, env *Env, run Run, m *Meter) (Load, error)
}

// PeerInfo describes a peer of the list in peers.go.
type PeerInfo struct {
	Name      string // short name for tables and --peer; unique
	Doc       string // one line: what the server and client are
	Scenarios []Kind // the scenarios the peer supports
	// MaxSize is the largest message the peer can carry (0: MaxSize).
	MaxSize int
	// Quick includes the peer in the quick suite (the default command).
	Quick bool
	// NeedsTestTool marks peers that run git's test-tool: they take part
	// only when a test-tool path is given.
	NeedsTestTool bool
	// New returns a fresh Peer for one Runner.Run.
	New func() Peer
}

func (p PeerInfo) supports(c Case) bool {
	if !slices.Contains(p.Scenarios, c.Scenario) {
		return false
	}
	return p.MaxSize == 0 || c.Size <= p.MaxSize
}

// Baseline peers: every table shows each peer's ratio to these two.
const (
	BaselineC    = "c"
	BaselineUnix = "unix"
)

// Peers returns every peer in table order. Any goroutine may call it.
func Peers() []PeerInfo { return slices.Clone(peers) }

// PeerNames returns the names of every peer in table order. Any goroutine
// may call it.
func PeerNames() []string {
	names := make([]string, len(peers))
	for i, p := range peers {
		names[i] = p.Name
	}
	return names
}

// Lookup finds a peer by name. Any goroutine may call it.
func Lookup(name string) (PeerInfo, bool) {
	if i := peerOrder(name); i < len(peers) {
		return peers[i], true
	}
	return PeerInfo{}, false
}

// sharedMemoryRuns are the peers that run last in each round of a case,
// one right after the other: the shared-memory peers, whose rows are
// compared with each other and whose times follow how the machine
// places its processors, which can change within seconds. Run next to
// each other, the compared runs more often meet the machine alike.
var sharedMemoryRuns = []string{"c-shm", "pktipc-shm", "shmipc", "pktipc-shm-park"}

// runOrder is name's turn within a round of a case: its table order
// (peerOrder), but the peers of sharedMemoryRuns after every other, in
// that list's order.
func runOrder(name string) int {
	if i := slices.Index(sharedMemoryRuns, name); i >= 0 {
		return len(peers) + 1 + i
	}
	return peerOrder(name)
}

// peerOrder is name's position in tables: its index in peers, or past the
// end for a name that is not there.
func peerOrder(name string) int {
	if i := slices.IndexFunc(peers, func(p PeerInfo) bool { return p.Name == name }); i >= 0 {
		return i
	}
	return len(peers)
}

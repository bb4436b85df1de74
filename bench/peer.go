package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// Peer is one implementation under test, created fresh for each Runner.Run
// by its PeerInfo.New. The runner calls its methods from one goroutine.
type Peer interface {
	// Prepare readies the peer once per Runner.Run: build a binary, check
	// that a tool exists. It returns an *UnavailableError when the peer
	// cannot run here; the runner then skips the peer and reports why.
	Prepare(ctx context.Context, env *Env) error
	// Server describes the child process that serves run on run.Socket.
	// Use Env.GoServer for a role registered with RegisterServer.
	Server(env *Env, run Run) (*ServerCmd, error)
	// Client drives run's load against the ready server. It calls m.Start
	// when the warm-up is over and m.Stop when the measured window ends, and
	// returns what it measured. It returns promptly, with ctx's error, when
	// ctx is cancelled.
	Client(ctx context.Context, env *Env, run Run, m *Meter) (Load, error)
}

// PeerInfo registers a peer.
type PeerInfo struct {
	Name      string // short name for tables and --peer; unique
	Doc       string // one line: what the server and client are
	Order     int    // position in tables; baselines first (c 0, unix 10)
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

var registry struct {
	sync.Mutex
	peers []PeerInfo
}

// Register adds a peer to the registry. Call it from an init function of
// the file that defines the peer. It panics on a duplicate or incomplete
// registration, which is a programming error found at start-up.
func Register(info PeerInfo) {
	if info.Name == "" || info.New == nil || len(info.Scenarios) == 0 {
		panic(fmt.Sprintf("bench: incomplete registration of peer %q", info.Name))
	}
	registry.Lock()
	defer registry.Unlock()
	for _, p := range registry.peers {
		if p.Name == info.Name {
			panic("bench: peer " + info.Name + " registered twice")
		}
	}
	registry.peers = append(registry.peers, info)
	slices.SortStableFunc(registry.peers, func(a, b PeerInfo) int {
		if a.Order != b.Order {
			return a.Order - b.Order
		}
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
}

// Peers returns every registered peer in table order. Safe for concurrent
// use.
func Peers() []PeerInfo {
	registry.Lock()
	defer registry.Unlock()
	return slices.Clone(registry.peers)
}

// PeerNames returns the names of every registered peer in table order.
func PeerNames() []string {
	var names []string
	for _, p := range Peers() {
		names = append(names, p.Name)
	}
	return names
}

// Lookup finds a registered peer by name. Safe for concurrent use.
func Lookup(name string) (PeerInfo, bool) {
	registry.Lock()
	defer registry.Unlock()
	for _, p := range registry.peers {
		if p.Name == name {
			return p, true
		}
	}
	return PeerInfo{}, false
}

func peerOrder(name string) int {
	if p, ok := Lookup(name); ok {
		return p.Order
	}
	return 1 << 30
}

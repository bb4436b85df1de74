package bench

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Kind names a scenario.
type Kind string

// The scenarios. See the package documentation for what each one does.
const (
	PingPong    Kind = "pingpong"
	Connect     Kind = "connect"
	Concurrency Kind = "concurrency"
	Stream      Kind = "stream"
	FDPass      Kind = "fdpass"
)

// Kinds lists every scenario in report order.
var Kinds = []Kind{PingPong, Connect, Concurrency, Stream, FDPass}

// ThroughputBound reports whether the scenario's headline is throughput
// (operations or bytes per second) rather than latency. Ratios to the
// baselines use that headline. Any goroutine may call it.
func (k Kind) ThroughputBound() bool {
	return k == Concurrency || k == Stream || k == FDPass
}

func (k Kind) valid() bool { return slices.Contains(Kinds, k) }

// Limits of a Selection.
const (
	// MaxSize is the largest message payload a run may use: frame's default
	// message cap, which the pkt-line peers enforce.
	MaxSize = 16 << 20
	// MaxConns bounds concurrent clients; each costs a descriptor on both
	// sides and a goroutine or thread.
	MaxConns = 8192
	// MaxDuration bounds one run's measured window and warm-up.
	MaxDuration = 10 * time.Minute
	// MaxRounds bounds Selection.Rounds.
	MaxRounds = 9
	// smallSize is the payload of the connect and concurrency scenarios:
	// git's requests are short commands.
	smallSize = 64
)

// Case is one point of a suite: a scenario with its message size and number
// of concurrent clients.
type Case struct {
	Scenario Kind `json:"scenario"`
	Size     int  `json:"size"`
	Conns    int  `json:"conns"`
}

// String is a compact, flag-like name: "pingpong size=64 conns=1". Any
// goroutine may call it.
func (c Case) String() string {
	return fmt.Sprintf("%s size=%d conns=%d", c.Scenario, c.Size, c.Conns)
}

// Title is a heading for reports: "pingpong, 64 B, 1 client". For fdpass
// the size is descriptors per message. Any goroutine may call it.
func (c Case) Title() string {
	clients := "clients"
	if c.Conns == 1 {
		clients = "client"
	}
	size := FormatSize(c.Size)
	if c.Scenario == FDPass {
		size = fmt.Sprintf("%d fd per message", c.Size)
		if c.Size != 1 {
			size = fmt.Sprintf("%d fds per message", c.Size)
		}
	}
	return fmt.Sprintf("%s, %s, %d %s", c.Scenario, size, c.Conns, clients)
}

// Run is one measured run: a case against one peer. The Runner fills Socket
// with a fresh path in its private directory.
type Run struct {
	Case
	Peer     string
	Round    int           // which round of the case (Plan.Rounds), from 0
	Duration time.Duration // measured window
	Warmup   time.Duration // load before the window, not counted
	Socket   string
}

// Suite is a named list of cases with default timings.
type Suite struct {
	Name     string
	Cases    []Case
	Duration time.Duration
	Warmup   time.Duration
	// QuickPeers restricts the default peers to those with PeerInfo.Quick,
	// unless scenarios are named.
	QuickPeers bool
}

// QuickSuite is what `ipcbench` runs with no flags: short enough to finish
// in well under a minute on two cores with four peers.
func QuickSuite() Suite {
	return Suite{
		Name: "quick",
		Cases: []Case{
			{PingPong, 64, 1}, {PingPong, 4096, 1},
			{Connect, smallSize, 1},
			{Concurrency, smallSize, 1}, {Concurrency, smallSize, 8},
		},
		Duration:   600 * time.Millisecond,
		Warmup:     150 * time.Millisecond,
		QuickPeers: true,
	}
}

// FullSuite is what `ipcbench report` runs: every scenario and size.
func FullSuite() Suite {
	return Suite{
		Name: "full",
		Cases: []Case{
			{PingPong, 64, 1}, {PingPong, 4 << 10, 1}, {PingPong, 64 << 10, 1}, {PingPong, 1 << 20, 1},
			{Connect, smallSize, 1}, {Connect, smallSize, 8},
			{Concurrency, smallSize, 1}, {Concurrency, smallSize, 8}, {Concurrency, smallSize, 64}, {Concurrency, smallSize, 1024},
			{Concurrency, 4 << 10, 64}, {Concurrency, 1 << 20, 64},
			{Stream, 64, 1}, {Stream, 4 << 10, 1}, {Stream, 64 << 10, 1}, {Stream, 1 << 20, 1},
			{FDPass, 1, 1}, {FDPass, 64, 1},
		},
		Duration: 2 * time.Second,
		Warmup:   400 * time.Millisecond,
	}
}

// SuiteByName returns the quick or the full suite.
func SuiteByName(name string) (Suite, error) {
	switch name {
	case "", "quick":
		return QuickSuite(), nil
	case "full":
		return FullSuite(), nil
	}
	return Suite{}, usageErrorf("unknown suite %q (want quick or full)", name)
}

// Selection narrows a suite, as the flags of `ipcbench run` do. Zero fields
// keep the suite's defaults.
type Selection struct {
	Suite     string   // "quick" (default) or "full"
	Scenarios []Kind   // keep only these scenarios
	Peers     []string // run only these peers (default: the suite's)
	Sizes     []int    // replace every case's size (bytes; fdpass keeps its own)
	Conns     []int    // replace every case's client count
	Duration  time.Duration
	Warmup    time.Duration
	TestTool  string // path of git's test-tool; enables the peers that need it
	// Rounds runs each case this many times (0: once), its peers taking
	// turns in each round, so that a machine whose speed drifts over
	// minutes shifts every peer of a round alike; the results keep each
	// peer's median run (Runner.Run).
	Rounds int
}

// Plan is an expanded Selection: the runs in order.
type Plan struct {
	Suite    string
	Duration time.Duration
	Warmup   time.Duration
	TestTool string
	Rounds   int      // rounds of each case, at least 1
	Peers    []string // peers taking part, in report order
	Cases    []Case   // cases, in report order
	Runs     []Run    // for each case, its rounds one after the other
}

// Plan expands the selection against the list of peers. Errors match
// ErrUsage. Any goroutine may call it.
func (s Selection) Plan() (*Plan, error) {
	suite, err := SuiteByName(s.Suite)
	if err != nil {
		return nil, err
	}
	p := &Plan{Suite: suite.Name, Duration: suite.Duration, Warmup: suite.Warmup, TestTool: s.TestTool, Rounds: max(s.Rounds, 1)}
	if s.Rounds < 0 || s.Rounds > MaxRounds {
		return nil, usageErrorf("rounds %d out of range [1, %d]", s.Rounds, MaxRounds)
	}
	if s.Duration != 0 {
		p.Duration = s.Duration
	}
	if s.Warmup != 0 {
		p.Warmup = s.Warmup
	}
	if p.Duration <= 0 || p.Duration > MaxDuration {
		return nil, usageErrorf("duration %v out of range (0, %v]", p.Duration, MaxDuration)
	}
	if p.Warmup < 0 || p.Warmup > MaxDuration {
		return nil, usageErrorf("warm-up %v out of range [0, %v]", p.Warmup, MaxDuration)
	}
	for _, k := range s.Scenarios {
		if !k.valid() {
			return nil, usageErrorf("unknown scenario %q (want one of %s)", k, joinKinds(Kinds))
		}
	}
	for _, n := range s.Sizes {
		if n < 1 || n > MaxSize {
			return nil, usageErrorf("size %d out of range [1, %d]", n, MaxSize)
		}
	}
	for _, n := range s.Conns {
		if n < 1 || n > MaxConns {
			return nil, usageErrorf("conns %d out of range [1, %d]", n, MaxConns)
		}
	}

	peers, err := s.peers(suite)
	if err != nil {
		return nil, err
	}
	p.Cases = s.cases(suite)
	peers = slices.Clone(peers)
	slices.SortStableFunc(peers, func(a, b PeerInfo) int { return runOrder(a.Name) - runOrder(b.Name) })
	for _, c := range p.Cases {
		for round := range p.Rounds {
			for _, info := range peers {
				if !info.supports(c) {
					continue
				}
				p.Runs = append(p.Runs, Run{Case: c, Peer: info.Name, Round: round, Duration: p.Duration, Warmup: p.Warmup})
				if !slices.Contains(p.Peers, info.Name) {
					p.Peers = append(p.Peers, info.Name)
				}
			}
		}
	}
	// Keep the order of peers for the peer list, whatever order cases found
	// them.
	slices.SortStableFunc(p.Peers, func(a, b string) int { return peerOrder(a) - peerOrder(b) })
	if len(p.Runs) == 0 {
		return nil, usageErrorf("no peer supports the selected scenarios (%s)", joinCases(p.Cases))
	}
	return p, nil
}

func (s Selection) peers(suite Suite) ([]PeerInfo, error) {
	if len(s.Peers) > 0 {
		var out []PeerInfo
		for _, name := range s.Peers {
			info, ok := Lookup(name)
			if !ok {
				return nil, usageErrorf("unknown peer %q (want one of %s)", name, strings.Join(PeerNames(), ", "))
			}
			if info.NeedsTestTool && s.TestTool == "" {
				return nil, usageErrorf("peer %q needs --test-tool, the path of git's test-tool binary", name)
			}
			if !slices.ContainsFunc(out, func(i PeerInfo) bool { return i.Name == name }) {
				out = append(out, info)
			}
		}
		slices.SortStableFunc(out, func(a, b PeerInfo) int { return peerOrder(a.Name) - peerOrder(b.Name) })
		return out, nil
	}
	var out []PeerInfo
	for _, info := range Peers() {
		if info.NeedsTestTool && s.TestTool == "" {
			continue
		}
		// Naming scenarios asks for every peer that runs them.
		if suite.QuickPeers && !info.Quick && len(s.Scenarios) == 0 {
			continue
		}
		out = append(out, info)
	}
	return out, nil
}

func (s Selection) cases(suite Suite) []Case {
	var out []Case
	add := func(c Case) {
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	for _, base := range suite.Cases {
		if len(s.Scenarios) > 0 && !slices.Contains(s.Scenarios, base.Scenario) {
			continue
		}
		sizes, conns := []int{base.Size}, []int{base.Conns}
		// Sizes are bytes; fdpass counts descriptors and keeps its own.
		if len(s.Sizes) > 0 && base.Scenario != FDPass {
			sizes = s.Sizes
		}
		if len(s.Conns) > 0 {
			conns = s.Conns
		}
		for _, size := range sizes {
			for _, n := range conns {
				add(Case{Scenario: base.Scenario, Size: size, Conns: n})
			}
		}
	}
	// A scenario asked for by name but absent from the suite runs with the
	// full suite's cases.
	for _, k := range s.Scenarios {
		if slices.ContainsFunc(out, func(c Case) bool { return c.Scenario == k }) {
			continue
		}
		s2 := s
		s2.Scenarios = []Kind{k}
		for _, c := range s2.cases(FullSuite()) {
			add(c)
		}
	}
	return out
}

// ParseKinds parses a comma-separated list of scenario names.
func ParseKinds(list string) ([]Kind, error) {
	var out []Kind
	for _, f := range splitList(list) {
		k := Kind(f)
		if !k.valid() {
			return nil, usageErrorf("unknown scenario %q (want one of %s)", f, joinKinds(Kinds))
		}
		out = append(out, k)
	}
	return out, nil
}

// ParseSizes parses a comma-separated list of sizes with optional K, KiB,
// M or MiB suffixes (binary multiples): "64,4K,1MiB".
func ParseSizes(list string) ([]int, error) {
	var out []int
	for _, f := range splitList(list) {
		n, err := parseSize(f)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func parseSize(s string) (int, error) {
	num, mult := s, 1
	for _, suf := range []struct {
		s string
		m int
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"K", 1 << 10}, {"k", 1 << 10}, {"M", 1 << 20}, {"B", 1}} {
		if strings.HasSuffix(s, suf.s) {
			num, mult = strings.TrimSuffix(s, suf.s), suf.m
			break
		}
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 || n > MaxSize/mult {
		return 0, usageErrorf("bad size %q (want 1..%d bytes, e.g. 64, 4K, 1MiB)", s, MaxSize)
	}
	return n * mult, nil
}

// ParseInts parses a comma-separated list of positive integers.
func ParseInts(list string) ([]int, error) {
	var out []int
	for _, f := range splitList(list) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, usageErrorf("bad number %q (want a positive integer)", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// SplitList splits a comma-separated flag value, dropping empty items.
func SplitList(list string) []string { return splitList(list) }

func splitList(list string) []string {
	var out []string
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func joinKinds(ks []Kind) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}

func joinCases(cs []Case) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = c.String()
	}
	return strings.Join(s, "; ")
}

// FormatSize writes a byte count the way tables show it: 64 B, 4 KiB, 1 MiB.
func FormatSize(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + " KiB"
	}
	return strconv.Itoa(n) + " B"
}

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Environment variables of a re-executed server child.
const (
	childRoleEnv   = "PKTIPC_BENCH_CHILD"
	childConfigEnv = "PKTIPC_BENCH_CONFIG"
	readyLine      = "ready\n"
)

// ServerConfig is what a server role receives in its child process.
type ServerConfig struct {
	Socket   string            `json:"socket"`
	Scenario Kind              `json:"scenario"`
	Size     int               `json:"size"`
	Conns    int               `json:"conns"`
	Options  map[string]string `json:"options,omitempty"` // peer-specific settings
}

// ServeFunc runs a server role in a child process: it listens on
// cfg.Socket, calls ready once it accepts connections, and serves until ctx
// is cancelled (SIGTERM, SIGINT or EOF on standard input), then returns nil.
// Any other return is a failure that the benchmark reports with the child's
// standard error.
type ServeFunc func(ctx context.Context, cfg ServerConfig, ready func()) error

var roles struct {
	sync.Mutex
	m map[string]ServeFunc
}

// RegisterServer makes a server role available to RunChildIfRequested. Call
// it from an init function; it panics on a duplicate name.
func RegisterServer(role string, serve ServeFunc) {
	roles.Lock()
	defer roles.Unlock()
	if roles.m == nil {
		roles.m = make(map[string]ServeFunc)
	}
	if _, dup := roles.m[role]; dup || role == "" || serve == nil {
		panic("bench: bad or duplicate server role " + role)
	}
	roles.m[role] = serve
}

func lookupRole(role string) (ServeFunc, bool) {
	roles.Lock()
	defer roles.Unlock()
	f, ok := roles.m[role]
	return f, ok
}

// RunChildIfRequested runs a server role and exits when this process was
// started as a benchmark server child; otherwise it returns at once. Call it
// first in main and in TestMain of every package whose tests run benchmarks.
func RunChildIfRequested() {
	role := os.Getenv(childRoleEnv)
	if role == "" {
		return
	}
	os.Exit(runChild(role, os.Getenv(childConfigEnv)))
}

func runChild(role, config string) int {
	// Grandchildren (a server that runs tools) must not take the role.
	os.Unsetenv(childRoleEnv)
	os.Unsetenv(childConfigEnv)
	serve, ok := lookupRole(role)
	if !ok {
		fmt.Fprintf(os.Stderr, "bench child: unknown server role %q\n", role)
		return 2
	}
	var cfg ServerConfig
	if err := json.Unmarshal([]byte(config), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "bench child: bad config: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The parent holds our stdin open; EOF means it is gone. This goroutine
	// blocks in read(2) until then and ends with the process.
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	var once sync.Once
	ready := func() { once.Do(func() { os.Stdout.WriteString(readyLine) }) }
	if err := serve(ctx, cfg, ready); err != nil {
		fmt.Fprintf(os.Stderr, "bench child %s: %v\n", role, err)
		return 1
	}
	return 0
}

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
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

// serverConfig is what a server role receives in its child process: the
// run's parameters, and its peer's settings still in JSON.
type serverConfig struct {
	Socket   string          `json:"socket"`
	Scenario Kind            `json:"scenario"`
	Size     int             `json:"size"`
	Conns    int             `json:"conns"`
	Settings json.RawMessage `json:"settings,omitempty"`
}

// role is a server role of this binary: the name under which a
// re-executed child finds its function in serverRoles, and S, the type of
// the settings its peer passes it.
type role[S any] string

// noSettings is the settings type of a role that takes none.
type noSettings struct{}

// serveFunc runs a server role in a child process: it listens on
// cfg.Socket, calls ready once it accepts connections, and serves until ctx
// is cancelled (SIGTERM, SIGINT or EOF on standard input), then returns
// nil. Any other return is a failure that the benchmark reports with the
// child's standard error.
type serveFunc[S any] func(ctx context.Context, cfg serverConfig, settings S, ready func()) error

// childFunc is a role as its child runs it, settings still encoded.
type childFunc func(ctx context.Context, cfg serverConfig, ready func()) error

// roleEntry is one line of serverRoles.
type roleEntry struct {
	name string
	run  childFunc
}

// with pairs r with the function that serves it: the entry decodes the
// settings into S, so that peer and server agree on their type.
func (r role[S]) with(serve serveFunc[S]) roleEntry {
	return roleEntry{name: string(r), run: func(ctx context.Context, cfg serverConfig, ready func()) error {
		var s S
		if len(cfg.Settings) > 0 {
			dec := json.NewDecoder(bytes.NewReader(cfg.Settings))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&s); err != nil {
				return fmt.Errorf("bench: settings of server role %s: %w", r, err)
			}
		}
		return serve(ctx, cfg, s, ready)
	}}
}

// roleTable builds serverRoles; a duplicate name is a programming error.
func roleTable(entries ...roleEntry) map[string]childFunc {
	m := make(map[string]childFunc, len(entries))
	for _, e := range entries {
		if _, dup := m[e.name]; dup || e.name == "" {
			panic("bench: bad or duplicate server role " + e.name)
		}
		m[e.name] = e.run
	}
	return m
}

// command returns a ServerCmd that re-executes this binary in role r with
// run's parameters and settings. It is called from the runner's goroutine.
func (r role[S]) command(env *Env, run Run, settings S) (*ServerCmd, error) {
	if _, ok := serverRoles[string(r)]; !ok {
		return nil, fmt.Errorf("bench: server role %q is not in serverRoles", string(r))
	}
	s, err := json.Marshal(settings)
	if err != nil {
		return nil, err
	}
	cfg, err := json.Marshal(serverConfig{
		Socket: run.Socket, Scenario: run.Scenario, Size: run.Size, Conns: run.Conns, Settings: s,
	})
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(env.exe)
	cmd.Env = append(os.Environ(), childRoleEnv+"="+string(r), childConfigEnv+"="+string(cfg))
	return &ServerCmd{Cmd: cmd, Ready: ReadyLine}, nil
}

// RunChildIfRequested runs a server role and exits when this process was
// started as a benchmark server child; otherwise it returns at once. Call it
// first in main and in TestMain of every package whose tests run
// benchmarks, from the main goroutine.
func RunChildIfRequested() {
	name := os.Getenv(childRoleEnv)
	if name == "" {
		return
	}
	os.Exit(runChild(name, os.Getenv(childConfigEnv)))
}

func runChild(name, config string) int {
	// Grandchildren (a server that runs tools) must not take the role.
	os.Unsetenv(childRoleEnv)
	os.Unsetenv(childConfigEnv)
	serve, ok := serverRoles[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "bench child: unknown server role %q\n", name)
		return 2
	}
	var cfg serverConfig
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
		fmt.Fprintf(os.Stderr, "bench child %s: %v\n", name, err)
		return 1
	}
	return 0
}

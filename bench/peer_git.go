package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pktipc/pktipc/internal/gitipc"
)

const (
	// gitDaemonThreads is the worker count of git's test daemon in these
	// runs: t0052 and the reference numbers of git's implementation use 8.
	gitDaemonThreads = 8
	// gitBatch is how many requests each client thread of `test-tool
	// simple-ipc multiple` sends per process. git's client prints no
	// timings, so a request's time is a batch's wall time less the process
	// start-up, divided by the batch: a larger batch dilutes the start-up
	// error, a smaller one gives more samples. Request sizes also grow by
	// one byte per request within a batch.
	gitBatch = 100
	// gitCalibrations is how many `is-active` runs measure the process
	// start-up; the minimum is used.
	gitCalibrations = 3
	// gitReplySize is the daemon's answer to sendbytes: "rcvd:A00000064\n".
	gitReplySize = 15
)

// CheckTestTool reports whether path names an executable regular file. Its
// errors are *TestToolError values, which match ErrUsage.
func CheckTestTool(path string) error {
	if path == "" {
		return &TestToolError{Path: path, Reason: "is empty"}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return &TestToolError{Path: path, Reason: "cannot be used", Err: err}
	}
	if !fi.Mode().IsRegular() {
		return &TestToolError{Path: path, Reason: "is not a regular file"}
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return &TestToolError{Path: path, Reason: "is not executable (chmod +x, or point at git's t/helper/test-tool)"}
	}
	return nil
}

// gitPeer is the "git" peer: git's own simple-ipc, server and client, from
// a git build's `test-tool` (given with --test-tool). It runs only the
// connect scenario, the one git's protocol has.
type gitPeer struct {
	tool string
}

func (p *gitPeer) Prepare(ctx context.Context, env *Env) error {
	if err := CheckTestTool(env.TestTool); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, env.TestTool, "simple-ipc", "SUPPORTS_SIMPLE_IPC").CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &UnavailableError{Peer: "git", Reason: fmt.Sprintf("%s simple-ipc SUPPORTS_SIMPLE_IPC failed: %s", env.TestTool, bytes.TrimSpace(out)), Err: err}
	}
	p.tool = env.TestTool
	return nil
}

func (p *gitPeer) Server(env *Env, run Run) (*ServerCmd, error) {
	cmd := exec.Command(p.tool, "simple-ipc", "run-daemon", "--name="+run.Socket,
		"--threads="+strconv.Itoa(gitDaemonThreads))
	return &ServerCmd{Cmd: cmd, Ready: ReadyDial}, nil
}

var gitSummary = regexp.MustCompile(`client \(good (\d+)\) \(join (\d+)\), \(errors (\d+)\)`)

// gitBatchResult is one `multiple` process.
type gitBatchResult struct {
	wall     time.Duration
	cpu      time.Duration
	good     int64
	failures int64
}

func (p *gitPeer) runTool(ctx context.Context, env *Env, args ...string) (gitBatchResult, []byte, error) {
	// One process makes one batch: a wedged server must not hold the
	// whole plan.
	tctx, cancel := context.WithTimeout(ctx, stallTimeout)
	defer cancel()
	cmd := env.Command(tctx, p.tool, args...)
	stderr := &tailWriter{}
	cmd.Stderr = stderr
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	start := time.Now()
	err := cmd.Run()
	res := gitBatchResult{wall: time.Since(start)}
	if cmd.ProcessState != nil {
		res.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil && ctx.Err() == nil {
		if tctx.Err() != nil {
			return res, nil, fmt.Errorf("test-tool %s did not end within %v", strings.Join(args, " "), stallTimeout)
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return res, nil, err
		}
		err = fmt.Errorf("%v: %s", err, stderr.String())
	}
	return res, stdout.Bytes(), err
}

// batch runs one `multiple` process and parses its summary line.
func (p *gitPeer) batch(ctx context.Context, env *Env, run Run, bytecount int) (gitBatchResult, error) {
	res, out, err := p.runTool(ctx, env, "simple-ipc", "multiple", "--name="+run.Socket,
		"--threads="+strconv.Itoa(run.Conns), "--bytecount="+strconv.Itoa(bytecount),
		"--batchsize="+strconv.Itoa(gitBatch))
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	want := int64(run.Conns * gitBatch)
	m := gitSummary.FindSubmatch(out)
	if m == nil {
		if err == nil {
			err = errors.New("no summary line")
		}
		return res, fmt.Errorf("bench: git multiple: %w", err)
	}
	good, _ := strconv.ParseInt(string(m[1]), 10, 64)
	join, _ := strconv.ParseInt(string(m[2]), 10, 64)
	errs, _ := strconv.ParseInt(string(m[3]), 10, 64)
	res.good = good
	res.failures = join + errs + max(0, want-good-errs)
	return res, nil
}

func (p *gitPeer) Client(ctx context.Context, env *Env, run Run, m *Meter) (Load, error) {
	if run.Scenario != Connect {
		return Load{}, fmt.Errorf("bench: git peer does not run %s", run.Scenario)
	}
	startup, err := p.startup(ctx, env, run)
	if err != nil {
		return Load{}, err
	}
	// Thread k sends sizes bytecount+i for i < gitBatch: center the mean on
	// run.Size (prefix included).
	prefix := len(gitipc.SendbytesCommand)
	bytecount := max(1, run.Size-prefix-(gitBatch-1)/2)
	for t0 := time.Now(); ; {
		if _, err := p.batch(ctx, env, run, bytecount); err != nil {
			return Load{}, err
		}
		if time.Since(t0) >= run.Warmup {
			break
		}
	}
	m.Start()
	load, err := p.measure(ctx, env, run, bytecount, startup)
	m.Stop()
	if err != nil {
		return Load{}, err
	}
	load.Notes = append(load.Notes,
		fmt.Sprintf("git's client prints no timings: each sample is a batch's mean, (process wall time - %v start-up) / %d requests", startup.Round(time.Microsecond), gitBatch),
		fmt.Sprintf("requests of %d..%d bytes, replies of %d bytes; client cpu includes process start-up", bytecount+prefix, bytecount+prefix+gitBatch-1, gitReplySize))
	return load, nil
}

// startup measures the start-up of a test-tool process that probes the
// server once, which `multiple` also does before its requests: the
// shortest of gitCalibrations `is-active` runs.
func (p *gitPeer) startup(ctx context.Context, env *Env, run Run) (time.Duration, error) {
	startup := time.Duration(-1)
	for range gitCalibrations {
		res, _, err := p.runTool(ctx, env, "simple-ipc", "is-active", "--name="+run.Socket)
		if err != nil {
			return 0, fmt.Errorf("bench: git is-active: %w", err)
		}
		if startup < 0 || res.wall < startup {
			startup = res.wall
		}
	}
	return startup, nil
}

// measure runs batches for run.Duration. Its Window counts the batches'
// time less their start-up, and the CPU time of their processes, which
// ended before the Meter could read them.
func (p *gitPeer) measure(ctx context.Context, env *Env, run Run, bytecount int, startup time.Duration) (Load, error) {
	prefix := len(gitipc.SendbytesCommand)
	reqBytes := int64(gitBatch)*int64(bytecount+prefix) + int64(gitBatch*(gitBatch-1)/2)
	h := NewHistogram()
	load := Load{Hist: h, Window: &Window{ServerCPU: -1}}
	for t0 := time.Now(); ; {
		res, err := p.batch(ctx, env, run, bytecount)
		if err != nil {
			return Load{}, err
		}
		work := max(res.wall-startup, time.Nanosecond)
		load.Window.Elapsed += work
		load.Window.ClientCPU += res.cpu
		load.Errors += res.failures
		if res.good > 0 {
			h.RecordValues(clampNS(int64(work)/gitBatch), res.good)
			load.Bytes += res.good * (reqBytes/gitBatch + gitReplySize)
		}
		if time.Since(t0) >= run.Duration {
			return load, nil
		}
	}
}

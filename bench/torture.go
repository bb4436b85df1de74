package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pktipc/pktipc/engine"
	"github.com/pktipc/pktipc/perf"
	"github.com/pktipc/pktipc/uds"
)

// Torture runs pktipc's server in a child process and abuses it from this
// one, as a hostile or unlucky user would: a storm of silent, partial,
// trickling and non-reading connections while legitimate clients measure;
// connections that never read their replies; a crowd of unterminated
// large requests; ten thousand idle connections; large pipelined replies;
// restarts and kills under pipelined, verified traffic. Each scenario
// reports measurements beside the targets they must meet.

// TortureScenarios names the scenarios in the order they run.
func TortureScenarios() []string {
	names := make([]string, len(tortureScenarios))
	for i, sc := range tortureScenarios {
		names[i] = sc.name
	}
	return names
}

// TortureOptions select and size a torture run.
type TortureOptions struct {
	Scenarios []string      // from TortureScenarios(); empty: all
	Phase     time.Duration // each measured phase; default 5 s
	Soak      time.Duration // run chaos this long instead, sampling trends; 0: off
	Budget    int64         // the memory scenario's budget; default engine.DefaultMemoryBudget
	Progress  io.Writer     // progress lines; nil: none
}

// TortureRow is one measurement, with the target it is held to, if any.
type TortureRow struct {
	Name   string
	Value  string
	Target string // "" when the row is informational
	OK     bool
}

// TortureReport is what one scenario measured.
type TortureReport struct {
	Scenario string
	Doc      string
	Rows     []TortureRow
	Err      error // the scenario could not run
}

// Pass reports whether the scenario ran and met every target.
func (r *TortureReport) Pass() bool {
	if r.Err != nil {
		return false
	}
	for _, row := range r.Rows {
		if row.Target != "" && !row.OK {
			return false
		}
	}
	return true
}

func (r *TortureReport) info(name, format string, args ...any) {
	r.Rows = append(r.Rows, TortureRow{Name: name, Value: fmt.Sprintf(format, args...)})
}

func (r *TortureReport) check(name string, ok bool, target, format string, args ...any) {
	r.Rows = append(r.Rows, TortureRow{Name: name, Value: fmt.Sprintf(format, args...), Target: target, OK: ok})
}

// Torture runs the scenarios and returns their reports, in order. It stops
// early, with ctx's error, when ctx ends.
func Torture(ctx context.Context, o TortureOptions) ([]*TortureReport, error) {
	names := o.Scenarios
	if len(names) == 0 {
		names = TortureScenarios()
	}
	for _, n := range names {
		if !slices.Contains(TortureScenarios(), n) {
			return nil, usageErrorf("unknown torture scenario %q (have %s)", n, strings.Join(TortureScenarios(), ", "))
		}
	}
	if o.Phase <= 0 {
		o.Phase = 5 * time.Second
	}
	if o.Budget <= 0 {
		o.Budget = engine.DefaultMemoryBudget
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pkt")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// Clients and servers of the scenarios hold up to about 10,000
	// descriptors each.
	if err := ensureFiles(12_000); err != nil {
		return nil, err
	}
	t := &torture{o: o, env: &Env{Dir: dir, exe: exe}}
	var reports []*TortureReport
	for _, sc := range tortureScenarios {
		if !slices.Contains(names, sc.name) {
			continue
		}
		fmt.Fprintf(o.Progress, "torture: %s\n", sc.name)
		r := &TortureReport{Scenario: sc.name, Doc: sc.doc}
		r.Err = sc.run(t, ctx, r)
		reports = append(reports, r)
		if ctx.Err() != nil {
			return reports, ctx.Err()
		}
	}
	return reports, nil
}

// tortureScenarios are the scenarios, in the order they run.
var tortureScenarios = []struct {
	name, doc string
	run       func(*torture, context.Context, *TortureReport) error
}{
	{"storm", "1,000 silent, 500 partial, 100 trickling and 100 non-reading connections of the clients' own uid, reconnecting when closed, while a one-shot (engine.Send) and a persistent (engine.Client) client ping", (*torture).storm},
	{"nonreading", "300 connections that ask for git's 810 KB \"big\" reply and never read it: the server's CPU while they wait", (*torture).nonReading},
	{"memory", "1,024 connections that each send a 15 MiB request and never end it: the server's resident memory during and after", (*torture).memory},
	{"idle", "10,000 idle connections (caps raised): what they add to the server's resident memory, and a ping's latency beside them", (*torture).idle},
	{"pipelined", "sixteen pipelined 4 MiB replies on one connection against one alone", (*torture).pipelined},
	{"chaos", "pipelined, verified requests (windows of 1-64, replies up to 1 MiB) while the server is killed (SIGKILL) or stopped (SIGTERM) at random and restarted", (*torture).chaos},
}

// torture is one run's shared state.
type torture struct {
	o   TortureOptions
	env *Env
}

// tortureServer starts the torture server role with settings (see
// serveTorture) on a fresh socket.
func (t *torture) server(ctx context.Context, settings map[string]string) (*serverProc, string, error) {
	socket := t.env.TempPath("t")
	sc, err := t.env.GoServer(tortureRole, Run{Socket: socket}, settings)
	if err != nil {
		return nil, "", err
	}
	p, err := startServer(ctx, tortureRole, sc, socket)
	return p, socket, err
}

func (t *torture) progress(format string, args ...any) {
	fmt.Fprintf(t.o.Progress, "torture:   "+format+"\n", args...)
}

const tortureRole = "torture"

func init() { RegisterServer(tortureRole, serveTorture) }

// serveTorture is the server of the torture scenarios: git's test daemon
// (ipcbench serve) plus two commands: "chk:" verified echoes and "big:"
// replies of a requested size, both on the worker pool. Settings (all
// optional): budget (bytes), maxconns and maxperuid, firstbyte (a
// duration).
func serveTorture(ctx context.Context, cfg ServerConfig, ready func()) error {
	opts := append(gitDaemonOptions(engine.DefaultWorkers),
		engine.WithInlineFilter(func(req []byte) bool {
			return string(req) != "slow" && !strings.HasPrefix(string(req), chkPrefix) && !strings.HasPrefix(string(req), sizedPrefix)
		}))
	if v := cfg.Options["budget"]; v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return err
		}
		opts = append(opts, engine.WithMemoryBudget(n))
	}
	if v := cfg.Options["maxconns"]; v != "" {
		total, err1 := strconv.Atoi(v)
		perUID, err2 := strconv.Atoi(cfg.Options["maxperuid"])
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		opts = append(opts, engine.WithMaxConns(total, perUID))
	}
	if v := cfg.Options["firstbyte"]; v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return err
		}
		opts = append(opts, engine.WithFirstByteTimeout(d))
	}
	s, err := engine.NewServer(cfg.Socket, engine.HandlerFunc(tortureHandler), opts...)
	if err != nil {
		return err
	}
	ready()
	err = s.Serve(ctx)
	if errors.Is(err, engine.ErrServerClosed) || errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Verified requests: chkPrefix, a sequence number (8 bytes) and a reply
// size (4 bytes). The reply carries the sequence number, the CRC-32C of
// its filler and the filler, whose bytes follow from the sequence number,
// so a reply handed to the wrong request cannot pass for its own.
const (
	chkPrefix   = "chk:"
	sizedPrefix = "big:"
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

func appendVerified(dst []byte, seq uint64, size int) []byte {
	dst = append(dst, chkPrefix...)
	dst = binary.LittleEndian.AppendUint64(dst, seq)
	return binary.LittleEndian.AppendUint32(dst, uint32(size))
}

// verifiedFiller writes the filler of request seq into p.
func verifiedFiller(p []byte, seq uint64) {
	x := seq*0x9e3779b97f4a7c15 | 1
	for i := range p {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		p[i] = byte(x)
	}
}

// verifiedReply is the reply to request seq of size.
func verifiedReply(seq uint64, size int) []byte {
	b := make([]byte, 12+size)
	binary.LittleEndian.PutUint64(b, seq)
	verifiedFiller(b[12:], seq)
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b[12:], crc32c))
	return b
}

// verifyReply reports whether reply answers request seq of size.
func verifyReply(reply []byte, seq uint64, size int) bool {
	if len(reply) != 12+size || binary.LittleEndian.Uint64(reply) != seq ||
		binary.LittleEndian.Uint32(reply[8:]) != crc32.Checksum(reply[12:], crc32c) {
		return false
	}
	var first [8]byte
	verifiedFiller(first[:min(8, size)], seq)
	return string(reply[12:12+min(8, size)]) == string(first[:min(8, size)])
}

func appendSized(dst []byte, size int) []byte {
	return binary.LittleEndian.AppendUint32(append(dst, sizedPrefix...), uint32(size))
}

// sizedFiller is the filler of "big:" replies: zeros, never written, so
// the pages behind it are the kernel's shared zero page.
var sizedFiller = sync.OnceValue(func() []byte { return make([]byte, maxSized) })

const maxSized = 64 << 20

func tortureHandler(ctx context.Context, req []byte, w *engine.ReplyWriter) error {
	switch {
	case len(req) == len(chkPrefix)+12 && string(req[:len(chkPrefix)]) == chkPrefix:
		seq := binary.LittleEndian.Uint64(req[len(chkPrefix):])
		size := int(binary.LittleEndian.Uint32(req[len(chkPrefix)+8:]))
		_, err := w.Write(verifiedReply(seq, min(size, 16<<20)))
		return err
	case len(req) == len(sizedPrefix)+4 && string(req[:len(sizedPrefix)]) == sizedPrefix:
		size := min(int(binary.LittleEndian.Uint32(req[len(sizedPrefix):])), maxSized)
		_, err := w.Write(sizedFiller()[:size])
		return err
	}
	return gitDaemon{}.ServeIPC(ctx, req, w)
}

// serverCPU returns the CPU time of process pid so far.
func serverCPU(pid int) time.Duration {
	d, err := perf.PidCPUClock(pid)
	if err != nil {
		if c, err := perf.PidCPU(pid); err == nil {
			return c.Total()
		}
	}
	return d
}

// rss returns the resident memory of pid, or -1.
func rss(pid int) int64 {
	m, err := perf.PidMemory(pid)
	if err != nil {
		return -1
	}
	return m.RSS
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// dialWait connects as git's client does when asked to wait: retrying a
// busy or missing server for up to a second.
func dialWait(ctx context.Context, socket string) (*engine.Client, error) {
	return engine.Dial(ctx, socket, engine.WithDialOptions(uds.WaitIfBusy(), uds.WaitIfNotFound()))
}

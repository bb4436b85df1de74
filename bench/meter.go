package bench

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/pktipc/pktipc/perf"
)

// Meter measures the window in which a run's operations count: wall time,
// CPU time of the client and server processes, and their perf counters. A
// peer's client calls Start when the warm-up ends and Stop when the window
// ends; a client that measures the window itself also returns a Window in
// its Load. Its methods are called from the client's driving goroutine
// only.
type Meter struct {
	serverPID int
	clientPID int // 0: this process
	counters  bool

	srvCounters, cliCounters *perf.Counters

	started, stopped bool
	t0, t1           int64
	srvCPU0, srvCPU1 time.Duration
	cliCPU0, cliCPU1 time.Duration
	srvS0, srvS1     perf.Sample
	cliS0, cliS1     perf.Sample
	notes            []string
	cpuErr           error

	// edge, when set, is called by Start and Stop once they have taken
	// their readings, with true for Start: a client child tells its parent
	// where its window lies.
	edge func(start bool)
}

// Window is a client's own account of the measured window, for a client
// whose work the Meter cannot time or read at the window's edges: a child
// process with a clock of its own, or short-lived processes whose start-up
// does not count. What it gives replaces the Meter's readings.
type Window struct {
	// Elapsed replaces the Meter's wall time of the window; 0 keeps it.
	Elapsed time.Duration
	// ClientCPU and ServerCPU replace the Meter's CPU times of the client
	// and of the server over the window; negative keeps the Meter's.
	ClientCPU, ServerCPU time.Duration
	// OwnEdges says that the client timed the window between edges of its
	// own, which the Meter hears of late on a loaded machine: when the two
	// lengths disagree, the perf counters, which only the Meter reads at
	// its edges, are dropped.
	OwnEdges bool
}

func newMeter(serverPID int, counters bool) *Meter {
	m := &Meter{serverPID: serverPID, counters: counters}
	if counters {
		m.srvCounters = m.openCounters(serverPID, "server")
	}
	return m
}

func (m *Meter) openCounters(pid int, who string) *perf.Counters {
	c, err := perf.OpenCounters(pid)
	if err != nil {
		if !errors.Is(err, perf.ErrUnavailable) && !errors.Is(err, errors.ErrUnsupported) {
			m.notes = append(m.notes, fmt.Sprintf("%s counters: %v", who, err))
		}
		return nil
	}
	return c
}

// SetClientProcess says that the client's work runs in process pid (a child
// the peer started) rather than in this process. Call it before Start, as
// soon as the child exists, so that counters see all its threads, from the
// client's driving goroutine.
func (m *Meter) SetClientProcess(pid int) {
	m.clientPID = pid
	if m.counters {
		if m.cliCounters != nil {
			m.cliCounters.Close()
		}
		m.cliCounters = m.openCounters(pid, "client")
	}
}

// ServerPID returns the process id of the run's server. Any goroutine may
// call it.
func (m *Meter) ServerPID() int { return m.serverPID }

func (m *Meter) clientCPU() (time.Duration, error) {
	if m.clientPID != 0 && m.clientPID != os.Getpid() {
		return perf.PidCPUClock(m.clientPID)
	}
	c, err := perf.ProcessCPU()
	return c.Total(), err
}

// Start opens the measured window. Calls after the first are ignored. Call
// it from the client's driving goroutine.
func (m *Meter) Start() {
	if m.started {
		return
	}
	m.started = true
	if m.counters && m.cliCounters == nil && m.clientPID == 0 {
		m.cliCounters = m.openCounters(0, "client")
	}
	m.srvS0 = readCounters(m.srvCounters)
	m.cliS0 = readCounters(m.cliCounters)
	var err1, err2 error
	m.srvCPU0, err1 = perf.PidCPUClock(m.serverPID)
	m.cliCPU0, err2 = m.clientCPU()
	m.cpuErr = errors.Join(err1, err2)
	m.t0 = perf.Now()
	if m.edge != nil {
		m.edge(true)
	}
}

// Stop closes the measured window. Calls before Start or after the first
// are ignored. Call it from the client's driving goroutine.
func (m *Meter) Stop() {
	if !m.started || m.stopped {
		return
	}
	m.t1 = perf.Now()
	m.stopped = true
	var err1, err2 error
	m.srvCPU1, err1 = perf.PidCPUClock(m.serverPID)
	m.cliCPU1, err2 = m.clientCPU()
	m.cpuErr = errors.Join(m.cpuErr, err1, err2)
	m.srvS1 = readCounters(m.srvCounters)
	m.cliS1 = readCounters(m.cliCounters)
	if m.edge != nil {
		m.edge(false)
	}
}

// Elapsed returns the measured window's wall time as the Meter saw it (0
// before Stop). Call it from the goroutine that called Stop.
func (m *Meter) Elapsed() time.Duration {
	if !m.stopped {
		return 0
	}
	return time.Duration(m.t1 - m.t0)
}

// windowSkew is how far the Meter's view of a window may stray from the
// client's own before readings taken at the Meter's edges are distrusted.
const windowSkew = 0.1

func skewed(client, meter time.Duration) bool {
	d := client - meter
	return float64(max(d, -d)) > windowSkew*float64(client)
}

// windowReadings are what a record takes from the window: the Meter's
// readings, with what the client's Window replaces.
type windowReadings struct {
	elapsed                  time.Duration
	cliCPU, srvCPU           time.Duration
	cliCPUOK, srvCPUOK       bool
	cliCounters, srvCounters bool // the perf counters describe the window
	notes                    []string
}

// window combines the Meter's readings with the client's Window w (nil:
// none).
func (m *Meter) window(w *Window) windowReadings {
	r := windowReadings{
		elapsed: m.Elapsed(), cliCPU: m.cliCPU1 - m.cliCPU0, srvCPU: m.srvCPU1 - m.srvCPU0,
		cliCPUOK: m.cpuErr == nil, srvCPUOK: m.cpuErr == nil, cliCounters: true, srvCounters: true,
	}
	if w == nil {
		w = &Window{ClientCPU: -1, ServerCPU: -1}
	}
	if w.Elapsed > 0 {
		r.elapsed = w.Elapsed
	}
	if w.ClientCPU >= 0 {
		r.cliCPU, r.cliCPUOK = w.ClientCPU, true
		// Without a client process named, the Meter's client counters
		// watched this process, and the client's work ran elsewhere.
		r.cliCounters = m.clientPID != 0
	}
	if w.ServerCPU >= 0 {
		r.srvCPU, r.srvCPUOK = w.ServerCPU, true
	}
	if (!r.cliCPUOK || !r.srvCPUOK) && m.cpuErr != nil {
		r.notes = append(r.notes, "cpu time: "+m.cpuErr.Error())
	}
	if w.OwnEdges && skewed(r.elapsed, m.Elapsed()) {
		r.cliCounters, r.srvCounters = false, false
		r.notes = append(r.notes, fmt.Sprintf("perf counters dropped: the harness saw a %v window for the client's %v (scheduling delay)",
			m.Elapsed().Round(time.Millisecond), r.elapsed.Round(time.Millisecond)))
	}
	return r
}

func readCounters(c *perf.Counters) perf.Sample {
	if c == nil {
		return perf.Sample{}
	}
	s, err := c.Read()
	if err != nil {
		return perf.Sample{}
	}
	return s
}

func (m *Meter) close() {
	if m.srvCounters != nil {
		m.srvCounters.Close()
	}
	if m.cliCounters != nil {
		m.cliCounters.Close()
	}
}

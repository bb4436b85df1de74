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
// ends. Its methods are called from the client's driving goroutine only.
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
	extraCPU         time.Duration
	extraCPUSet      bool
	winCli, winSrv   time.Duration // CPU of the window as the client measured it; < 0 unknown
	winSet           bool
	notes            []string
	cpuErr           error
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
			m.Note(fmt.Sprintf("%s counters: %v", who, err))
		}
		return nil
	}
	return c
}

// SetClientProcess says that the client's work runs in process pid (a child
// the peer started) rather than in this process. Call it before Start, as
// soon as the child exists, so that counters see all its threads.
func (m *Meter) SetClientProcess(pid int) {
	m.clientPID = pid
	if m.counters {
		if m.cliCounters != nil {
			m.cliCounters.Close()
		}
		m.cliCounters = m.openCounters(pid, "client")
	}
}

// AddClientCPU adds CPU time of client processes that ended during the
// window (git's test-tool clients, read from their rusage after wait). When
// used, it replaces the CPU time read from the client process.
func (m *Meter) AddClientCPU(d time.Duration) {
	m.extraCPU += d
	m.extraCPUSet = true
}

// ServerPID returns the process id of the run's server.
func (m *Meter) ServerPID() int { return m.serverPID }

// SetWindowCPU supplies the CPU time of the client and server processes
// over the window, measured by a child client at the window's own edges
// (negative: unknown, use the Meter's reading). A heavily loaded machine
// can schedule this process too late to read them at the right moments;
// when the client's window and the Meter's disagree, the record also drops
// the perf counters, which only the Meter reads.
func (m *Meter) SetWindowCPU(client, server time.Duration) {
	m.winCli, m.winSrv, m.winSet = client, server, true
}

// Note attaches a remark to the run's record.
func (m *Meter) Note(s string) { m.notes = append(m.notes, s) }

func (m *Meter) clientCPU() (time.Duration, error) {
	if m.clientPID != 0 && m.clientPID != os.Getpid() {
		return perf.PidCPUClock(m.clientPID)
	}
	c, err := perf.ProcessCPU()
	return c.Total(), err
}

// Start opens the measured window. Calls after the first are ignored.
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
}

// Stop closes the measured window. Calls before Start or after the first
// are ignored.
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
}

// Elapsed returns the measured window's wall time (0 before Stop).
func (m *Meter) Elapsed() time.Duration {
	if !m.stopped {
		return 0
	}
	return time.Duration(m.t1 - m.t0)
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

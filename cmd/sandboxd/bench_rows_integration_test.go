//go:build integration

// The benchmark's baseline (benchWatch: bare runs are timed while the
// daemon does nothing), the machine's CPU (machineCPU), and the rows of
// issue 15: back to back at one client, CPU per run, and a batch of
// distinct programs.
package main_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

const (
	// backToBackRuns is how many runs the back-to-back row's figures are
	// the median and p95 of, bare and through the API.
	backToBackRuns = 200
	// backToBackRounds is how many blocks of each kind the back-to-back
	// row alternates; backToBackWarm, the runs before each block through
	// the API that take the client's cells.
	backToBackRounds = 4
	backToBackWarm   = 5
	// batchPrograms is the batch row's size (BENCH_BATCH overrides it),
	// batchClients its clients, and bare workers alike.
	batchPrograms = 1000
	batchClients  = 4
	// idleSettle is how long the daemon must stay idle, unchanged, before
	// a block is timed: a shim exits a moment after its container.
	idleSettle = 500 * time.Millisecond
	// userHZ is the unit of /proc/stat's times (USER_HZ, 100 on Linux).
	userHZ = 100
)

type backToBackRow struct {
	Program    string  `json:"program"`
	Runs       int     `json:"runs"`
	BareP50MS  float64 `json:"bare_p50_ms"`
	BareP95MS  float64 `json:"bare_p95_ms"`
	P50MS      float64 `json:"p50_ms"`
	P95MS      float64 `json:"p95_ms"`
	P50Ratio   float64 `json:"p50_ratio"`
	P95Ratio   float64 `json:"p95_ratio"`
	P95OverP50 float64 `json:"p95_over_p50"`
	// BareP95OverP50 is the bare runs' own spread, for reference.
	BareP95OverP50 float64 `json:"bare_p95_over_p50"`
}

type batchRow struct {
	Programs    int     `json:"programs"`
	Clients     int     `json:"clients"` // and bare workers
	BareSeconds float64 `json:"bare_seconds"`
	Seconds     float64 `json:"seconds"`
	BarePerSec  float64 `json:"bare_per_sec"`
	PerSec      float64 `json:"per_sec"`
	Ratio       float64 `json:"ratio"`
	// Errors are answers other than 200 (or none); WrongOutput are 200s
	// whose program failed its own check or printed another output.
	Errors      int `json:"errors"`
	WrongOutput int `json:"wrong_output"`
	// BareErrors are bare runs that failed or printed another output: the
	// benchmark is broken then, not slow.
	BareErrors int    `json:"bare_errors"`
	FirstError string `json:"first_error,omitempty"`
	// Machine CPU per program, as in the throughput rows.
	CPUMSPerRun       float64 `json:"cpu_ms_per_run"`
	BareCPUMSPerRun   float64 `json:"bare_cpu_ms_per_run"`
	CPUBeyondMS       float64 `json:"cpu_beyond_ms"`
	StealMSPerRun     float64 `json:"steal_ms_per_run"`
	BareStealMSPerRun float64 `json:"bare_steal_ms_per_run"`
}

// benchWatch watches the daemon under measure, over a connection of its
// own that it keeps, so that every bare block is timed while the daemon
// does nothing and every block through the API starts with its pool full.
type benchWatch struct {
	c *http.Client
	// full is the pools' ready sandboxes when the daemon was first seen
	// idle: a daemon may have more pools than one (cells and sessions,
	// other runtimes, images), each of pool.size.
	full    float64
	learned bool
}

func newBenchWatch(sock string) *benchWatch {
	return &benchWatch{c: unixClient(sock, true)}
}

// daemonState is what the watch reads of the daemon's /metrics.
type daemonState struct {
	running, queued, ready, containers, cellsIdle, sessions float64
}

func (w *benchWatch) state() (daemonState, error) {
	resp, err := w.c.Get("http://sandboxd/metrics")
	if err != nil {
		return daemonState{}, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("metrics: %d %s", resp.StatusCode, body)
	}
	if err != nil {
		return daemonState{}, err
	}
	get := func(name string) float64 { v, _ := metricIn(body, name); return v }
	return daemonState{
		running: get("sandboxd_executions_running"), queued: get("sandboxd_queue_depth"),
		ready: get("sandboxd_pool_ready"), containers: get("sandboxd_containers"),
		cellsIdle: get("sandboxd_cells_idle"), sessions: get("sandboxd_sessions"),
	}, nil
}

// idle reports whether the daemon does nothing in state s: no execution
// running or queued, its pools as full as when first seen idle, and no
// container but those of the pools, the idle cells and the sessions (none
// being made, torn down or destroyed). With noCells, no idle cell either.
func (w *benchWatch) idle(s daemonState, noCells bool) bool {
	return s.running == 0 && s.queued == 0 && s.containers <= s.ready+s.cellsIdle+s.sessions &&
		(!w.learned || s.ready >= w.full) && (!noCells || s.cellsIdle == 0)
}

// wait waits until the daemon is idle, and has stayed so, unchanged, for
// settle. A baseline (noCells) also waits for its idle cells to expire
// (pool.idle after their last use): a cell destroyed under a bare block
// would slow it with the daemon's work.
func (w *benchWatch) wait(b *testing.B, noCells bool, settle time.Duration) {
	if !w.learned {
		settle *= 2
	}
	deadline := time.Now().Add(2 * time.Minute)
	var last daemonState
	var since time.Time
	for {
		s, err := w.state()
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		idle := w.idle(s, noCells)
		if !idle || s != last || since.IsZero() {
			since = now
		}
		last = s
		if idle && now.Sub(since) >= settle {
			break
		}
		if now.After(deadline) {
			b.Fatalf("the daemon did not come back to idle (no cells: %v) within 2 minutes: %+v (pools full at %v)", noCells, s, w.full)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !w.learned {
		w.full, w.learned = last.ready, true
	}
}

// baseline waits until a bare block may be timed: the daemon idle, with
// no cell to expire under it.
func (w *benchWatch) baseline(b *testing.B) { w.wait(b, true, idleSettle) }

// ready waits until a block through the API may start: the daemon idle,
// its pools full; the cells its uid used wait for it, as they would for
// any client that keeps sending.
func (w *benchWatch) ready(b *testing.B) { w.wait(b, false, idleSettle) }

// caughtUp waits until the daemon has done what the runs before set off
// (teardowns, cells destroyed, refills), to count it in their CPU.
func (w *benchWatch) caughtUp(b *testing.B) { w.wait(b, false, 0) }

// machineCPU is what all the machine's CPUs have done since boot, from
// /proc/stat: busy, total - idle - iowait - steal (guest time is within
// user time already), and steal, the time the hypervisor ran others while
// this VM's CPUs had work, which is no work of this machine's.
func machineCPU(b *testing.B) cpuTimes {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		b.Fatalf("/proc/stat: %q", line)
	}
	var total, idle, steal int64
	for i, s := range f[1:9] { // user nice system idle iowait irq softirq steal
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatalf("/proc/stat: %q: %v", line, err)
		}
		total += v
		switch i {
		case 3, 4:
			idle += v
		case 7:
			steal = v
		}
	}
	return cpuTimes{busy: time.Duration(total-idle-steal) * time.Second / userHZ, steal: time.Duration(steal) * time.Second / userHZ}
}

// cpuTimes is the machine's busy and stolen CPU time (machineCPU).
type cpuTimes struct{ busy, steal time.Duration }

// since is what the CPUs did from c0 to c.
func (c cpuTimes) since(c0 cpuTimes) cpuTimes {
	return cpuTimes{busy: c.busy - c0.busy, steal: c.steal - c0.steal}
}

// perRun is c's busy and stolen time divided among n runs, in
// milliseconds.
func (c cpuTimes) perRun(n int) (busyMS, stealMS float64) {
	return cpuPerRun(c.busy, n), cpuPerRun(c.steal, n)
}

// cpuPerRun is busy divided among n runs, in milliseconds.
func cpuPerRun(busy time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return ms(busy) / float64(n)
}

// backToBack runs python print(1) back to back, with no pacing, from one
// client on a kept connection, bare and through the API, n runs each in
// backToBackRounds alternating blocks as the latency rows are (alternate):
// bare while the daemon is idle; through the API after backToBackWarm
// runs that take the client's cells (back to back, a client takes turns
// on two) and once the pool has refilled.
func backToBack(b *testing.B, w *benchWatch, n int) backToBackRow {
	row := backToBackRow{Program: "python print(1)", Runs: n}
	req := api.ExecuteRequest{Language: "python", Code: "print(1)"}
	var bare, sbx []time.Duration
	bareBlock := func() {
		w.baseline(b)
		for range n / backToBackRounds {
			bare = append(bare, timeRun(b, "1\n", "/usr/bin/python3", "-c", "print(1)"))
		}
	}
	apiBlock := func() {
		w.ready(b)
		for range backToBackWarm {
			timeAPI(b, "1\n", req)
		}
		w.ready(b)
		for range n / backToBackRounds {
			sbx = append(sbx, timeAPI(b, "1\n", req))
		}
	}
	alternateBlocks(backToBackRounds, bareBlock, apiBlock)
	row.BareP50MS, row.BareP95MS = ms(percentile(bare, 50)), ms(percentile(bare, 95))
	row.P50MS, row.P95MS = ms(percentile(sbx, 50)), ms(percentile(sbx, 95))
	row.P50Ratio, row.P95Ratio = row.P50MS/row.BareP50MS, row.P95MS/row.BareP95MS
	row.P95OverP50, row.BareP95OverP50 = row.P95MS/row.P50MS, row.BareP95MS/row.BareP50MS
	return row
}

// interpreterRow is cells run back to back in a warm interpreter session.
type interpreterRow struct {
	Program    string  `json:"program"`
	Cells      int     `json:"cells"`
	P50MS      float64 `json:"p50_ms"`
	P95MS      float64 `json:"p95_ms"`
	P95OverP50 float64 `json:"p95_over_p50"`
	// SessionP50MS is the same code as a session's plain execution (a
	// python start each), for reference.
	SessionP50MS float64 `json:"session_p50_ms"`
}

// interpreterCells runs the cell `x += 1` back to back in a warm python
// interpreter session, from one client on a kept connection, checking
// each value; and the same as plain session executions.
func interpreterCells(b *testing.B, w *benchWatch, sock string, n int) interpreterRow {
	row := interpreterRow{Program: "python x += 1; x", Cells: n}
	x := createSession(b, sock, api.CreateSessionRequest{Language: "python", Interpreter: true})
	defer request(sock, "DELETE", "/v1/sessions/"+x.ID, "", nil)
	plain := createSession(b, sock, api.CreateSessionRequest{Language: "python"})
	defer request(sock, "DELETE", "/v1/sessions/"+plain.ID, "", nil)
	cell := func(i int) time.Duration {
		body, _ := json.Marshal(api.ExecuteRequest{SessionID: x.ID, Code: "x += 1; x"})
		start := time.Now()
		resp, err := benchClient().Post("http://sandboxd/v1/execute", "application/json", bytes.NewReader(body))
		var out []byte
		if err == nil {
			out, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		d := time.Since(start)
		var res api.ExecuteResult
		if err != nil || resp.StatusCode != 200 || json.Unmarshal(out, &res) != nil || res.Value != strconv.Itoa(i) {
			b.Fatalf("cell %d: %v %s", i, err, out)
		}
		return d
	}
	mustExecute(b, sock, api.ExecuteRequest{SessionID: x.ID, Code: "x = 0"})
	w.ready(b)
	took := make([]time.Duration, n)
	for i := range took {
		took[i] = cell(i + 1)
	}
	row.P50MS, row.P95MS = ms(percentile(took, 50)), ms(percentile(took, 95))
	row.P95OverP50 = row.P95MS / row.P50MS
	for i := range took {
		took[i] = timeAPI(b, "1\n", api.ExecuteRequest{SessionID: plain.ID, Code: "x = 0; x += 1; print(x)"})
	}
	row.SessionP50MS = ms(percentile(took, 50))
	return row
}

func printInterpreter(r interpreterRow) {
	fmt.Printf("\ninterpreter session (%s as a cell of a warm python interpreter session, one client on a kept connection, no pacing, %d cells; session p50: the same as a plain session's executions, a python start each)\n", r.Program, r.Cells)
	fmt.Printf("%-22s %9s %9s %8s %11s\n", "program", "p50", "p95", "p95/p50", "session p50")
	fmt.Printf("%-22s %7.1fms %7.1fms %8.2f %9.1fms\n", r.Program, r.P50MS, r.P95MS, r.P95OverP50, r.SessionP50MS)
}

// batchProgram is the batch's program i, and the output it must print: a
// line of i, a hash and a sum computed from i, which the program checks
// against what it was given before printing it.
func batchProgram(i int) (code, want string) {
	h := sha256.Sum256([]byte(strconv.Itoa(i)))
	n := i%97 + 1
	want = fmt.Sprintf("%d %x %d", i, h[:6], (n-1)*n*(2*n-1)/6)
	code = fmt.Sprintf(`import hashlib
i = %d
out = "%%d %%s %%d" %% (i, hashlib.sha256(str(i).encode()).hexdigest()[:12], sum(k * k for k in range(i %% 97 + 1)))
assert out == %q, out
print(out)
`, i, want)
	return code, want + "\n"
}

// batch runs n distinct python programs as a batch from batchClients
// clients, each on a kept connection, through the API; and the same
// programs bare from as many workers, while the daemon is idle.
func batch(b *testing.B, w *benchWatch, sock string, n int) batchRow {
	row := batchRow{Programs: n, Clients: batchClients}
	var mu sync.Mutex
	fail := func(count *int, msg string) {
		mu.Lock()
		defer mu.Unlock()
		*count++
		if row.FirstError == "" {
			row.FirstError = msg
		}
	}
	// run gives the programs out to batchClients workers, in order, and
	// times them from the first's start to the last's end.
	run := func(worker func(c int) func(i int)) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for c := range batchClients {
			one := worker(c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
					one(i)
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}

	w.baseline(b)
	cpu0 := machineCPU(b)
	took := run(func(int) func(int) {
		return func(i int) {
			code, want := batchProgram(i)
			out, err := exec.Command("/usr/bin/python3", "-c", code).Output()
			if err != nil || string(out) != want {
				fail(&row.BareErrors, fmt.Sprintf("bare program %d: %v, output %q", i, err, out))
			}
		}
	})
	row.BareSeconds = took.Seconds()
	row.BareCPUMSPerRun, row.BareStealMSPerRun = machineCPU(b).since(cpu0).perRun(n)

	w.ready(b)
	clients := make([]*http.Client, batchClients)
	cpu0 = machineCPU(b)
	took = run(func(c int) func(int) {
		clients[c] = keptClient(sock)
		return func(i int) {
			code, want := batchProgram(i)
			body, _ := json.Marshal(api.ExecuteRequest{Language: "python", Code: code})
			resp, err := clients[c].Post("http://sandboxd/v1/execute", "application/json", bytes.NewReader(body))
			var out []byte
			if err == nil {
				out, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			var res api.ExecuteResult
			switch {
			case err != nil:
				fail(&row.Errors, fmt.Sprintf("program %d: %v", i, err))
			case resp.StatusCode != 200:
				fail(&row.Errors, fmt.Sprintf("program %d: status %d: %s", i, resp.StatusCode, bytes.TrimSpace(out)))
			case json.Unmarshal(out, &res) != nil || res.ExitCode != 0 || res.Stdout != want:
				fail(&row.WrongOutput, fmt.Sprintf("program %d: result %.500s", i, out))
			}
		}
	})
	w.caughtUp(b)
	row.CPUMSPerRun, row.StealMSPerRun = machineCPU(b).since(cpu0).perRun(n)
	for _, c := range clients {
		c.CloseIdleConnections()
	}
	row.Seconds = took.Seconds()
	row.BarePerSec, row.PerSec = float64(n)/row.BareSeconds, float64(n)/row.Seconds
	row.Ratio = row.PerSec / row.BarePerSec
	row.CPUBeyondMS = row.CPUMSPerRun - row.BareCPUMSPerRun
	return row
}

// batchSize is the batch row's number of programs: BENCH_BATCH, or
// batchPrograms.
func batchSize() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_BATCH")); err == nil && n > 0 {
		return n
	}
	return batchPrograms
}

func printBackToBack(r backToBackRow) {
	fmt.Printf("\nback to back (%s, one-shot through the API, one client on a kept connection, no pacing, %d runs and %d bare, in %d alternating blocks of each; bare: while the daemon is idle; API: after %d runs that take the client's cells, the pool full)\n", r.Program, r.Runs, r.Runs, backToBackRounds, backToBackWarm)
	fmt.Printf("%-22s %9s %9s %9s %9s %8s %8s %8s %13s\n", "program", "bare p50", "bare p95", "p50", "p95", "p50 x", "p95 x", "p95/p50", "bare p95/p50")
	fmt.Printf("%-22s %7.1fms %7.1fms %7.1fms %7.1fms %7.2fx %7.2fx %8.2f %13.2f\n", r.Program, r.BareP50MS, r.BareP95MS, r.P50MS, r.P95MS, r.P50Ratio, r.P95Ratio, r.P95OverP50, r.BareP95OverP50)
}

func printCPU(rows []throughputRow) {
	fmt.Printf("\nmachine CPU per run (throughput rows; all CPUs, /proc/stat busy = total - idle - iowait - steal, over each block, through the API until the daemon has caught up; beyond: sandboxd's minus bare's; steal: the hypervisor's, not counted)\n")
	fmt.Printf("%-8s %12s %12s %12s %12s %12s\n", "clients", "sandboxd", "bare", "beyond", "steal", "bare steal")
	for _, t := range rows {
		fmt.Printf("%-8d %10.1fms %10.1fms %10.1fms %10.1fms %10.1fms\n", t.Clients, t.CPUMSPerRun, t.BareCPUMSPerRun, t.CPUBeyondMS, t.StealMSPerRun, t.BareStealMSPerRun)
	}
}

func printBatch(r batchRow) {
	fmt.Printf("\nbatch (%s distinct python programs, each checks its own output, %d clients on kept connections through the API, one-shot; bare: the same programs from %d workers, while the daemon is idle)\n", thousands(r.Programs), r.Clients, r.Clients)
	fmt.Printf("%8s %9s %9s %9s %10s %8s %7s %7s %7s %10s %10s %10s %10s %10s\n", "programs", "bare s", "s", "bare/s", "sandboxd/s", "ratio", "errors", "wrong", "bare err", "cpu/run", "bare cpu", "beyond", "steal", "bare steal")
	fmt.Printf("%8d %9.2f %9.2f %9.1f %10.1f %7.2fx %7d %7d %7d %8.1fms %8.1fms %8.1fms %8.1fms %8.1fms\n", r.Programs, r.BareSeconds, r.Seconds, r.BarePerSec, r.PerSec, r.Ratio, r.Errors, r.WrongOutput, r.BareErrors, r.CPUMSPerRun, r.BareCPUMSPerRun, r.CPUBeyondMS, r.StealMSPerRun, r.BareStealMSPerRun)
	if r.FirstError != "" {
		fmt.Printf("the first error: %s\n", r.FirstError)
	}
}

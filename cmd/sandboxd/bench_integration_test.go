//go:build integration

package main_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// benchSamples is how many runs each latency figure is the median and p95 of.
const benchSamples = 64

// latencyRounds is how many blocks of each kind a latency row's runs are
// timed in, bare and through the API alternating, so that what drifts on
// the machine over a row (a few ms in a minute, on this VM) weighs on both.
const latencyRounds = 8

// benchCellIdle is [pool] idle for the benchmark's daemon: a used cell is
// destroyed this long after its last use, so that a bare block can follow
// one through the API without waiting the default 30 s for it to go.
// Runs 250 ms apart, or back to back, keep their cell all the same.
const benchCellIdle = "2s"

// latencyPace spaces the runs of the latency rows, bare and sandboxed: a
// latency is measured below capacity (4 runs a second, the pool full), as
// a user or an agent that waits for each result sends them. Latency at
// capacity, where requests queue, is in the throughput rows; back to back
// at one client, in the back-to-back row.
const latencyPace = 250 * time.Millisecond

// benchReport is what `make bench` prints, and writes as JSON to
// $BENCH_JSON.
type benchReport struct {
	Latency       []latencyRow    `json:"latency"`
	LatencyPaceMS float64         `json:"latency_pace_ms"`
	BackToBack    backToBackRow   `json:"back_to_back"`
	Throughput    []throughputRow `json:"throughput"`
	Batch         batchRow        `json:"batch"`
	Memory        memoryRow       `json:"memory"`
	Interpreter   interpreterRow  `json:"interpreter"`
}

type latencyRow struct {
	Program    string  `json:"program"`
	Mode       string  `json:"mode"` // one-shot or session
	BareP50MS  float64 `json:"bare_p50_ms"`
	BareP95MS  float64 `json:"bare_p95_ms"`
	P50MS      float64 `json:"p50_ms"`
	P95MS      float64 `json:"p95_ms"`
	P50Ratio   float64 `json:"p50_ratio"`
	P95Ratio   float64 `json:"p95_ratio"`
	P95OverP50 float64 `json:"p95_over_p50"`
	// FirstP50MS is the p50 of the run before each block through the
	// API, the first of its uid since its cell expired (one-shot: a cell
	// taken from the pool), for reference; it is not in P50MS and P95MS.
	FirstP50MS float64 `json:"first_p50_ms"`
	// CLIP50MS is the p50 through a sandboxctl process, for reference:
	// the targets are for the API request.
	CLIP50MS float64 `json:"cli_p50_ms"`
}

type throughputRow struct {
	Clients     int     `json:"clients"`
	BarePerSec  float64 `json:"bare_per_sec"`
	PerSec      float64 `json:"per_sec"`
	Ratio       float64 `json:"ratio"`
	BareRuns    int     `json:"bare_runs"`
	Runs        int     `json:"runs"`
	Errors      int     `json:"errors"`
	WrongOutput int     `json:"wrong_output"`
	// The latency of the sandboxed runs, at capacity: requests queue.
	P50MS      float64 `json:"p50_ms"`
	P95MS      float64 `json:"p95_ms"`
	P95OverP50 float64 `json:"p95_over_p50"`
	// Machine CPU per run (all CPUs, from /proc/stat), through the API
	// and bare, and the difference: what sandboxd costs beyond the
	// program's own run.
	CPUMSPerRun     float64 `json:"cpu_ms_per_run"`
	BareCPUMSPerRun float64 `json:"bare_cpu_ms_per_run"`
	CPUBeyondMS     float64 `json:"cpu_beyond_ms"`
	// What the hypervisor took from the machine's CPUs per run, not in
	// the above (machineCPU).
	StealMSPerRun     float64 `json:"steal_ms_per_run"`
	BareStealMSPerRun float64 `json:"bare_steal_ms_per_run"`
}

type memoryRow struct {
	PerSessionMiB     float64 `json:"per_session_mib"`
	PerInterpreterMiB float64 `json:"per_interpreter_session_mib"`
	PerPooledMiB      float64 `json:"per_pooled_sandbox_mib"`
	PerCellMiB        float64 `json:"per_pooled_cell_mib"`
	DaemonPeakRSSMiB  float64 `json:"daemon_peak_rss_mib"`
	SandboxesMeasured int     `json:"sandboxes_measured"`
}

// BenchmarkSandboxd measures, in one run and against the host in the same
// run: latency of one-shot and session executions through the API (from
// the request sent to the full result received, as the targets are set)
// and through sandboxctl, below capacity and back to back; throughput and
// machine CPU per run at 1 to 8 clients through the API; a batch of
// distinct programs; the memory an idle session or pooled sandbox costs,
// and the daemon's peak RSS. Every run's output is checked. Run it with
// `make bench`.
//
// Every ratio's denominator is a block of bare runs of its own, timed
// while the daemon does nothing else (benchWatch.baseline): no execution,
// its pools full, no sandbox being made or torn down, no cell left to
// expire under it.
//
// BENCH_RUNTIME=runsc measures sandboxes on that OCI runtime instead of
// runc: a daemon of the benchmark's own runs python, javascript and bash
// on it, pools included.
func BenchmarkSandboxd(b *testing.B) {
	ctl := filepath.Join(binDir, "sandboxctl")
	// A daemon of the benchmark's own, as the suite's but for its cells'
	// idle time (benchCellIdle) and, with BENCH_RUNTIME, its runtime.
	served := startDaemon(b, daemonOpts{
		config: "[pool]\nidle = \"" + benchCellIdle + "\"\n" + runtimeLanguages(os.Getenv("BENCH_RUNTIME")),
		args:   []string{"--max-concurrent", fmt.Sprint(maxConcurrent), "--max-queued", fmt.Sprint(maxQueued)}})
	defer func(main string) { socket = main }(socket)
	socket = served.sock
	waitPoolFull(b, socket)
	watch := newBenchWatch(socket)
	defer watch.c.CloseIdleConnections()
	var rep benchReport
	for range b.N {
		rep = benchReport{LatencyPaceMS: ms(latencyPace)}
		langs := []struct {
			name, lang, code, want string
			bare                   []string
		}{
			{"python print(1)", "python", "print(1)", "1\n", []string{"/usr/bin/python3", "-c", "print(1)"}},
			{"node console.log(1)", "javascript", "console.log(1)", "1\n", []string{"/usr/bin/node", "-e", "console.log(1)"}},
			{"bash echo 1", "bash", "echo 1", "1\n", []string{"/bin/bash", "-c", "echo 1"}},
		}
		for _, l := range langs {
			for _, mode := range []string{"one-shot", "session"} {
				args := []string{"--socket", socket, "execute", "-l", l.lang, "-c", l.code}
				var session string
				if mode == "session" {
					out, errOut, code := sandboxctl(b, "", "--socket", socket, "session", "create", "-l", l.lang)
					if code != 0 {
						b.Fatalf("session create: exit %d %s", code, errOut)
					}
					session = strings.TrimSpace(out)
					args = append(args, "--session", session)
				}
				req := api.ExecuteRequest{Language: l.lang, Code: l.code, SessionID: session}
				bare, sbx, first := alternate(b, watch,
					func() time.Duration { return timeRun(b, l.want, l.bare[0], l.bare[1:]...) },
					func() time.Duration { return timeAPI(b, l.want, req) })
				// Apart, so that its runs do not drain the pool under the
				// API's.
				viaCLI := paced(benchSamples, func() time.Duration { return timeRun(b, l.want, ctl, args...) })
				rep.Latency = append(rep.Latency, latencyRow{Program: l.name, Mode: mode,
					BareP50MS: ms(percentile(bare, 50)), BareP95MS: ms(percentile(bare, 95)),
					P50MS: ms(percentile(sbx, 50)), P95MS: ms(percentile(sbx, 95)),
					P50Ratio:   float64(percentile(sbx, 50)) / float64(percentile(bare, 50)),
					P95Ratio:   float64(percentile(sbx, 95)) / float64(percentile(bare, 95)),
					P95OverP50: float64(percentile(sbx, 95)) / float64(percentile(sbx, 50)),
					FirstP50MS: ms(percentile(first, 50)),
					CLIP50MS:   ms(percentile(viaCLI, 50))})
				if session != "" {
					sandboxctl(b, "", "--socket", socket, "session", "delete", session)
				}
			}
		}
		rep.BackToBack = backToBack(b, watch, backToBackRuns)
		rep.Interpreter = interpreterCells(b, watch, socket, backToBackRuns)
		seconds := 10
		if s, err := strconv.Atoi(os.Getenv("BENCH_SECONDS")); err == nil && s > 0 {
			seconds = s
		}
		for _, clients := range []int{1, 2, 4, 8} {
			rep.Throughput = append(rep.Throughput, throughput(b, watch, clients, time.Duration(seconds)*time.Second))
		}
		rep.Batch = batch(b, watch, socket, batchSize())
		rep.Memory = memory(b, served)
	}
	printReport(rep)
	if path := os.Getenv("BENCH_JSON"); path != "" {
		data, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for _, t := range rep.Throughput {
		if t.Errors > 0 || t.WrongOutput > 0 {
			b.Errorf("%d clients: %d errors, %d wrong outputs", t.Clients, t.Errors, t.WrongOutput)
		}
	}
	if r := rep.Batch; r.Errors > 0 || r.WrongOutput > 0 || r.BareErrors > 0 {
		b.Errorf("batch: %d errors, %d wrong outputs, %d bare errors; the first: %s", r.Errors, r.WrongOutput, r.BareErrors, r.FirstError)
	}
}

// alternate times a latency row: benchSamples runs bare and as many
// through the API, paced, in latencyRounds blocks of each, alternating
// (bare first in even rounds, the API first in odd ones: a drift over the
// row falls on both alike). Every bare block is timed while the daemon
// does nothing else (benchWatch.baseline: its uid's cell expired and
// destroyed, its pools full). Every block through the API starts as a
// client that keeps sending finds the daemon: its uid's cell warm, taken
// from the pool by one run before it (first, not in the row's figures:
// one run in [pool] reuse does that), the pool refilled since.
func alternate(b *testing.B, w *benchWatch, bareRun, apiRun func() time.Duration) (bare, sbx, first []time.Duration) {
	n := benchSamples / latencyRounds
	bareBlock := func() {
		w.baseline(b)
		bare = append(bare, paced(n, bareRun)...)
	}
	apiBlock := func() {
		w.ready(b)
		first = append(first, apiRun())
		w.ready(b)
		sbx = append(sbx, paced(n, apiRun)...)
	}
	alternateBlocks(latencyRounds, bareBlock, apiBlock)
	return bare, sbx, first
}

// alternateBlocks runs rounds of a bare block and one through the API,
// bare first in even rounds and the API first in odd ones.
func alternateBlocks(rounds int, bareBlock, apiBlock func()) {
	for r := range rounds {
		if r%2 == 0 {
			bareBlock()
			apiBlock()
		} else {
			apiBlock()
			bareBlock()
		}
	}
}

// paced runs one n times, one run every latencyPace at most, and returns
// the times it gives.
func paced(n int, one func() time.Duration) []time.Duration {
	took := make([]time.Duration, 0, n)
	var last time.Time
	for range n {
		time.Sleep(time.Until(last.Add(latencyPace)))
		last = time.Now()
		took = append(took, one())
	}
	return took
}

// timeRun runs a command, checks its output, and times it.
func timeRun(b *testing.B, want, name string, args ...string) time.Duration {
	start := time.Now()
	out, err := outputProc(exec.Command(name, args...))
	d := time.Since(start)
	if err != nil || string(out) != want {
		b.Fatalf("%s %v: %v, output %q", name, args, err, out)
	}
	return d
}

// timeAPI sends an execute request, checks its result, and times it from
// the request sent to the full result received.
//
// The client is one, as a program or an agent that uses the API keeps it:
// its connection is reused from one request to the next.
func timeAPI(b *testing.B, want string, req api.ExecuteRequest) time.Duration {
	body, _ := json.Marshal(req)
	start := time.Now()
	resp, err := benchClient().Post("http://sandboxd/v1/execute", "application/json", strings.NewReader(string(body)))
	var out []byte
	if err == nil {
		out, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	d := time.Since(start)
	var res api.ExecuteResult
	if err != nil || resp.StatusCode != 200 || json.Unmarshal(out, &res) != nil || res.Stdout != want || res.ExitCode != 0 {
		b.Fatalf("execute %+v: %v %s", req, err, out)
	}
	return d
}

var (
	benchClientOnce sync.Once
	benchHTTP       *http.Client
)

// benchClient is the benchmark's API client, on the socket of the daemon
// under measure when it is first used.
func benchClient() *http.Client {
	benchClientOnce.Do(func() {
		benchHTTP = unixClient(socket, true)
	})
	return benchHTTP
}

// throughput runs python print(i) for d, bare and through the API, at the
// same number of clients, and the machine's CPU meanwhile: bare while the
// daemon does nothing else; through the API from a full pool until the
// daemon has done what the runs set off (teardowns, refills).
func throughput(b *testing.B, w *benchWatch, clients int, d time.Duration) throughputRow {
	row := throughputRow{Clients: clients}
	var took []time.Duration
	var elapsed time.Duration
	run := func(one func(i int) (ok, right bool)) (n, errs, wrong int) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := time.Now()
		deadline := start.Add(d)
		took = nil
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := c * 1000000; time.Now().Before(deadline); i++ {
					start := time.Now()
					ok, right := one(i)
					mu.Lock()
					took = append(took, time.Since(start))
					n++
					if !ok {
						errs++
					} else if !right {
						wrong++
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		// The last runs end after the deadline: they count, and so does
		// their time.
		elapsed = time.Since(start)
		return
	}
	w.baseline(b)
	cpu0 := machineCPU(b)
	row.BareRuns, _, _ = run(func(i int) (bool, bool) {
		out, err := exec.Command("/usr/bin/python3", "-c", fmt.Sprintf("print(%d)", i)).Output()
		return err == nil, string(out) == fmt.Sprintf("%d\n", i)
	})
	row.BareCPUMSPerRun, row.BareStealMSPerRun = machineCPU(b).since(cpu0).perRun(row.BareRuns)
	row.BarePerSec = float64(row.BareRuns) / elapsed.Seconds()
	w.ready(b)
	cpu0 = machineCPU(b)
	row.Runs, row.Errors, row.WrongOutput = run(func(i int) (bool, bool) {
		body, _ := json.Marshal(api.ExecuteRequest{Language: "python", Code: fmt.Sprintf("print(%d)", i)})
		status, resp := request(socket, "POST", "/v1/execute", string(body), nil)
		var res api.ExecuteResult
		json.Unmarshal(resp, &res)
		return status == 200, res.Stdout == fmt.Sprintf("%d\n", i)
	})
	row.PerSec = float64(row.Runs) / elapsed.Seconds()
	w.caughtUp(b)
	row.CPUMSPerRun, row.StealMSPerRun = machineCPU(b).since(cpu0).perRun(row.Runs)
	row.CPUBeyondMS = row.CPUMSPerRun - row.BareCPUMSPerRun
	row.Ratio = row.PerSec / row.BarePerSec
	if len(took) > 0 {
		row.P50MS, row.P95MS = ms(percentile(took, 50)), ms(percentile(took, 95))
		row.P95OverP50 = row.P95MS / row.P50MS
	}
	return row
}

// memory measures the drop of MemAvailable with idle sessions, then with
// a full pool, on a daemon of its own that starts with neither; and the
// peak RSS of the daemon that served the other measures.
func memory(b *testing.B, served *daemonProc) memoryRow {
	const n = 20
	row := memoryRow{SandboxesMeasured: n}
	settle := func() int64 {
		time.Sleep(2 * time.Second)
		return mustStatusKB(b, "/proc/meminfo", "MemAvailable")
	}
	d := startDaemon(b, daemonOpts{config: "[pool]\nsize = 0\n[sessions]\nmax = 64\nmax_per_uid = 64\n" + runtimeLanguages(os.Getenv("BENCH_RUNTIME"))})
	defer d.stop()
	sock := d.sock

	before := settle()
	var ids []string
	defer func() {
		for _, id := range ids {
			request(sock, "DELETE", "/v1/sessions/"+id, "", nil)
		}
	}()
	for range n {
		ids = append(ids, createSession(b, sock, api.CreateSessionRequest{Language: "python"}).ID)
	}
	during := settle()
	for _, id := range ids {
		request(sock, "DELETE", "/v1/sessions/"+id, "", nil)
	}
	ids = nil
	// The drop when they come and the rise when they go, averaged: what
	// the host's caches drift meanwhile cancels out.
	perSandbox := func(before, during, after int64) float64 {
		return float64((before-during)+(after-during)) / 2 / n / (1 << 20)
	}
	row.PerSessionMiB = perSandbox(before, during, settle())

	// Interpreter sessions, each with its idle python.
	before = settle()
	for range n {
		ids = append(ids, createSession(b, sock, api.CreateSessionRequest{Language: "python", Interpreter: true}).ID)
	}
	during = settle()
	for _, id := range ids {
		request(sock, "DELETE", "/v1/sessions/"+id, "", nil)
	}
	ids = nil
	row.PerInterpreterMiB = perSandbox(before, during, settle())

	// The pools: with reuse at 1, one of plain sandboxes; with cells, as
	// many cells beside it (one pool each of both kinds, of the same
	// size): an idle cell's share is what the second adds, its jail built
	// ahead included.
	poolSize := func(size, reuse int) {
		d.reload(b, fmt.Sprintf("[pool]\nsize = %d\nreuse = %d\n", size, reuse)+runtimeLanguages(os.Getenv("BENCH_RUNTIME")))
		full := waitFor(2*time.Minute, func() bool {
			target := metricValue(b, sock, "sandboxd_pool_target")
			return metricValue(b, sock, "sandboxd_pool_ready") == target && metricValue(b, sock, "sandboxd_containers") == target
		})
		if !full {
			b.Fatalf("the pools did not settle at size %d, reuse %d", size, reuse)
		}
	}
	before = settle()
	poolSize(n, 1)
	during = settle()
	poolSize(0, 1)
	row.PerPooledMiB = perSandbox(before, during, settle())
	if os.Getenv("BENCH_RUNTIME") == "" || os.Getenv("BENCH_RUNTIME") == "runc" {
		before = settle()
		poolSize(n, 50)
		during = settle()
		poolSize(0, 50)
		row.PerCellMiB = perSandbox(before, during, settle()) - row.PerPooledMiB
	}
	row.DaemonPeakRSSMiB = mib(procStatusKB(b, served.pid(), "VmHWM"))
	return row
}

// runtimeLanguages is the configuration that moves the benchmark's
// languages to an OCI runtime other than runc.
func runtimeLanguages(rt string) string {
	if rt == "" || rt == "runc" {
		return ""
	}
	var conf string
	for _, l := range []string{"python", "javascript", "bash"} {
		conf += fmt.Sprintf("[[languages]]\nname = %q\nruntime = %q\n", l, rt)
	}
	return conf
}

func printReport(r benchReport) {
	fmt.Printf("\nlatency (API request to full result, vs the same program bare on the host; %d runs each, one every %v at most, in %d alternating blocks of each; bare: while the daemon is idle; API: its uid's cell warm, the pool full; first: the run that took the cell, not in p50 and p95; cli p50: through a sandboxctl process)\n", benchSamples, latencyPace, latencyRounds)
	fmt.Printf("%-22s %-9s %9s %9s %9s %9s %8s %8s %8s %9s %9s\n", "program", "mode", "bare p50", "bare p95", "p50", "p95", "p50 x", "p95 x", "p95/p50", "first", "cli p50")
	for _, l := range r.Latency {
		fmt.Printf("%-22s %-9s %8.1fms %8.1fms %8.1fms %8.1fms %7.2fx %7.2fx %8.2f %8.1fms %8.1fms\n", l.Program, l.Mode, l.BareP50MS, l.BareP95MS, l.P50MS, l.P95MS, l.P50Ratio, l.P95Ratio, l.P95OverP50, l.FirstP50MS, l.CLIP50MS)
	}
	printBackToBack(r.BackToBack)
	printInterpreter(r.Interpreter)
	fmt.Printf("\nthroughput (python print(i), one-shot through the API, back to back, every output checked; p50 and p95: latency at capacity; bare: a block of its own while the daemon is idle)\n")
	fmt.Printf("%-8s %12s %12s %8s %7s %7s %7s %9s %9s %8s\n", "clients", "bare/s", "sandboxd/s", "ratio", "runs", "errors", "wrong", "p50", "p95", "p95/p50")
	for _, t := range r.Throughput {
		fmt.Printf("%-8d %12.1f %12.1f %7.2fx %7d %7d %7d %7.1fms %7.1fms %8.2f\n", t.Clients, t.BarePerSec, t.PerSec, t.Ratio, t.Runs, t.Errors, t.WrongOutput, t.P50MS, t.P95MS, t.P95OverP50)
	}
	printCPU(r.Throughput)
	printBatch(r.Batch)
	m := r.Memory
	fmt.Printf("\nmemory: %.1f MiB per idle session, %.1f MiB per idle python interpreter session, %.1f MiB per pooled sandbox, %.1f MiB per pooled cell with its jail built ahead (MemAvailable drop over %d of each); daemon peak RSS %.1f MiB\n",
		m.PerSessionMiB, m.PerInterpreterMiB, m.PerPooledMiB, m.PerCellMiB, m.SandboxesMeasured, m.DaemonPeakRSSMiB)
}

func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

//go:build integration

package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// The soak row's shape, and its targets (issue 12).
const (
	soakRuns         = 10000 // BENCH_SOAK_RUNS overrides it
	soakClients      = 8
	soakSampleEvery  = 250 * time.Millisecond
	soakGrowthMiB    = 32  // RSS after ≤ RSS before + this
	soakPeakMiB      = 150 // peak RSS ≤ this
	bodyClients      = 16
	bodySendsPerConn = 1
	// bodyMaxFileBytes is the cap on a submission's files, decoded: the
	// default [sessions] max_file, which GET /v1/info does not give.
	bodyMaxFileBytes = 32 << 20
)

// soakReport is what BenchmarkSoak prints, and writes as JSON to
// $BENCH_SOAK_JSON (or $BENCH_JSON with "-soak" before its extension).
type soakReport struct {
	Soak soakRow  `json:"soak"`
	Body *bodyRow `json:"body,omitempty"`
}

type soakRow struct {
	Runs        int     `json:"runs"`
	Clients     int     `json:"clients"`
	Errors      int     `json:"errors"`
	WrongOutput int     `json:"wrong_output"`
	PerSec      float64 `json:"per_sec"`
	P50MS       float64 `json:"p50_ms"`
	P95MS       float64 `json:"p95_ms"`
	P99MS       float64 `json:"p99_ms"`
	// ErrorStatuses counts the answers other than 200 by status; 0 is no
	// answer at all.
	ErrorStatuses map[int]int `json:"error_statuses,omitempty"`
	FirstError    string      `json:"first_error,omitempty"`
	// The daemon's VmRSS when idle before and after; the peak is its
	// VmHWM, which no sample can exceed; the highest VmRSS sampled every
	// 250 ms is beside it.
	RSSBeforeMiB      float64 `json:"rss_before_mib"`
	RSSPeakMiB        float64 `json:"rss_peak_mib"`
	RSSPeakSampledMiB float64 `json:"rss_peak_sampled_mib"`
	RSSAfterMiB       float64 `json:"rss_after_mib"`
	GoroutinesBefore  float64 `json:"goroutines_before"`
	GoroutinesPeak    float64 `json:"goroutines_peak"`
	GoroutinesAfter   float64 `json:"goroutines_after"`
	GrowthTargetMet   bool    `json:"growth_target_met"` // after ≤ before + 32 MiB
	PeakTargetMet     bool    `json:"peak_target_met"`   // peak ≤ 150 MiB
}

type bodyRow struct {
	BodyBytes int64 `json:"body_bytes"`
	// What the body carries, decoded.
	CodeBytes  int64 `json:"code_bytes"`
	StdinBytes int64 `json:"stdin_bytes"`
	FilesBytes int64 `json:"files_bytes"`
	Clients    int   `json:"clients"`
	Sends      int   `json:"sends"`
	// Statuses counts the answers by status (0: no answer); 200 and 429
	// are the acceptable ones.
	Statuses    map[int]int `json:"statuses"`
	Others      int         `json:"others"`
	WrongOutput int         `json:"wrong_output"`
	FirstError  string      `json:"first_error,omitempty"`
	Seconds     float64     `json:"seconds"`
	IdleRSSMiB  float64     `json:"idle_rss_mib"`
	PeakRSSMiB  float64     `json:"peak_rss_mib"`
	TargetMiB   float64     `json:"target_mib"` // idle + 2 × body
	TargetMet   bool        `json:"target_met"`
}

// BenchmarkSoak runs many one-shot executions at 8 clients on a daemon of
// its own and reports errors, wrong outputs, latency, and the daemon's RSS
// and goroutines before, at the peak and after; then it sends the largest
// valid execute body from 16 clients at once to a fresh daemon and reports
// its peak RSS against its idle RSS plus twice the body. The targets are
// reported, not asserted; errors and wrong outputs fail it. Run it with
// `make bench`; BENCH_SOAK_RUNS sets the number of executions (10,000).
func BenchmarkSoak(b *testing.B) {
	runs := soakRuns
	if n, err := strconv.Atoi(os.Getenv("BENCH_SOAK_RUNS")); err == nil && n > 0 {
		runs = n
	}
	var rep soakReport
	for range b.N {
		rep = soakReport{}
		d, m := startSoakDaemon(b, "--max-queued", "64")
		rep.Soak = soak(b, m, runs)
		// The body is checked on this daemon, whose figures are taken: a
		// run of it on the next would count in that one's idle RSS.
		body, err := maxBody(b, m)
		if err := d.stop(); err != nil {
			b.Errorf("the soak's daemon did not stop cleanly: %v", err)
		}
		if err != nil {
			b.Errorf("the maximum-size body: %v", err)
		} else {
			rep.Body = bodyBurst(b, body)
		}
	}
	printSoakReport(rep)
	path := os.Getenv("BENCH_SOAK_JSON")
	if p := os.Getenv("BENCH_JSON"); path == "" && p != "" {
		ext := filepath.Ext(p)
		path = strings.TrimSuffix(p, ext) + "-soak" + ext
	}
	if path != "" {
		data, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	if s := rep.Soak; s.Errors > 0 || s.WrongOutput > 0 {
		b.Errorf("soak: %d errors (%v), %d wrong outputs; the first: %s", s.Errors, s.ErrorStatuses, s.WrongOutput, s.FirstError)
	}
	if r := rep.Body; r != nil && (r.Others > 0 || r.WrongOutput > 0) {
		b.Errorf("maximum-size bodies: statuses %v, %d wrong outputs; the first: %s", r.Statuses, r.WrongOutput, r.FirstError)
	}
}

// startSoakDaemon starts a daemon of the benchmark's own, waits until its
// pool is full, warms it with 20 runs and waits until it is idle again:
// what is made once is in its baseline. Its used cells wait a second for
// their uid's next execution (they are used without a pause during the
// soak), so that idle means none is left, before and after.
func startSoakDaemon(b *testing.B, args ...string) (*daemonProc, *soakMonitor) {
	d := startDaemon(b, daemonOpts{dir: testDir(b, "sbxq"), config: "[pool]\nidle = \"1s\"\n", args: args})
	m := &soakMonitor{sock: d.sock, pid: d.pid(), c: keptClient(d.sock)}
	m.waitIdle(b)
	warm := keptClient(d.sock)
	for i := range 20 {
		if status, _, wrong, err := soakRun(warm, i); status != 200 || wrong {
			b.Fatalf("warm-up run %d: status %d, wrong output %v: %v", i, status, wrong, err)
		}
	}
	warm.CloseIdleConnections()
	m.waitIdle(b)
	return d, m
}

// soak runs n executions of `echo $((i * 7))`, each with its own output,
// from soakClients clients that each keep their connection, sampling the
// daemon's RSS and goroutines meanwhile.
func soak(b *testing.B, m *soakMonitor, n int) soakRow {
	row := soakRow{Runs: n, Clients: soakClients, ErrorStatuses: map[int]int{}}
	row.RSSBeforeMiB = mib(m.rss(b))
	row.GoroutinesBefore = m.mustMetric(b, "go_goroutines")

	var peakGoroutines, peakRSSSampled atomic.Int64
	peakGoroutines.Store(int64(row.GoroutinesBefore))
	statusPath := fmt.Sprintf("/proc/%d/status", m.pid) // read off the benchmark's goroutine
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(soakSampleEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if rss, err := statusKB(statusPath, "VmRSS"); err == nil && rss > peakRSSSampled.Load() {
				peakRSSSampled.Store(rss)
			}
			if g, err := m.metric("go_goroutines"); err == nil && int64(g) > peakGoroutines.Load() {
				peakGoroutines.Store(int64(g))
			}
		}
	}()

	took := make([]time.Duration, n)
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	clients := make([]*http.Client, soakClients)
	start := time.Now()
	for c := range clients {
		clients[c] = keptClient(m.sock)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				status, d, wrong, err := soakRun(clients[c], i)
				took[i] = d
				if status == 200 && !wrong {
					continue
				}
				mu.Lock()
				if status != 200 {
					row.Errors++
					row.ErrorStatuses[status]++
				} else {
					row.WrongOutput++
				}
				if row.FirstError == "" {
					row.FirstError = fmt.Sprintf("run %d: status %d: %v", i, status, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	<-sampled

	row.PerSec = float64(n) / elapsed.Seconds()
	row.P50MS, row.P95MS, row.P99MS = ms(percentile(took, 50)), ms(percentile(took, 95)), ms(percentile(took, 99))
	row.GoroutinesPeak = float64(peakGoroutines.Load())
	for _, c := range clients {
		c.CloseIdleConnections()
	}
	m.waitIdle(b)
	row.RSSAfterMiB = mib(m.rss(b))
	row.GoroutinesAfter = m.mustMetric(b, "go_goroutines")
	row.RSSPeakMiB = mib(procStatusKB(b, m.pid, "VmHWM"))
	row.RSSPeakSampledMiB = mib(peakRSSSampled.Load())
	row.GrowthTargetMet = row.RSSAfterMiB <= row.RSSBeforeMiB+soakGrowthMiB
	row.PeakTargetMet = row.RSSPeakMiB <= soakPeakMiB
	return row
}

// soakRun runs execution i through c: its status, its time from the
// request sent to the full result received, and whether its output was
// wrong.
func soakRun(c *http.Client, i int) (status int, took time.Duration, wrong bool, err error) {
	body, _ := json.Marshal(api.ExecuteRequest{Language: "bash", Code: fmt.Sprintf("echo $((%d * 7))", i)})
	start := time.Now()
	resp, err := c.Post("http://sandboxd/v1/execute", "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, time.Since(start), false, err
	}
	out, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took = time.Since(start)
	if err != nil {
		return 0, took, false, err
	}
	if resp.StatusCode != 200 {
		return resp.StatusCode, took, false, fmt.Errorf("%s", bytes.TrimSpace(out))
	}
	var res api.ExecuteResult
	if err := json.Unmarshal(out, &res); err != nil || res.Status != api.StatusOK || res.Stdout != fmt.Sprintf("%d\n", i*7) {
		return 200, took, true, fmt.Errorf("result %s", out)
	}
	return 200, took, false, nil
}

// maxBody builds the largest execute request m's daemon takes as valid
// and checks that it runs there. Code, stdin and files are at their caps,
// decoded; their characters are JSON escapes (\u0041, 6 bytes for 1) up
// to the daemon's body limit, the bytes it reads of a request at most.
//
// The limit is computed as daemon/server.go's bodyLimit does; should the
// daemon refuse the body as larger than its limit, the body is built again
// to the limit the refusal names.
func maxBody(b *testing.B, m *soakMonitor) (*execBody, error) {
	info := m.info(b)
	l := info.Limits
	limit := 6*(l.MaxCodeBytes+l.MaxStdinBytes) + 2*bodyMaxFileBytes + 6*(64<<10) + 6*(64<<10) + 256<<10
	tooBig := regexp.MustCompile(`larger than (?:the maximum of )?(\d+)`)
	for try := 0; ; try++ {
		body := buildBody(limit-1024, l.MaxCodeBytes, l.MaxStdinBytes, bodyMaxFileBytes)
		c := keptClient(m.sock)
		c.Timeout = 5 * time.Minute
		status, wrong, err := body.send(c)
		c.CloseIdleConnections()
		if status == 200 && !wrong {
			return body, nil
		}
		if match := tooBig.FindStringSubmatch(fmt.Sprint(err)); status == 413 && match != nil && try == 0 {
			limit, _ = strconv.ParseInt(match[1], 10, 64)
			continue
		}
		return nil, fmt.Errorf("a body of %d bytes: status %d, wrong output %v: %v", len(body.data), status, wrong, err)
	}
}

// execBody is a request body and the output its program must give.
type execBody struct {
	data               []byte
	code, stdin, files int64 // decoded
	want               string
}

// buildBody builds an execute request of about size bytes (fewer if the
// caps do not allow it): bash code of comment lines up to maxCode, stdin
// of maxStdin bytes, and four files of maxFiles bytes in all, written as
// JSON escapes where the size allows. The program counts its stdin and
// files, so a body that did not arrive whole shows.
func buildBody(size, maxCode, maxStdin, maxFiles int64) *execBody {
	const escaped = `\u0041` // "A"
	tail := "\necho ok $(wc -c) $(cat f0 f1 f2 f3 | wc -c)\n"
	tailJSON, _ := json.Marshal(tail)
	var buf bytes.Buffer
	buf.Grow(int(size) + 1024)
	// Code: comment lines of 1 KiB, decoded.
	buf.WriteString(`{"language":"bash","code":"`)
	line := "#" + strings.Repeat(escaped, 1022) + `\n`
	left := maxCode - int64(len(tail))
	for ; left >= 1024; left -= 1024 {
		buf.WriteString(line)
	}
	if left >= 2 {
		buf.WriteString("#" + strings.Repeat(escaped, int(left-2)) + `\n`)
	} else if left == 1 {
		buf.WriteString(`\n`)
	}
	buf.Write(tailJSON[1 : len(tailJSON)-1])
	buf.WriteString(`","stdin":"`)
	buf.WriteString(strings.Repeat(escaped, int(maxStdin)))
	buf.WriteString(`","files":[`)
	// Files: the rest of the size, in four files of maxFiles/4 decoded;
	// x escapes and the rest plain: 6x + (maxFiles - x) bytes.
	const nFiles = 4
	skeleton := int64(nFiles*len(`{"path":"f0","content":""},`) - 1 + len(`]}`))
	room := size - int64(buf.Len()) - skeleton
	decoded := maxFiles
	var x int64
	switch {
	case room >= 6*decoded:
		x = decoded
	case room >= decoded:
		x = (room - decoded) / 5
	default:
		decoded = max(room, 0)
	}
	for f := range int64(nFiles) {
		if f > 0 {
			buf.WriteByte(',')
		}
		n := decoded / nFiles
		e := x / nFiles
		if f == 0 {
			n += decoded % nFiles
			e += x % nFiles
		}
		fmt.Fprintf(&buf, `{"path":"f%d","content":"`, f)
		buf.WriteString(strings.Repeat(escaped, int(e)))
		buf.WriteString(strings.Repeat("B", int(n-e)))
		buf.WriteString(`"}`)
	}
	buf.WriteString(`]}`)
	return &execBody{data: buf.Bytes(), code: maxCode, stdin: maxStdin, files: decoded,
		want: fmt.Sprintf("ok %d %d\n", maxStdin, decoded)}
}

// send posts the body with c: its status, and whether a 200's output was
// wrong.
func (e *execBody) send(c *http.Client) (status int, wrong bool, err error) {
	resp, err := c.Post("http://sandboxd/v1/execute", "application/json", bytes.NewReader(e.data))
	if err != nil {
		return 0, false, err
	}
	out, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, false, err
	}
	if resp.StatusCode != 200 {
		return resp.StatusCode, false, fmt.Errorf("%s", bytes.TrimSpace(out))
	}
	var res api.ExecuteResult
	if err := json.Unmarshal(out, &res); err != nil || res.Status != api.StatusOK || res.Stdout != e.want {
		return 200, true, fmt.Errorf("result %.500s", out)
	}
	return 200, false, nil
}

// bodyBurst sends the body from bodyClients clients at once to a fresh
// daemon, at its default limits, and compares its peak RSS during the
// burst with its idle RSS plus twice the body.
func bodyBurst(b *testing.B, body *execBody) *bodyRow {
	d, m := startSoakDaemon(b)
	defer d.stop()
	row := &bodyRow{BodyBytes: int64(len(body.data)), CodeBytes: body.code, StdinBytes: body.stdin, FilesBytes: body.files,
		Clients: bodyClients, Sends: bodyClients * bodySendsPerConn, Statuses: map[int]int{}}
	row.IdleRSSMiB = mib(m.rss(b))
	// The peak is that of the burst: start-up and warm-up are forgotten.
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", m.pid), []byte("5"), 0); err != nil {
		b.Logf("VmHWM not reset, the peak includes the daemon's start: %v", err)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	ready := make(chan struct{})
	start := time.Now()
	for range bodyClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := keptClient(m.sock)
			c.Timeout = 10 * time.Minute
			defer c.CloseIdleConnections()
			<-ready
			for range bodySendsPerConn {
				status, wrong, err := body.send(c)
				mu.Lock()
				row.Statuses[status]++
				switch {
				case wrong:
					row.WrongOutput++
				case status != 200 && status != 429:
					row.Others++
				}
				if (wrong || (status != 200 && status != 429)) && row.FirstError == "" {
					row.FirstError = fmt.Sprintf("status %d: %.500v", status, err)
				}
				mu.Unlock()
			}
		}()
	}
	close(ready)
	wg.Wait()
	row.Seconds = time.Since(start).Seconds()
	row.PeakRSSMiB = mib(procStatusKB(b, m.pid, "VmHWM"))
	row.TargetMiB = row.IdleRSSMiB + 2*mib(row.BodyBytes)
	row.TargetMet = row.PeakRSSMiB <= row.TargetMiB
	if err := d.stop(); err != nil {
		b.Errorf("the body row's daemon did not stop cleanly: %v", err)
	}
	return row
}

// soakMonitor reads a daemon's state over one kept connection, so that
// watching it opens no connections for the daemon to count.
type soakMonitor struct {
	sock string
	pid  int
	c    *http.Client
}

func (m *soakMonitor) get(path string) ([]byte, error) {
	resp, err := m.c.Get("http://sandboxd" + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	return body, err
}

// metric reads one unlabelled metric.
func (m *soakMonitor) metric(name string) (float64, error) {
	body, err := m.get("/metrics")
	if err != nil {
		return 0, err
	}
	if v, ok := metricIn(body, name); ok {
		return v, nil
	}
	return 0, fmt.Errorf("no metric %s", name)
}

func (m *soakMonitor) mustMetric(b *testing.B, name string) float64 {
	v, err := m.metric(name)
	if err != nil {
		b.Fatal(err)
	}
	return v
}

func (m *soakMonitor) info(b *testing.B) api.Info {
	body, err := m.get("/v1/info")
	var info api.Info
	if err == nil {
		err = json.Unmarshal(body, &info)
	}
	if err != nil {
		b.Fatal(err)
	}
	return info
}

// rss is the daemon's VmRSS.
func (m *soakMonitor) rss(b *testing.B) int64 {
	return procStatusKB(b, m.pid, "VmRSS")
}

// waitIdle waits until nothing runs or waits, no used cell waits for its
// uid and the default pool is full (every teardown is over then, as a run
// slot is held until its teardown ends), and then until the daemon's
// goroutines settle.
func (m *soakMonitor) waitIdle(b *testing.B) {
	pool := m.mustMetric(b, "sandboxd_pool_target")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		info := m.info(b)
		if info.Running == 0 && info.Queued == 0 && m.mustMetric(b, "sandboxd_pool_ready") >= pool &&
			m.mustMetric(b, "sandboxd_cells_idle") == 0 {
			waitSettled(func() float64 { return m.mustMetric(b, "go_goroutines") })
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("the daemon did not come back to idle: %+v", info)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func metOrNot(met bool) string {
	if met {
		return "met"
	}
	return "NOT met"
}

// thousands writes n with thousands separators: 10,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func printSoakReport(r soakReport) {
	s := r.Soak
	fmt.Printf("\nsoak (%s one-shot bash runs at %d clients through the API, each client on a kept connection, every output checked)\n", thousands(s.Runs), s.Clients)
	fmt.Printf("%7s %7s %7s %8s %9s %9s %9s\n", "runs", "errors", "wrong", "runs/s", "p50", "p95", "p99")
	fmt.Printf("%7d %7d %7d %8.1f %7.1fms %7.1fms %7.1fms\n", s.Runs, s.Errors, s.WrongOutput, s.PerSec, s.P50MS, s.P95MS, s.P99MS)
	if s.Errors > 0 {
		fmt.Printf("errors by status (0: no answer): %v; the first: %s\n", s.ErrorStatuses, s.FirstError)
	}
	fmt.Printf("%-22s %9s %9s %9s\n", "daemon", "before", "peak", "after")
	fmt.Printf("%-22s %9.1f %9.1f %9.1f   (highest VmRSS sampled: %.1f)\n", "RSS (MiB; peak: VmHWM)", s.RSSBeforeMiB, s.RSSPeakMiB, s.RSSAfterMiB, s.RSSPeakSampledMiB)
	fmt.Printf("%-22s %9.0f %9.0f %9.0f\n", "goroutines", s.GoroutinesBefore, s.GoroutinesPeak, s.GoroutinesAfter)
	fmt.Printf("targets: after ≤ before + %d MiB: %s; peak ≤ %d MiB: %s\n", soakGrowthMiB, metOrNot(s.GrowthTargetMet), soakPeakMiB, metOrNot(s.PeakTargetMet))
	bd := r.Body
	if bd == nil {
		fmt.Printf("\nmaximum-size bodies: not measured\n")
		return
	}
	fmt.Printf("\nmaximum-size valid bodies (%d clients at once, %d each, on a fresh daemon at its defaults; a body of %.1f MiB (%d bytes): code %.1f MiB, stdin %.1f MiB, files %.1f MiB, decoded; JSON escapes up to the body limit)\n",
		bd.Clients, bd.Sends/bd.Clients, mib(bd.BodyBytes), bd.BodyBytes, mib(bd.CodeBytes), mib(bd.StdinBytes), mib(bd.FilesBytes))
	fmt.Printf("statuses: 200: %d, 429: %d, others: %d; wrong outputs: %d; %.1f s in all\n",
		bd.Statuses[200], bd.Statuses[429], bd.Others, bd.WrongOutput, bd.Seconds)
	if bd.Others > 0 {
		fmt.Printf("all statuses (0: no answer): %v\n", bd.Statuses)
	}
	if bd.FirstError != "" {
		fmt.Printf("the first error: %s\n", bd.FirstError)
	}
	fmt.Printf("RSS: idle %.1f MiB, peak %.1f MiB (VmHWM during the burst)\n", bd.IdleRSSMiB, bd.PeakRSSMiB)
	fmt.Printf("target: peak ≤ idle + 2 × body = %.1f MiB: %s\n", bd.TargetMiB, metOrNot(bd.TargetMet))
}

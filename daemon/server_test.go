package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/sandboxd/sandboxd/daemon/api"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
	"github.com/sandboxd/sandboxd/runtime/sandbox/sandboxtest"
)

var testLanguages = []Language{
	{LanguageSpec: LanguageSpec{Name: "python", Aliases: []string{"py"}, FileName: "main.py", Run: []string{"/usr/bin/python3", "/sandbox/main.py"}}, Version: "3.11"},
	{LanguageSpec: LanguageSpec{Name: "c", FileName: "main.c", Compile: []string{"/usr/bin/gcc", "/sandbox/main.c"}, Run: []string{"/tmp/main"}}, Version: "12"},
}

func newTestServer(t *testing.T, rt *sandboxtest.Runtime, mod func(*Limits)) *Server {
	t.Helper()
	lim := DefaultLimits(2)
	lim.CellReuse = 1 // cells have tests of their own (cells_test.go)
	lim.PoolSize = 0
	if mod != nil {
		mod(&lim)
	}
	return New(Config{Runtime: fakeRuntime{rt}, Languages: testLanguages, Limits: lim, Version: "test",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

func post(t *testing.T, h http.Handler, body string) (*httptest.ResponseRecorder, api.ExecuteResult, api.Error) {
	t.Helper()
	req := httptest.NewRequest("POST", "/v1/execute", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	var res api.ExecuteResult
	var e api.Error
	if w.Code == 200 {
		json.Unmarshal(w.Body.Bytes(), &res)
	} else {
		json.Unmarshal(w.Body.Bytes(), &e)
	}
	return w, res, e
}

func TestExecuteResult(t *testing.T) {
	rt := &sandboxtest.Runtime{Exec: func(_ context.Context, p sandbox.Process) (sandbox.ExitResult, error) {
		in, _ := io.ReadAll(p.Stdin)
		p.Stdout.Write([]byte("got " + string(in)))
		p.Stderr.Write([]byte{0xff, 0xfe})
		return sandbox.ExitResult{ExitCode: 3}, nil
	}}
	s := newTestServer(t, rt, nil)
	w, res, _ := post(t, s, `{"language":"PY","code":"print(1)","stdin":"x","env":{"A":"b"},"args":["1"]}`)
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if res.Language != "python" || res.Status != api.StatusFailed || res.ExitCode != 3 || res.Stdout != "got x" {
		t.Errorf("result %+v", res)
	}
	if res.StderrEncoding != api.EncodingBase64 || res.Stderr != "//4=" {
		t.Errorf("stderr %q encoding %q", res.Stderr, res.StderrEncoding)
	}
	if res.Usage.CPUMS != 5 || res.Usage.MemoryPeakBytes != 1<<20 || len(res.ID) != 32 {
		t.Errorf("usage %+v id %q", res.Usage, res.ID)
	}
	if w.Header().Get(api.VersionHeader) != "test" {
		t.Error("no version header")
	}
	s.Wait() // the teardown runs after the answer
	cfg, lastExec := rt.Created()[0], rt.LastExec()
	if cfg.Limits.MemoryBytes != 256<<20 || rt.Deletes() != 1 {
		t.Errorf("sandbox %+v, deleted %d", cfg, rt.Deletes())
	}
	if !strings.Contains(strings.Join(cfg.Env, " "), "HOME=/workspace") {
		t.Errorf("sandbox env %q", cfg.Env)
	}
	if string(lastExec.Files["main.py"]) != "print(1)" || strings.Join(lastExec.Env, " ") != "A=b" {
		t.Errorf("process files %v, env %q", lastExec.Files, lastExec.Env)
	}
}

func TestStatuses(t *testing.T) {
	for _, tc := range []struct {
		exit   sandbox.ExitResult
		status string
		signal string
	}{
		{sandbox.ExitResult{ExitCode: 0}, api.StatusOK, ""},
		{sandbox.ExitResult{ExitCode: 1}, api.StatusFailed, ""},
		{sandbox.ExitResult{ExitCode: 139, Signal: 11}, api.StatusSignaled, "SIGSEGV"},
		{sandbox.ExitResult{ExitCode: 139}, api.StatusFailed, ""},
		{sandbox.ExitResult{ExitCode: 137, OOMKilled: true}, api.StatusOOMKilled, "SIGKILL"},
		{sandbox.ExitResult{ExitCode: 137, Killed: true}, api.StatusTimedOut, "SIGKILL"},
	} {
		if st, sig := status(tc.exit, false); st != tc.status || sig != tc.signal {
			t.Errorf("%+v: %s %s, want %s %s", tc.exit, st, sig, tc.status, tc.signal)
		}
	}
	if st, _ := status(sandbox.ExitResult{ExitCode: 1}, true); st != api.StatusCompileError {
		t.Errorf("compile failure: %s", st)
	}
}

func TestCompileErrorSkipsRun(t *testing.T) {
	var runs int
	rt := &sandboxtest.Runtime{Exec: func(_ context.Context, p sandbox.Process) (sandbox.ExitResult, error) {
		runs++
		p.Stderr.Write([]byte("main.c:1: error"))
		return sandbox.ExitResult{ExitCode: 1}, nil
	}}
	_, res, _ := post(t, newTestServer(t, rt, nil), `{"language":"c","code":"x"}`)
	if res.Status != api.StatusCompileError || res.Stderr != "main.c:1: error" || runs != 1 {
		t.Errorf("result %+v after %d execs", res, runs)
	}
}

// A compiler's output is streamed as it writes it, as stderr events
// whichever of its streams it wrote (it is diagnostics, not the program's
// output); the result keeps it as the compiler wrote it.
func TestStreamedCompileError(t *testing.T) {
	w := httptest.NewRecorder()
	var whileCompiling string
	rt := &sandboxtest.Runtime{Exec: func(_ context.Context, p sandbox.Process) (sandbox.ExitResult, error) {
		p.Stdout.Write([]byte("note "))
		p.Stderr.Write([]byte("main.c:1: error"))
		whileCompiling = w.Body.String() // what the client had before the compiler's exit
		return sandbox.ExitResult{ExitCode: 1}, nil
	}}
	req := httptest.NewRequest("POST", "/v1/execute", strings.NewReader(`{"language":"c","code":"x"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", api.NDJSON)
	newTestServer(t, rt, nil).ServeHTTP(w, req)
	if _, streamed, _ := readEvents(t, whileCompiling); streamed[api.EventStderr] != "note main.c:1: error" {
		t.Errorf("streamed while the compiler ran: %q", whileCompiling)
	}
	res, streamed, _ := readEvents(t, w.Body.String())
	if streamed[api.EventStdout] != "" || streamed[api.EventStderr] != "note main.c:1: error" {
		t.Errorf("streamed %q", streamed)
	}
	if res.Status != api.StatusCompileError || res.Phase != api.PhaseCompile || res.ExitCode != 1 ||
		res.Stdout != "note " || res.Stderr != "main.c:1: error" || res.Message != "" {
		t.Errorf("result %+v", res)
	}
}

// readEvents reads a streamed execution: its result, and the data of its
// output events by type, in order.
func readEvents(t *testing.T, body string) (api.ExecuteResult, map[string]string, []api.StreamEvent) {
	t.Helper()
	var res api.ResultEvent
	streamed := map[string]string{}
	var events []api.StreamEvent
	for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
		var ev api.StreamEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		events = append(events, ev)
		switch ev.Type {
		case api.EventStdout, api.EventStderr:
			streamed[ev.Type] += ev.Data
		case api.EventResult:
			json.Unmarshal([]byte(line), &res)
		}
	}
	return res.ExecuteResult, streamed, events
}

// A compile ended by a limit is the limit's verdict, in phase compile, not
// a compile_error: a compiler driver whose child the OOM killer ended, or
// that was refused a fork, exits 1 as one that found an error, and only
// the cgroup's counters, before and after the compile, tell them apart.
func TestCompileAtALimit(t *testing.T) {
	const killed = "g++: fatal error: Killed signal terminated program cc1plus\n"
	for _, tc := range []struct {
		name string
		// compile writes what the compiler would and counts what the
		// kernel would in counters.
		compile  func(ctx context.Context, p sandbox.Process, counters *sandbox.Stats) sandbox.ExitResult
		counted  sandbox.Stats // before the compile: an earlier execution's
		status   string
		exitCode int
		signal   string
		message  string
	}{
		{"oom", func(_ context.Context, p sandbox.Process, c *sandbox.Stats) sandbox.ExitResult {
			p.Stderr.Write([]byte(killed))
			c.OOMKills++
			return sandbox.ExitResult{ExitCode: 1}
		}, sandbox.Stats{}, api.StatusOOMKilled, 137, "SIGKILL", "the compiler reached the memory limit"},
		{"oom after earlier ones", func(_ context.Context, p sandbox.Process, c *sandbox.Stats) sandbox.ExitResult {
			p.Stderr.Write([]byte(killed))
			c.OOMKills++
			return sandbox.ExitResult{ExitCode: 1}
		}, sandbox.Stats{OOMKills: 2, PidsLimitHits: 1}, api.StatusOOMKilled, 137, "SIGKILL", "the compiler reached the memory limit"},
		{"the compiler itself oom-killed", func(_ context.Context, p sandbox.Process, c *sandbox.Stats) sandbox.ExitResult {
			c.OOMKills++
			return sandbox.ExitResult{ExitCode: 137, Signal: 9, OOMKilled: true}
		}, sandbox.Stats{}, api.StatusOOMKilled, 137, "SIGKILL", "the compiler reached the memory limit"},
		{"pids", func(_ context.Context, p sandbox.Process, c *sandbox.Stats) sandbox.ExitResult {
			p.Stderr.Write([]byte("go: fork/exec /usr/lib/go/pkg/tool/linux_amd64/compile: resource temporarily unavailable\n"))
			c.PidsLimitHits++
			return sandbox.ExitResult{ExitCode: 1}
		}, sandbox.Stats{}, api.StatusFailed, 1, "", "the compiler reached the sandbox's process limit"},
		{"the sandbox ended at its process limit", func(_ context.Context, p sandbox.Process, c *sandbox.Stats) sandbox.ExitResult {
			return sandbox.ExitResult{ExitCode: 137, Signal: 9, SandboxKilled: "the sandbox reached its process limit"}
		}, sandbox.Stats{}, api.StatusSignaled, 137, "SIGKILL", "the sandbox reached its process limit"},
		{"timeout", func(ctx context.Context, p sandbox.Process, c *sandbox.Stats) sandbox.ExitResult {
			<-ctx.Done()
			return sandbox.ExitResult{ExitCode: 137, Signal: 9, Killed: true}
		}, sandbox.Stats{}, api.StatusTimedOut, 137, "SIGKILL", "the timeout came while compiling"},
		{"an error in the code, after an earlier oom", func(_ context.Context, p sandbox.Process, c *sandbox.Stats) sandbox.ExitResult {
			p.Stderr.Write([]byte("main.c:1: error"))
			return sandbox.ExitResult{ExitCode: 1}
		}, sandbox.Stats{OOMKills: 1, PidsLimitHits: 1}, api.StatusCompileError, 1, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			counters, runs := tc.counted, 0
			rt := &sandboxtest.Runtime{
				Exec: func(ctx context.Context, p sandbox.Process) (sandbox.ExitResult, error) {
					mu.Lock()
					defer mu.Unlock()
					runs++
					return tc.compile(ctx, p, &counters), nil
				},
				Stats: func() (sandbox.Stats, error) {
					mu.Lock()
					defer mu.Unlock()
					return counters, nil
				},
			}
			_, res, _ := post(t, newTestServer(t, rt, nil), `{"language":"c","code":"x","timeout_ms":100}`)
			if res.Status != tc.status || res.Phase != api.PhaseCompile || res.ExitCode != tc.exitCode || res.Signal != tc.signal ||
				res.Message != tc.message || res.OOMKilled != (tc.status == api.StatusOOMKilled) || res.TimedOut != (tc.status == api.StatusTimedOut) {
				t.Errorf("result %+v", res)
			}
			if runs != 1 {
				t.Errorf("%d processes ran: the program ran after a failed compile", runs)
			}
		})
	}
}

// An execution that got past the compile ended in phase run, whatever its
// verdict; so did one of a language that does not compile.
func TestRunPhase(t *testing.T) {
	var mu sync.Mutex
	var counters sandbox.Stats
	rt := &sandboxtest.Runtime{
		Exec: func(_ context.Context, p sandbox.Process) (sandbox.ExitResult, error) {
			if p.Args[0] != "/tmp/main" && p.Args[0] != "/usr/bin/python3" {
				return sandbox.ExitResult{}, nil // the compiler
			}
			mu.Lock()
			defer mu.Unlock()
			counters.OOMKills++
			return sandbox.ExitResult{ExitCode: 137, Signal: 9, OOMKilled: true}, nil
		},
		Stats: func() (sandbox.Stats, error) {
			mu.Lock()
			defer mu.Unlock()
			return counters, nil
		},
	}
	s := newTestServer(t, rt, nil)
	for _, lang := range []string{"c", "python"} {
		_, res, _ := post(t, s, `{"language":"`+lang+`","code":"x"}`)
		if res.Status != api.StatusOOMKilled || res.Phase != api.PhaseRun || res.Message != "" {
			t.Errorf("%s: result %+v", lang, res)
		}
	}
}

// When the kernel ended the whole sandbox at a limit, its files went with
// it: the verdict is the answer, without files, and says so. Any other
// failure to collect fails the request.
func TestCollectAfterTheSandboxEnded(t *testing.T) {
	gone := fmt.Errorf("the sandbox's agent is gone: %w", errdefs.ErrFailedPrecondition)
	for _, tc := range []struct {
		name    string
		exit    sandbox.ExitResult
		err     error
		status  int
		verdict string
		message string
	}{
		{"oom", sandbox.ExitResult{ExitCode: 137, Signal: 9, OOMKilled: true}, gone, 200, api.StatusOOMKilled,
			"the sandbox ended at its memory limit: no files were collected"},
		{"pids", sandbox.ExitResult{ExitCode: 137, Signal: 9, SandboxKilled: "the sandbox reached its process limit"}, gone, 200, api.StatusSignaled,
			"the sandbox reached its process limit: no files were collected"},
		{"gone after a plain exit", sandbox.ExitResult{}, gone, 500, "", ""},
		{"unreadable after an oom", sandbox.ExitResult{ExitCode: 137, Signal: 9, OOMKilled: true}, errors.New("sandboxd-init: open out.txt: permission denied"), 500, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := &sandboxtest.Runtime{
				Exec:    func(context.Context, sandbox.Process) (sandbox.ExitResult, error) { return tc.exit, nil },
				Collect: func() ([]sandbox.Collected, error) { return nil, tc.err },
			}
			w, res, _ := post(t, newTestServer(t, rt, nil), `{"language":"python","code":"x","collect":["*"]}`)
			if w.Code != tc.status || tc.status == 200 && (res.Status != tc.verdict || res.Message != tc.message || len(res.Files) != 0) {
				t.Errorf("%d %s", w.Code, w.Body)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	rt := &sandboxtest.Runtime{Exec: func(ctx context.Context, p sandbox.Process) (sandbox.ExitResult, error) {
		p.Stdout.Write([]byte("partial"))
		<-ctx.Done()
		return sandbox.ExitResult{ExitCode: 137, Killed: true}, nil
	}}
	_, res, _ := post(t, newTestServer(t, rt, nil), `{"language":"python","code":"x","timeout_ms":50}`)
	if !res.TimedOut || res.Status != api.StatusTimedOut || res.Stdout != "partial" {
		t.Errorf("result %+v", res)
	}
}

func TestOutputCap(t *testing.T) {
	rt := &sandboxtest.Runtime{Exec: func(_ context.Context, p sandbox.Process) (sandbox.ExitResult, error) {
		for range 10 {
			p.Stdout.Write([]byte("0123456789"))
		}
		return sandbox.ExitResult{}, nil
	}}
	_, res, _ := post(t, newTestServer(t, rt, func(l *Limits) { l.OutputBytes = 25 }), `{"language":"python","code":"x"}`)
	if res.Stdout != "0123456789012345678901234" || !res.StdoutTruncated || res.StderrTruncated {
		t.Errorf("result %+v", res)
	}
}

func TestBadRequests(t *testing.T) {
	rt := &sandboxtest.Runtime{}
	s := newTestServer(t, rt, func(l *Limits) { l.MaxCodeBytes = 100 })
	for _, tc := range []struct {
		body   string
		status int
		want   string
	}{
		{`{"language":"cobol","code":"x"}`, 400, "available: python, c"},
		{`{"code":"x"}`, 400, "language is required"},
		{`{"language":"python","code":"` + strings.Repeat("x", 101) + `"}`, 400, "maximum of 100"},
		{`{"language":"python","code":"x","timeout_ms":-1}`, 400, "negative"},
		{`{"language":"python","code":"x","timeout_ms":300001}`, 400, "maximum"},
		{`{"language":"python","code":"x","memory_bytes":1000}`, 400, "minimum"},
		{`{"language":"python","code":"x","env":{"1A":"x"}}`, 400, "not a valid variable name"},
		{`{"language":"python","code":"x","args":["a\u0000b"]}`, 400, "NUL"},
		{`{"language":"python","code":"x"}x`, 400, "after the JSON object"},
		{`{"language":"python","code":"x","extra":1}`, 400, "unknown field"},
		{`[`, 400, "request body"},
	} {
		w, _, e := post(t, s, tc.body)
		if w.Code != tc.status || e.Code != api.CodeInvalidArgument || !strings.Contains(e.Message, tc.want) {
			t.Errorf("%.60s: %d %+v, want %d %q", tc.body, w.Code, e, tc.status, tc.want)
		}
	}
	if n := len(rt.Created()); n != 0 {
		t.Errorf("bad requests created %d sandboxes", n)
	}
}

func TestQueueFull(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 4)
	rt := &sandboxtest.Runtime{Exec: func(context.Context, sandbox.Process) (sandbox.ExitResult, error) {
		started <- struct{}{}
		<-release
		return sandbox.ExitResult{}, nil
	}}
	s := newTestServer(t, rt, func(l *Limits) { l.MaxConcurrent, l.MaxQueued = 1, 1 })
	var wg sync.WaitGroup
	for range 2 { // one runs, one waits
		wg.Add(1)
		go func() { defer wg.Done(); post(t, s, `{"language":"python","code":"x"}`) }()
	}
	<-started
	deadline := time.Now().Add(5 * time.Second)
	for _, q := s.slots.counts(); q != 1; _, q = s.slots.counts() {
		if time.Now().After(deadline) {
			t.Fatal("the second request never queued")
		}
		time.Sleep(time.Millisecond)
	}
	w, _, e := post(t, s, `{"language":"python","code":"x"}`)
	if w.Code != http.StatusTooManyRequests || e.Code != api.CodeResourceExhausted {
		t.Errorf("third request: %d %+v", w.Code, e)
	}
	close(release)
	wg.Wait()
}

func TestRoutes(t *testing.T) {
	s := newTestServer(t, &sandboxtest.Runtime{}, nil)
	for _, tc := range []struct {
		method, path string
		header       string
		status       int
	}{
		{"GET", "/v1/languages", "", 200},
		{"GET", "/v1/info", "", 200},
		{"GET", "/v1/health", "", 200},
		{"GET", "/v1/nothing", "", 404},
		{"GET", "/v1/info", "http://evil.example", 403},
		{"POST", "/v1/info", "", 405},
	} {
		req := httptest.NewRequest(tc.method, tc.path, nil)
		if tc.header != "" {
			req.Header.Set("Origin", tc.header)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if w.Code != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, w.Code, tc.status)
		}
	}
	req := httptest.NewRequest("POST", "/v1/execute", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "text/plain")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	if w.Code != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain: %d", w.Code)
	}
}

// startWithPool starts a server on a fake runtime whose pool holds size
// sandboxes.
func startWithPool(t *testing.T, size int) (*Server, *sandboxtest.Runtime) {
	t.Helper()
	rt := &sandboxtest.Runtime{}
	s := newTestServer(t, rt, func(l *Limits) { l.PoolSize = size })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s.Start(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for s.poolReady() < size {
		if time.Now().After(deadline) {
			t.Fatal("the pool did not fill")
		}
		time.Sleep(time.Millisecond)
	}
	return s, rt
}

func TestPool(t *testing.T) {
	s, rt := startWithPool(t, 2)
	s.pmu.Lock()
	p := s.pools[sandboxClass{Runtime: "runc"}]
	s.pmu.Unlock()
	if sb := p.take(s.sandboxLimits(512 << 20)); sb != nil {
		t.Error("a sandbox of the default memory served a request for more")
	}
	w, res, _ := post(t, s, `{"language":"python","code":"x"}`)
	if w.Code != 200 || res.Status != api.StatusOK {
		t.Fatalf("%d %+v", w.Code, res)
	}
	s.Wait() // the teardown runs after the answer
	cfgs, deleted := rt.Created(), rt.Deletes()
	created, kind := len(cfgs), cfgs[0].Kind
	if created != 2 && created != 3 || deleted != 1 {
		t.Errorf("created %d (the pool's 2, maybe a refill), deleted %d (the one used)", created, deleted)
	}
	if kind != "pool" {
		t.Errorf("pooled sandbox kind %q", kind)
	}
	s.Close(context.Background())
	if created, deleted := len(rt.Created()), rt.Deletes(); deleted != created {
		t.Errorf("after Close: %d created, %d deleted", created, deleted)
	}
}

// A reload to a smaller pool destroys the ready sandboxes over its size at
// once; a size of 0 empties it.
func TestPoolShrinksOnReload(t *testing.T) {
	s, rt := startWithPool(t, 3)
	defer s.Close(context.Background())
	for _, size := range []int{1, 0} {
		lim := s.limits()
		lim.PoolSize = size
		s.Reload(lim, s.languages(), Access{})
		live := len(rt.Created()) - rt.Deletes()
		if s.poolReady() != size || live != size {
			t.Errorf("pool size %d: %d ready, %d sandboxes not destroyed", size, s.poolReady(), live)
		}
	}
}

// A request that finds the pool empty creates its own sandbox, but takes a
// refill that is ready first; what it created then joins the pool, or is
// destroyed when there is no room. It never waits on a refill alone.
func TestAcquireSandboxRacesTheRefill(t *testing.T) {
	rt := &sandboxtest.Runtime{}
	s := newTestServer(t, rt, nil)
	class := sandboxClass{Runtime: "runc"}
	p := newPool(s, class, 1) // not started: the test is the refill
	s.pools[class] = p
	limits := s.sandboxLimits(s.limits().DefaultMemory)
	refill := func(id string) {
		p.ready <- pooled{newSandbox(rt, id), limits, s.rootGen.Load()}
	}
	type result struct {
		sb  Sandbox
		err error
	}
	// acquire calls acquireSandbox, whose create waits for release (or fails).
	acquire := func(ctx context.Context, id string, fail error) (chan result, chan struct{}) {
		release, started, out := make(chan struct{}), make(chan struct{}), make(chan result, 1)
		go func() {
			sb, err := s.acquireSandbox(ctx, class, limits, func(context.Context) (Sandbox, error) {
				close(started)
				<-release
				if fail != nil {
					return nil, fail
				}
				return newSandbox(rt, id), nil
			})
			out <- result{sb, err}
		}()
		<-started
		return out, release
	}
	// poolHolds waits for the pool to hold these sandboxes, and empties it.
	poolHolds := func(what string, want ...string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for len(p.ready) < len(want) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		var ids []string
		for len(p.ready) > 0 {
			r := <-p.ready
			ids = append(ids, r.sb.ID())
		}
		if !slices.Equal(ids, want) {
			t.Errorf("pool holds %v, want %s %v", ids, what, want)
		}
	}

	// The refill is ready first: the request takes it, its own joins the pool.
	out, release := acquire(context.Background(), "own", nil)
	refill("refill")
	if r := <-out; r.err != nil || r.sb.ID() != "refill" {
		t.Fatalf("got %v, %v; want the refill", r.sb, r.err)
	}
	close(release)
	poolHolds("the request's own sandbox", "own")

	// Its own is ready first: it is served by it.
	out, release = acquire(context.Background(), "own2", nil)
	close(release)
	if r := <-out; r.err != nil || r.sb.ID() != "own2" {
		t.Fatalf("got %v, %v; want its own", r.sb, r.err)
	}

	// Its own create fails with no refill ready: the error, at once.
	out, release = acquire(context.Background(), "", errdefs.ErrUnavailable)
	close(release)
	if r := <-out; !errdefs.IsUnavailable(r.err) {
		t.Fatalf("got %v, %v; want the create's error", r.sb, r.err)
	}

	// The client leaves while it waits: its sandbox, made later, is not
	// lost but pooled.
	ctx, cancel := context.WithCancel(context.Background())
	out, release = acquire(ctx, "left", nil)
	cancel()
	if r := <-out; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("got %v, %v; want context.Canceled", r.sb, r.err)
	}
	close(release)
	poolHolds("the sandbox made for the client that left", "left")

	// No room: a sandbox made for nobody is destroyed, not kept over size.
	out, release = acquire(context.Background(), "extra", nil)
	refill("refill2")
	<-out
	refill("full")
	before := rt.Deletes()
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if rt.Deletes() == before+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sandbox over the pool's size was not destroyed")
		}
		time.Sleep(time.Millisecond)
	}
	poolHolds("only the one it had", "full")
}

// Languages from images and on other runtimes: one pool per class, the
// request's runtime as policy allows, and a missing image said plainly.
func TestClassesAndPolicy(t *testing.T) {
	rt := &sandboxtest.Runtime{}
	langs := append(slices.Clone(testLanguages),
		Language{LanguageSpec: LanguageSpec{Name: "imgpy", FileName: "main.py", Run: []string{"python3", "/sandbox/main.py"}, Image: "present:1"}},
		Language{LanguageSpec: LanguageSpec{Name: "gone", FileName: "main.py", Run: []string{"python3", "/sandbox/main.py"}, Image: "missing:1"}},
		Language{LanguageSpec: LanguageSpec{Name: "strict", FileName: "main.sh", Run: []string{"/bin/sh", "/sandbox/main.sh"}, Runtime: "runsc"}},
	)
	lim := DefaultLimits(2)
	lim.PoolSize = 1
	s := New(Config{Runtime: fakeRuntime{rt}, Languages: langs, Limits: lim, Version: "test", OCIRuntimes: []string{"runsc"},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Start(ctx)
	defer s.Close(context.Background())
	// One pool per class: host/runc, present:1, missing:1 (the fake makes
	// it), host/runsc; and the cells' pools beside, which fill as fast.
	want := []sandboxClass{{Runtime: "runc"}, {Image: "present:1", Runtime: "runc"}, {Image: "missing:1", Runtime: "runc"}, {Runtime: "runsc"}}
	classes := map[sandboxClass]bool{}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		for _, c := range rt.Created() {
			classes[sandboxClass{Image: c.Image, Runtime: c.OCIRuntime}] = true
		}
		if !slices.ContainsFunc(want, func(c sandboxClass) bool { return !classes[c] }) || time.Now().After(deadline) {
			break
		}
	}
	for _, c := range want {
		if !classes[c] {
			t.Errorf("no pooled sandbox of class %+v (made: %v)", c, classes)
		}
	}

	for _, tc := range []struct {
		body, runtime string
		status        int
		msg           string
	}{
		{`{"language":"python","code":"x"}`, "runc", 200, ""},
		{`{"language":"python","code":"x","runtime":"runsc"}`, "runsc", 200, ""},
		{`{"language":"python","code":"x","runtime":"kata"}`, "", 400, "unknown runtime"},
		{`{"language":"strict","code":"x","runtime":"runc"}`, "", 403, "always runs on runsc"},
		{`{"language":"strict","code":"x"}`, "runsc", 200, ""},
		{`{"language":"imgpy","code":"x"}`, "runc", 200, ""},
	} {
		w, res, e := post(t, s, tc.body)
		if w.Code != tc.status || res.Runtime != tc.runtime || !strings.Contains(e.Message, tc.msg) {
			t.Errorf("%s: %d runtime %q %q, want %d %q %q", tc.body, w.Code, res.Runtime, e.Message, tc.status, tc.runtime, tc.msg)
		}
	}

	req := httptest.NewRequest("GET", "/v1/languages", nil)
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	var lr api.LanguagesResponse
	json.Unmarshal(w.Body.Bytes(), &lr)
	got := map[string]api.Language{}
	for _, l := range lr.Languages {
		got[l.Name] = l
	}
	if l := got["gone"]; !strings.Contains(l.Unavailable, "missing:1 is not in containerd") || !strings.Contains(l.Unavailable, "sandboxctl image import") {
		t.Errorf("missing image: unavailable %q", l.Unavailable)
	}
	if l := got["imgpy"]; l.Unavailable != "" || l.Image != "present:1" || l.Runtime != "runc" {
		t.Errorf("present image: %+v", l)
	}
	if l := got["strict"]; l.Runtime != "runsc" {
		t.Errorf("strict: %+v", l)
	}
}

// A refill yields to running programs: it goes ahead once none runs, or
// after its bound under steady load.
func TestRefillYieldsToPrograms(t *testing.T) {
	var a activity
	ctx := context.Background()
	done := func(d time.Duration) chan struct{} {
		c := make(chan struct{})
		go func() { a.yield(ctx, d); close(c) }()
		return c
	}
	select {
	case <-done(time.Hour):
	case <-time.After(5 * time.Second):
		t.Fatal("a refill waited with no program running")
	}
	a.begin()
	a.begin()
	waiting := done(time.Hour)
	a.end()
	select {
	case <-waiting:
		t.Fatal("a refill went ahead while a program ran")
	case <-time.After(20 * time.Millisecond):
	}
	a.end()
	select {
	case <-waiting:
	case <-time.After(5 * time.Second):
		t.Fatal("a refill still waited once no program ran")
	}
	a.begin()
	defer a.end()
	select {
	case <-done(10 * time.Millisecond):
	case <-time.After(5 * time.Second):
		t.Fatal("a refill waited past its bound")
	}
}

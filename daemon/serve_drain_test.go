package daemon

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
	"github.com/sandboxd/sandboxd/runtime/sandbox/sandboxtest"
)

// call sends a request to h as uid (root when 0), with a JSON body when
// body is not empty.
func call(h http.Handler, uid uint32, method, path, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req = req.WithContext(context.WithValue(req.Context(), callerKey{}, Caller{UID: uid, Known: true}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func decodeHealth(t *testing.T, w *httptest.ResponseRecorder) api.Health {
	t.Helper()
	var h api.Health
	if err := json.Unmarshal(w.Body.Bytes(), &h); err != nil {
		t.Fatalf("health %d %q: %v", w.Code, w.Body, err)
	}
	return h
}

// A drain refuses new executions and sessions with 503 and Retry-After,
// lets the running execution finish with its output, answers once it has,
// and keeps the daemon alive (health 200) but not ready.
func TestDrainWaitsForRunningExecution(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	rt := &sandboxtest.Runtime{Exec: func(_ context.Context, p sandbox.Process) (sandbox.ExitResult, error) {
		close(started)
		<-release
		p.Stdout.Write([]byte("finished"))
		return sandbox.ExitResult{}, nil
	}}
	s := newTestServer(t, rt, nil)
	running := make(chan *httptest.ResponseRecorder, 1)
	go func() { running <- call(s, 1000, "POST", "/v1/execute", `{"language":"python","code":"x"}`) }()
	<-started

	drained := make(chan *httptest.ResponseRecorder, 1)
	go func() { drained <- call(s, 0, "POST", "/v1/drain", "") }()
	waitUntilDraining(t, s)
	select {
	case w := <-drained:
		t.Fatalf("drain answered while an execution runs: %d %s", w.Code, w.Body)
	case <-time.After(100 * time.Millisecond):
	}

	for _, tc := range []struct{ path, body string }{
		{"/v1/execute", `{"language":"python","code":"y"}`},
		{"/v1/sessions", `{"language":"python"}`},
	} {
		w := call(s, 1000, "POST", tc.path, tc.body)
		var e api.Error
		json.Unmarshal(w.Body.Bytes(), &e)
		if w.Code != 503 || e.Code != api.CodeUnavailable || !strings.Contains(e.Message, "draining") || w.Header().Get("Retry-After") != "5" {
			t.Errorf("POST %s while draining: %d %s, Retry-After %q", tc.path, w.Code, w.Body, w.Header().Get("Retry-After"))
		}
	}
	if w := call(s, 1000, "GET", "/v1/health", ""); w.Code != 200 || !decodeHealth(t, w).Draining {
		t.Errorf("health while draining (the daemon is alive): %d %s", w.Code, w.Body)
	}
	if w := call(s, 1000, "GET", "/v1/health?ready=1", ""); w.Code != 503 || !decodeHealth(t, w).Draining {
		t.Errorf("readiness while draining: %d %s", w.Code, w.Body)
	}

	close(release)
	w := <-running
	var res api.ExecuteResult
	json.Unmarshal(w.Body.Bytes(), &res)
	if w.Code != 200 || res.Stdout != "finished" {
		t.Errorf("the execution under way: %d %s", w.Code, w.Body)
	}
	w = <-drained
	var dr api.DrainResult
	if err := json.Unmarshal(w.Body.Bytes(), &dr); w.Code != 200 || err != nil || !dr.Drained || dr.Running != 0 {
		t.Errorf("drain: %d %s", w.Code, w.Body)
	}
	metrics := call(s, 0, "GET", "/metrics", "").Body.String()
	for _, want := range []string{"sandboxd_draining 1", `sandboxd_request_errors_total{route="POST /v1/execute",status="503"} 1`,
		`sandboxd_request_errors_total{route="POST /v1/sessions",status="503"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func waitUntilDraining(t *testing.T, s *Server) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for draining, _ := s.drain.state(); !draining; draining, _ = s.drain.state() {
		if time.Now().After(deadline) {
			t.Fatal("the drain did not begin")
		}
		time.Sleep(time.Millisecond)
	}
}

// A drain's wait ends at its timeout: it says how many are still running.
// A drain with nothing running answers at once, and again when repeated.
func TestDrainTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	started := make(chan struct{})
	rt := &sandboxtest.Runtime{Exec: func(context.Context, sandbox.Process) (sandbox.ExitResult, error) {
		close(started)
		<-release
		return sandbox.ExitResult{}, nil
	}}
	s := newTestServer(t, rt, nil)
	go call(s, 1000, "POST", "/v1/execute", `{"language":"python","code":"x"}`)
	<-started
	begin := time.Now()
	w := call(s, 0, "POST", "/v1/drain?timeout=200ms", "")
	var dr api.DrainResult
	json.Unmarshal(w.Body.Bytes(), &dr)
	if w.Code != 200 || dr.Drained || dr.Running != 1 || time.Since(begin) < 200*time.Millisecond || dr.WaitedMS < 200 {
		t.Errorf("drain past its timeout: %d %s after %v", w.Code, w.Body, time.Since(begin))
	}

	idle := newTestServer(t, &sandboxtest.Runtime{}, nil)
	for range 2 {
		begin = time.Now()
		w = call(idle, 0, "POST", "/v1/drain", "")
		if w.Code != 200 || !strings.Contains(w.Body.String(), `"drained":true`) || time.Since(begin) > 5*time.Second {
			t.Errorf("drain of an idle daemon: %d %s after %v", w.Code, w.Body, time.Since(begin))
		}
	}
}

// Only root may drain; a bad timeout is the caller's error.
func TestDrainRefused(t *testing.T) {
	s := newTestServer(t, &sandboxtest.Runtime{}, nil)
	if w := call(s, 1000, "POST", "/v1/drain", ""); w.Code != 403 || !strings.Contains(w.Body.String(), "drain is for root") {
		t.Errorf("drain by uid 1000: %d %s", w.Code, w.Body)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("POST", "/v1/drain", nil)) // no peer credentials
	if w.Code != 403 {
		t.Errorf("drain by an unknown caller: %d %s", w.Code, w.Body)
	}
	for _, q := range []string{"timeout=soon", "timeout=-1s", "timeout=2h"} {
		if w := call(s, 0, "POST", "/v1/drain?"+q, ""); w.Code != 400 || !strings.Contains(w.Body.String(), "timeout=") {
			t.Errorf("drain?%s: %d %s", q, w.Code, w.Body)
		}
	}
	if w := call(s, 0, "GET", "/v1/drain", ""); w.Code != 405 {
		t.Errorf("GET /v1/drain: %d %s", w.Code, w.Body)
	}
	if draining, _ := s.drain.state(); draining {
		t.Error("a refused drain began draining")
	}
	if w := call(s, 1000, "POST", "/v1/execute", `{"language":"python","code":"x"}`); w.Code != 200 {
		t.Errorf("execute after refused drains: %d %s", w.Code, w.Body)
	}
}

// Readiness waits for the pool of the host's runtimes to fill, but not for
// the pool of an image that is not in containerd; plain health does not
// wait for either.
func TestHealthReadyWaitsForThePool(t *testing.T) {
	gate, never := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(never) })
	rt := &sandboxtest.Runtime{Creating: func(cfg sandbox.Config) {
		switch {
		case cfg.Image == "missing:1":
			<-never // as an image never pulled
		case cfg.Kind == sandbox.KindPool:
			<-gate
		}
	}}
	langs := append(testLanguages[:1:1], Language{LanguageSpec: LanguageSpec{Name: "img", FileName: "m", Run: []string{"m"}, Image: "missing:1"}})
	s := New(Config{Runtime: fakeRuntime{rt}, Languages: langs, Limits: func() Limits {
		l := DefaultLimits(2)
		l.CellReuse, l.PoolSize = 1, 2
		return l
	}(), Version: "test", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})

	if w := call(s, 1000, "GET", "/v1/health", ""); w.Code != 200 || decodeHealth(t, w).Pool != "" {
		t.Errorf("health before start: %d %s", w.Code, w.Body)
	}
	if w := call(s, 1000, "GET", "/v1/health?ready=1", ""); w.Code != 503 || decodeHealth(t, w).Pool != "not started" {
		t.Errorf("readiness before start: %d %s", w.Code, w.Body)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Start(ctx)
	if w := call(s, 1000, "GET", "/v1/health?ready=true", ""); w.Code != 503 || !strings.HasPrefix(decodeHealth(t, w).Pool, "warming: 0 of 4") {
		t.Errorf("readiness while the pools fill: %d %s", w.Code, w.Body)
	}
	close(gate)
	deadline := time.Now().Add(10 * time.Second)
	for {
		w := call(s, 1000, "GET", "/v1/health?ready=1", "")
		if w.Code == 200 {
			if h := decodeHealth(t, w); h.Status != "ok" || h.Pool != "warm" {
				t.Errorf("ready: %s", w.Body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready once the host's pool is full: %d %s", w.Code, w.Body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, q := range []string{"ready=yes", "ready=2"} {
		if w := call(s, 1000, "GET", "/v1/health?"+q, ""); w.Code != 400 {
			t.Errorf("health?%s: %d %s", q, w.Code, w.Body)
		}
	}
	if w := call(s, 1000, "GET", "/v1/health?ready=0", ""); w.Code != 200 || decodeHealth(t, w).Pool != "" {
		t.Errorf("health?ready=0 is plain health: %d %s", w.Code, w.Body)
	}
}

package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
	"github.com/sandboxd/sandboxd/runtime/sandbox/sandboxtest"
)

func newBodyServer(t *testing.T, rt *sandboxtest.Runtime, budget int64, mod func(*Limits)) *Server {
	t.Helper()
	lim := DefaultLimits(2)
	lim.CellReuse = 1 // cells have tests of their own (cells_test.go)
	lim.PoolSize = 0
	if mod != nil {
		mod(&lim)
	}
	return New(Config{Runtime: fakeRuntime{rt}, Languages: testLanguages, Limits: lim, BodyBudget: budget, Version: "test",
		Logger: slog.New(slog.DiscardHandler)})
}

// counter reads a counter of the server's metrics.
func counter(t *testing.T, s *Server, name, reason string) float64 {
	t.Helper()
	mfs, err := s.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{reason=%q}", name, reason)
	return 0
}

// unreadable fails the test if the body is read.
type unreadable struct{ t *testing.T }

func (u unreadable) Read([]byte) (int, error) {
	u.t.Error("the body was read")
	return 0, io.ErrUnexpectedEOF
}

// A Content-Length over the cap is refused before a byte is read.
func TestBodyOverContentLengthNotRead(t *testing.T) {
	rt := &sandboxtest.Runtime{}
	s := newSessionServer(t, rt)
	sess := createAs(t, s, 1000, `{"language":"python"}`)
	for _, tc := range []struct {
		method, path string
		limit        int64
	}{
		{"POST", "/v1/execute", s.limits().MaxBodyBytes()},
		{"POST", "/v1/sessions", maxEnvBytes*6 + 64<<10},
		{"PUT", "/v1/sessions/" + sess.ID + "/files/big.bin", s.limits().MaxFileBytes},
	} {
		req := httptest.NewRequest(tc.method, tc.path, unreadable{t})
		req.ContentLength = tc.limit + 1
		req.Header.Set("Content-Type", "application/json")
		req = req.WithContext(context.WithValue(req.Context(), callerKey{}, Caller{UID: 1000, Known: true}))
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		var e api.Error
		json.Unmarshal(w.Body.Bytes(), &e)
		if w.Code != http.StatusRequestEntityTooLarge || e.Code != api.CodeInvalidArgument ||
			e.Message != fmt.Sprintf("request body is larger than %d bytes", tc.limit) || w.Header().Get("Connection") != "close" {
			t.Errorf("%s %s: %d %v %s", tc.method, tc.path, w.Code, w.Header(), w.Body)
		}
	}
	if n := counter(t, s, "sandboxd_request_bodies_refused_total", "too_large"); n != 3 {
		t.Errorf("%v bodies counted as too large, want 3", n)
	}
	if s.bodies.held.Load() != 0 {
		t.Errorf("%d bytes of the budget held after the refusals", s.bodies.held.Load())
	}
}

// zeros is an endless body.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// A client still sending a refused body reads its answer, even one that
// asked for the connection to be closed after it: net/http closes such a
// connection at once, and the listener closes it gracefully.
func TestBodyRefusedWhileSending(t *testing.T) {
	s := newBodyServer(t, &sandboxtest.Runtime{}, 0, nil)
	path := serveUnix(t, s)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	for i := range 5 {
		req, _ := http.NewRequest("POST", "http://sandboxd/v1/execute", io.LimitReader(zeros{}, s.limits().MaxBodyBytes()+1))
		req.ContentLength = s.limits().MaxBodyBytes() + 1
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("request %d: %d %s", i, resp.StatusCode, b)
		}
	}
}

// A body of unknown length is cut at the cap, and holds no budget after.
func TestBodyChunkedOverCap(t *testing.T) {
	s := newBodyServer(t, &sandboxtest.Runtime{}, 0, nil)
	body := `{"language":"python","code":"` + strings.Repeat("x", int(s.limits().MaxBodyBytes())) + `"}`
	req := httptest.NewRequest("POST", "/v1/execute", io.MultiReader(strings.NewReader(body)))
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	if w.Code != http.StatusRequestEntityTooLarge || !strings.Contains(w.Body.String(), "larger than") {
		t.Errorf("%d %s", w.Code, w.Body)
	}
	if s.bodies.held.Load() != 0 {
		t.Errorf("%d bytes of the budget held after the refusal", s.bodies.held.Load())
	}
}

// Bodies wait for room in the budget, in order, a bounded time; then 429.
func TestBodyBudget(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 4)
	rt := &sandboxtest.Runtime{Exec: func(context.Context, sandbox.Process) (sandbox.ExitResult, error) {
		started <- struct{}{}
		<-release
		return sandbox.ExitResult{}, nil
	}}
	s := newBodyServer(t, rt, 1000, func(l *Limits) { l.BodyWait = 300 * time.Millisecond })
	body := `{"language":"python","code":"` + strings.Repeat("x", 560) + `"}` // 600 bytes
	first := make(chan int)
	go func() {
		w, _, _ := post(t, s, body)
		first <- w.Code
	}()
	<-started
	if held := s.bodies.held.Load(); held != int64(len(body)) {
		t.Errorf("%d bytes held while the first request runs, want %d", held, len(body))
	}

	start := time.Now()
	w, _, e := post(t, s, body)
	if d := time.Since(start); w.Code != http.StatusTooManyRequests || e.Code != api.CodeResourceExhausted ||
		!strings.Contains(e.Message, "max_body_memory") || d < 300*time.Millisecond || d > 2*time.Second {
		t.Errorf("a body with no room: %d %+v after %v, want 429 after 300ms", w.Code, e, d)
	}
	if n := counter(t, s, "sandboxd_request_bodies_refused_total", "budget"); n != 1 {
		t.Errorf("%v bodies counted as refused for the budget, want 1", n)
	}

	// One that gets room within its wait is served.
	third := make(chan int)
	go func() {
		w, _, _ := post(t, s, body)
		third <- w.Code
	}()
	time.Sleep(100 * time.Millisecond)
	close(release)
	if c := <-first; c != 200 {
		t.Errorf("first: %d", c)
	}
	if c := <-third; c != 200 {
		t.Errorf("a body that got room in time: %d", c)
	}
	if s.bodies.held.Load() != 0 {
		t.Errorf("%d bytes held once every request is answered", s.bodies.held.Load())
	}

	// A body larger than the whole budget waits for all of it.
	w, _, e = post(t, s, `{"language":"python","code":"`+strings.Repeat("x", 2000)+`"}`)
	if w.Code != 200 || s.bodies.held.Load() != 0 {
		t.Errorf("a body over the budget: %d %+v, %d held", w.Code, e, s.bodies.held.Load())
	}
}

// serveUnix serves s on a Unix socket as sandboxd does, and returns its path.
func serveUnix(t *testing.T, s *Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: s, ConnContext: ConnContext, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(s.LimitConns(ln, DefaultConnLimits()))
	t.Cleanup(func() { hs.Close() })
	return path
}

// A body not sent in time gets 408 and its connection closed; one sent in
// time keeps its connection however long its handler runs.
func TestBodyDeadline(t *testing.T) {
	rt := &sandboxtest.Runtime{Exec: func(context.Context, sandbox.Process) (sandbox.ExitResult, error) {
		time.Sleep(600 * time.Millisecond)
		return sandbox.ExitResult{}, nil
	}}
	s := newBodyServer(t, rt, 0, func(l *Limits) { l.BodyTimeout = 300 * time.Millisecond })
	path := serveUnix(t, s)

	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	fmt.Fprint(c, "POST /v1/execute HTTP/1.1\r\nHost: sandboxd\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"language\":")
	go func() {
		// Slowly, as a hostile client would: each byte within the
		// deadline, the whole body not.
		for range 20 {
			time.Sleep(100 * time.Millisecond)
			if _, err := c.Write([]byte(" ")); err != nil {
				return
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to a slow body: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	var e api.Error
	json.Unmarshal(b, &e)
	if d := time.Since(start); resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(e.Message, "body_timeout") ||
		d < 300*time.Millisecond || d > 2*time.Second {
		t.Errorf("a slow body: %d %s after %v, want 408 after 300ms", resp.StatusCode, b, d)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("the connection of a slow body stays open: %v", err)
	}
	if n := counter(t, s, "sandboxd_request_bodies_refused_total", "timeout"); n != 1 {
		t.Errorf("%v bodies counted as timed out, want 1", n)
	}

	// The execution takes twice the body's deadline, on a connection
	// kept alive for a second request.
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	for i := range 2 {
		resp, err := client.Post("http://sandboxd/v1/execute", "application/json", strings.NewReader(`{"language":"python","code":"x"}`))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("request %d outlasting the body's deadline: %d %s", i, resp.StatusCode, b)
		}
	}
}

func TestDecodeStrict(t *testing.T) {
	for body, want := range map[string]string{
		`{"language":"python","code":"x"}`:                                     "",
		`{"Language":"python","CODE":"x"}`:                                     "", // as encoding/json matches keys
		"{\"language\":\"python\"}\n\t ":                                       "",
		`{"language":"python","extra":1}`:                                      `unknown field "extra"`,
		`{"language":"python","files":[{"path":"a","content":"b","bogus":1}]}`: `unknown field "bogus"`,
		`{"language":"python"}x`:                                               "data after the JSON object",
		`{"language":"python"} {}`:                                             "data after the JSON object",
		`{"language":python}`:                                                  "invalid character",
		`{"language":1}`:                                                       "cannot unmarshal number",
		``:                                                                     "empty",
	} {
		var req api.ExecuteRequest
		err := decodeStrict([]byte(body), &req)
		switch {
		case want == "" && err != nil:
			t.Errorf("%q: %v", body, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want) || apiError(err).Code != api.CodeInvalidArgument):
			t.Errorf("%q: %v, want %q", body, err, want)
		}
	}
	var req api.CreateSessionRequest
	if err := decodeStrict([]byte(`{"language":"python","env":{"A":"1"},"nope":{}}`), &req); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("create session with an unknown field: %v", err)
	}
}

// A submitted file is held once: decoded, its text leaves the request.
func TestFilesDecodedOnce(t *testing.T) {
	s := newBodyServer(t, &sandboxtest.Runtime{}, 0, nil)
	req := api.ExecuteRequest{Language: "python", Code: "x", Files: []api.File{
		{Path: "a.txt", Content: "text"},
		{Path: "b.bin", Content: "AAEC", Encoding: api.EncodingBase64},
	}}
	c, err := s.validate(&req, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.files) != 2 || string(c.files[0].Data) != "text" || string(c.files[1].Data) != "\x00\x01\x02" {
		t.Errorf("decoded files: %+v", c.files)
	}
	for _, f := range req.Files {
		if f.Content != "" {
			t.Errorf("file %s still holds its text after decoding", f.Path)
		}
	}
}

// While a large body is decoded, the collector keeps the heap within a
// tenth of what is live; with two at once, until both are decoded. A pace
// set tighter, or off, is left as it is.
func TestTightenGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	first := tightenGC()
	if p := gcPercent(); p != tightGCPercent {
		t.Errorf("pace %d while a body is decoded, want %d", p, tightGCPercent)
	}
	second := tightenGC()
	first()
	first() // once only
	if p := gcPercent(); p != tightGCPercent {
		t.Errorf("pace %d while a second body is decoded, want %d", p, tightGCPercent)
	}
	second()
	if p := gcPercent(); p != 100 {
		t.Errorf("pace %d once no body is decoded, want 100 back", p)
	}
	for _, pace := range []int{-1, tightGCPercent / 2} {
		debug.SetGCPercent(pace)
		restore := tightenGC()
		if p := gcPercent(); p != pace {
			t.Errorf("GOGC=%d: pace %d while a body is decoded, want it left", pace, p)
		}
		restore()
		if p := gcPercent(); p != pace {
			t.Errorf("GOGC=%d: pace %d after, want it left", pace, p)
		}
	}
}

// paceProbe notes the collector's pace while it is decoded.
type paceProbe struct{ pace int }

func (p *paceProbe) UnmarshalJSON([]byte) error {
	p.pace = gcPercent()
	return nil
}

// A large body is decoded at the tight pace, a small one at the daemon's;
// the daemon's pace is back once the body is decoded.
func TestLargeBodyDecodedAtTightPace(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	s := newBodyServer(t, &sandboxtest.Runtime{}, 0, nil)
	for size, want := range map[int]int{largeBody: tightGCPercent, 1 << 10: 100} {
		body := `"` + strings.Repeat("x", size) + `"`
		r := httptest.NewRequest("POST", "/v1/execute", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		var probe paceProbe
		release, err := s.readJSON(httptest.NewRecorder(), r, int64(len(body)), &probe)
		if err != nil {
			t.Fatalf("a body of %d bytes: %v", len(body), err)
		}
		release()
		if probe.pace != want {
			t.Errorf("a body of %d bytes decoded at pace %d, want %d", len(body), probe.pace, want)
		}
		if p := gcPercent(); p != 100 {
			t.Errorf("pace %d after a body of %d bytes, want 100 back", p, len(body))
		}
	}
}

package daemon

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
	"github.com/sandboxd/sandboxd/runtime/sandbox/sandboxtest"
)

func newSessionServer(t *testing.T, rt *sandboxtest.Runtime) *Server {
	lim := DefaultLimits(2)
	lim.CellReuse = 1 // cells have tests of their own (cells_test.go)
	lim.MaxSessions, lim.MaxSessionsPerUser = 3, 2
	lim.PoolSize = 0
	return New(Config{Runtime: fakeRuntime{rt}, Languages: testLanguages, Limits: lim, Version: "test",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

// as sends a request as uid.
func as(s *Server, uid uint32, method, path, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req = req.WithContext(context.WithValue(req.Context(), callerKey{}, Caller{UID: uid, Known: true}))
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	return w
}

func createAs(t *testing.T, s *Server, uid uint32, body string) api.Session {
	t.Helper()
	w := as(s, uid, "POST", "/v1/sessions", body)
	var sess api.Session
	if w.Code != 201 || json.Unmarshal(w.Body.Bytes(), &sess) != nil {
		t.Fatalf("create as %d: %d %s", uid, w.Code, w.Body)
	}
	return sess
}

func TestSessionOwnership(t *testing.T) {
	s := newSessionServer(t, &sandboxtest.Runtime{})
	mine := createAs(t, s, 1000, `{"language":"py"}`)
	if mine.Language != "python" || mine.OwnerUID != 1000 || mine.State != api.SessionRunning || !sessionIDRE.MatchString(mine.ID) {
		t.Fatalf("session %+v", mine)
	}
	for _, tc := range []struct {
		uid    uint32
		method string
		path   string
		status int
	}{
		{1001, "GET", "/v1/sessions/" + mine.ID, 404},
		{1001, "DELETE", "/v1/sessions/" + mine.ID, 404},
		{1001, "GET", "/v1/sessions/" + mine.ID + "/files/", 404},
		{1000, "GET", "/v1/sessions/" + mine.ID, 200},
		{0, "GET", "/v1/sessions/" + mine.ID, 200},
		{1000, "GET", "/v1/sessions/not-an-id", 400},
		{1000, "GET", "/v1/sessions/" + strings.ToUpper(mine.ID), 400},
	} {
		if w := as(s, tc.uid, tc.method, tc.path, ""); w.Code != tc.status {
			t.Errorf("uid %d %s %s: %d, want %d", tc.uid, tc.method, tc.path, w.Code, tc.status)
		}
	}
	w := as(s, 1001, "POST", "/v1/execute", `{"session_id":"`+mine.ID+`","code":"1"}`)
	if w.Code != 404 {
		t.Errorf("execute in another's session: %d", w.Code)
	}
	var list api.SessionsResponse
	json.Unmarshal(as(s, 1001, "GET", "/v1/sessions", "").Body.Bytes(), &list)
	if len(list.Sessions) != 0 {
		t.Errorf("uid 1001 lists %v", list.Sessions)
	}
	json.Unmarshal(as(s, 0, "GET", "/v1/sessions", "").Body.Bytes(), &list)
	if len(list.Sessions) != 1 {
		t.Errorf("root lists %v", list.Sessions)
	}
	if w := as(s, 1000, "DELETE", "/v1/sessions/"+mine.ID, ""); w.Code != http.StatusNoContent {
		t.Errorf("delete: %d", w.Code)
	}
	if w := as(s, 1000, "GET", "/v1/sessions/"+mine.ID, ""); w.Code != 404 {
		t.Errorf("after delete: %d", w.Code)
	}
}

func TestSessionCaps(t *testing.T) {
	s := newSessionServer(t, &sandboxtest.Runtime{})
	createAs(t, s, 1, `{"language":"py"}`)
	createAs(t, s, 1, `{"language":"py"}`)
	if w := as(s, 1, "POST", "/v1/sessions", `{"language":"py"}`); w.Code != 429 {
		t.Errorf("third of uid 1: %d", w.Code)
	}
	createAs(t, s, 2, `{"language":"py"}`)
	if w := as(s, 3, "POST", "/v1/sessions", `{"language":"py"}`); w.Code != 429 {
		t.Errorf("fourth in all: %d", w.Code)
	}
	for _, body := range []string{`{"language":"cobol"}`, `{"language":"py","idle_timeout_ms":-1}`,
		`{"language":"py","max_lifetime_ms":999999999999}`, `{"language":"py","memory_bytes":1}`, `{"language":"py","env":{"=":"x"}}`} {
		if w := as(s, 9, "POST", "/v1/sessions", body); w.Code != 400 {
			t.Errorf("%s: %d", body, w.Code)
		}
	}
}

func TestSessionAdoptionAndExpiry(t *testing.T) {
	rt := &sandboxtest.Runtime{}
	s := newSessionServer(t, rt)
	kept := createAs(t, s, 5, `{"language":"c"}`)
	short := createAs(t, s, 5, `{"language":"py","idle_timeout_ms":10}`)
	if w := as(s, 5, "POST", "/v1/execute", `{"session_id":"`+kept.ID+`","code":"x"}`); w.Code != 200 {
		t.Fatalf("execute: %d %s", w.Code, w.Body)
	}
	time.Sleep(20 * time.Millisecond)

	// A new daemon on the same runtime: the records bring the session back.
	s2 := newSessionServer(t, rt)
	if err := s2.AdoptSessions(context.Background()); err != nil {
		t.Fatal(err)
	}
	w := as(s2, 5, "GET", "/v1/sessions/"+kept.ID, "")
	var got api.Session
	json.Unmarshal(w.Body.Bytes(), &got)
	if w.Code != 200 || got.Language != "c" || got.Executions != 1 || got.CreatedAt != kept.CreatedAt || got.OwnerUID != 5 {
		t.Fatalf("adopted: %d %+v", w.Code, got)
	}
	if w := as(s2, 5, "GET", "/v1/sessions/"+short.ID, ""); w.Code != 404 {
		t.Errorf("expired session after adoption: %d", w.Code)
	}
	if !rt.Sandbox("ses-" + short.ID).Deleted() {
		t.Error("the expired session's sandbox was not deleted")
	}
}

func TestFilePaths(t *testing.T) {
	for _, p := range []string{"", "/etc/passwd", "..", "../x", "a/../../x", "a\x00b", strings.Repeat("a", 5000)} {
		if _, err := checkFilePath(p); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
	for in, want := range map[string]string{"a": "a", "a/b/../c": "a/c", "./x": "x"} {
		if got, err := checkFilePath(in); err != nil || got != want {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
}

func TestAccess(t *testing.T) {
	open := Access{}
	list := Access{UIDs: []uint32{1000}, GIDs: []uint32{50}}
	for _, tc := range []struct {
		a    Access
		c    Caller
		want bool
	}{
		{open, Caller{UID: 5, Known: true}, true},
		{open, Caller{}, true},
		{list, Caller{UID: 1000, Known: true}, true},
		{list, Caller{UID: 0, Known: true}, true},
		{list, Caller{UID: 7, GID: 50, Known: true}, true},
		{list, Caller{UID: 7, GID: 7, PID: -1, Known: true}, false},
		{list, Caller{}, false},
	} {
		if got := tc.a.allows(tc.c); got != tc.want {
			t.Errorf("%+v allows %+v: %v", tc.a, tc.c, got)
		}
	}
	s := newSessionServer(t, &sandboxtest.Runtime{})
	s.Reload(s.limits(), s.languages(), list)
	if w := as(s, 7, "GET", "/v1/info", ""); w.Code != 403 {
		t.Errorf("uid 7 after reload: %d", w.Code)
	}
	if w := as(s, 1000, "GET", "/v1/info", ""); w.Code != 200 {
		t.Errorf("uid 1000 after reload: %d", w.Code)
	}
}

// TestSessionTimeoutWhileWaiting: the timeout of a session execution also
// runs while it waits for a slot, and ends as a timed-out result.
func TestSessionTimeoutWhileWaiting(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	rt := &sandboxtest.Runtime{}
	s := newSessionServer(t, rt)
	s.Reload(func() Limits { l := s.limits(); l.MaxConcurrent = 1; return l }(), s.languages(), Access{})
	sess := createAs(t, s, 1, `{"language":"py"}`)
	// The only slot goes to an execution that waits.
	rt.Sandbox("ses-" + sess.ID).SetExec(func(context.Context, sandbox.Process) (sandbox.ExitResult, error) {
		<-release
		return sandbox.ExitResult{}, nil
	})
	other := createAs(t, s, 1, `{"language":"py"}`)
	go as(s, 1, "POST", "/v1/execute", `{"session_id":"`+sess.ID+`","code":"x"}`)
	deadline := time.Now().Add(5 * time.Second)
	for r, _ := s.slots.counts(); r == 0; r, _ = s.slots.counts() {
		if time.Now().After(deadline) {
			t.Fatal("the first execution never ran")
		}
		time.Sleep(time.Millisecond)
	}
	w := as(s, 1, "POST", "/v1/execute", `{"session_id":"`+other.ID+`","code":"x","timeout_ms":50}`)
	var res api.ExecuteResult
	json.Unmarshal(w.Body.Bytes(), &res)
	if w.Code != 200 || res.Status != api.StatusTimedOut || !res.TimedOut {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
}

// Executions in one session run one at a time: a second one waits for the
// first, and its timeout runs while it waits.
func TestSessionExecutionsSerialize(t *testing.T) {
	release := make(chan struct{})
	rt := &sandboxtest.Runtime{}
	s := newSessionServer(t, rt)
	sess := createAs(t, s, 1, `{"language":"py"}`)
	var mu sync.Mutex
	running, most := 0, 0
	rt.Sandbox("ses-" + sess.ID).SetExec(func(ctx context.Context, _ sandbox.Process) (sandbox.ExitResult, error) {
		mu.Lock()
		running++
		most = max(most, running)
		mu.Unlock()
		defer func() { mu.Lock(); running--; mu.Unlock() }()
		select {
		case <-release:
			return sandbox.ExitResult{}, nil
		case <-ctx.Done():
			return sandbox.ExitResult{Killed: true}, nil
		}
	})
	first := make(chan *httptest.ResponseRecorder, 1)
	go func() { first <- as(s, 1, "POST", "/v1/execute", `{"session_id":"`+sess.ID+`","code":"x"}`) }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		mu.Lock()
		r := running
		mu.Unlock()
		if r == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first execution never ran")
		}
	}
	w := as(s, 1, "POST", "/v1/execute", `{"session_id":"`+sess.ID+`","code":"x","timeout_ms":100}`)
	var res api.ExecuteResult
	json.Unmarshal(w.Body.Bytes(), &res)
	if w.Code != 200 || res.Status != api.StatusTimedOut {
		t.Errorf("the second execution: %d %s", w.Code, w.Body)
	}
	close(release)
	if w := <-first; w.Code != 200 {
		t.Errorf("the first execution: %d %s", w.Code, w.Body)
	}
	if most != 1 {
		t.Errorf("%d executions ran at once in one session", most)
	}
}

// Live stdin is fed only by the execution's owner, or root: another uid
// finds no such execution.
func TestLiveStdinOnlyFromItsOwner(t *testing.T) {
	s := newSessionServer(t, &sandboxtest.Runtime{})
	for _, tc := range []struct {
		uid  uint32
		want int
	}{{2000, 404}, {1000, 200}, {0, 200}} {
		l := s.openStdin("x1", 1000)
		got := make(chan []byte, 1)
		go func() { b, _ := io.ReadAll(l.r); got <- b }()
		w := as(s, tc.uid, "POST", "/v1/executions/x1/stdin", "input")
		if w.Code != tc.want {
			t.Errorf("uid %d: %d %s, want %d", tc.uid, w.Code, w.Body, tc.want)
		}
		s.closeStdin("x1", l)
		if b := <-got; (tc.want == 200) != (string(b) == "input") {
			t.Errorf("uid %d: the program read %q", tc.uid, b)
		}
	}
}

// A burst of executions in a session writes its record once or twice, not
// once each (a write is a containerd request and a commit); the last use
// is in the record once the daemon closes, for the next one to adopt.
func TestSessionRecordWritesCoalesce(t *testing.T) {
	rt := &sandboxtest.Runtime{}
	s := newSessionServer(t, rt)
	sess := createAs(t, s, 5, `{"language":"py"}`)
	before := rt.RecordWrites()
	for range 20 {
		if w := as(s, 5, "POST", "/v1/execute", `{"session_id":"`+sess.ID+`","code":"x"}`); w.Code != 200 {
			t.Fatalf("execute: %d %s", w.Code, w.Body)
		}
	}
	s.Close(context.Background())
	s.Wait()
	if n := rt.RecordWrites() - before; n < 1 || n > 3 {
		t.Errorf("20 executions in a burst wrote the record %d times", n)
	}
	s2 := newSessionServer(t, rt)
	if err := s2.AdoptSessions(context.Background()); err != nil {
		t.Fatal(err)
	}
	var got api.Session
	w := as(s2, 5, "GET", "/v1/sessions/"+sess.ID, "")
	if json.Unmarshal(w.Body.Bytes(), &got); w.Code != 200 || got.Executions != 20 {
		t.Fatalf("adopted after the burst: %d %+v", w.Code, got)
	}
}

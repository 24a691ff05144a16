package ctl_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/ctl"
	"github.com/sandboxd/sandboxd/daemon/api"
)

// pngBytes stand for a figure: what matters is that they come back
// decoded, byte for byte.
var pngBytes = []byte("\x89PNG\r\n\x1a\nnot really a png")

// fakeInterpreter is a daemon whose interpreter sessions run cells of a
// fake python: it knows a few cells by their code, and records what it
// was asked.
type fakeInterpreter struct {
	sock string

	mu       sync.Mutex
	sessions map[string]*api.Session
	created  []api.CreateSessionRequest
	cells    []string
	deleted  []string
	defined  bool // double is defined
	// old makes it a daemon that predates interpreter sessions: it
	// ignores the field.
	old       bool
	executing chan struct{}
	// interrupted gets a value when a client leaves a cell while it runs.
	interrupted chan string
}

func startFakeInterpreter(t *testing.T) *fakeInterpreter {
	t.Helper()
	f := &fakeInterpreter{sock: filepath.Join(t.TempDir(), "s.sock"), sessions: map[string]*api.Session{},
		executing: make(chan struct{}, 1), interrupted: make(chan string, 10)}
	ln, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/languages", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.LanguagesResponse{Languages: []api.Language{
			{Name: "python", Aliases: []string{"py"}, Version: "3.11.2"},
			{Name: "javascript", Aliases: []string{"js", "node"}, Version: "v20.19.2"}}})
	})
	mux.HandleFunc("POST /v1/sessions", f.createSession)
	mux.HandleFunc("GET /v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		if s := f.session(w, r); s != nil {
			json.NewEncoder(w).Encode(s)
		}
	})
	mux.HandleFunc("DELETE /v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		if s := f.session(w, r); s != nil {
			f.mu.Lock()
			delete(f.sessions, s.ID)
			f.deleted = append(f.deleted, s.ID)
			f.mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		}
	})
	mux.HandleFunc("POST /v1/sessions/{id}/restart", func(w http.ResponseWriter, r *http.Request) {
		s := f.session(w, r)
		if s == nil {
			return
		}
		f.mu.Lock()
		s.Interpreter.Restarts++
		s.Interpreter.State = api.InterpreterFresh
		f.defined = false
		f.mu.Unlock()
		json.NewEncoder(w).Encode(s)
	})
	mux.HandleFunc("POST /v1/execute", f.execute)
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return f
}

func (f *fakeInterpreter) createSession(w http.ResponseWriter, r *http.Request) {
	var req api.CreateSessionRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created = append(f.created, req)
	s := &api.Session{ID: fmt.Sprintf("%032x", len(f.created)), Language: req.Language, State: api.SessionRunning}
	if s.Language == "py" {
		s.Language = "python"
	}
	if req.Interpreter && !f.old {
		s.Interpreter = &api.Interpreter{State: api.InterpreterFresh}
	}
	f.sessions[s.ID] = s
	json.NewEncoder(w).Encode(s)
}

// session is the session the request names, or nil after a 404.
func (f *fakeInterpreter) session(w http.ResponseWriter, r *http.Request) *api.Session {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sessions[r.PathValue("id")]
	if s == nil {
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(api.Errorf(api.CodeNotFound, "session %q: not found", r.PathValue("id")))
	}
	return s
}

// cell is what the fake interpreter makes of code: output, then a result.
func (f *fakeInterpreter) cell(code string) (stdout string, res api.ExecuteResult) {
	res.Status = api.StatusOK
	switch strings.TrimSpace(code) {
	case "def double(x):\n    return x * 2":
		f.defined = true
	case "double(21)":
		if f.defined {
			res.Value = "42"
		} else {
			res.Status, res.ExitCode = api.StatusFailed, 1
			res.Error = &api.CellError{Name: "NameError", Message: "name 'double' is not defined"}
		}
	case "1+1":
		res.Value = "2"
	case "print('no newline', end=''); 7":
		stdout, res.Value = "no newline", "7"
	case "1/0":
		res.Status, res.ExitCode = api.StatusFailed, 1
		res.Error = &api.CellError{Name: "ZeroDivisionError", Message: "division by zero",
			Traceback: "Traceback (most recent call last):\n  File \"<cell>\", line 1, in <module>\nZeroDivisionError: division by zero\n"}
	case "raise KeyError":
		// No traceback: the name and message are shown.
		res.Status = api.StatusFailed
		res.Error = &api.CellError{Name: "KeyError", Message: "'k'"}
	case "lost()":
		res.StateLost, res.Value = true, "1"
	case "plot()":
		res.Outputs = []api.Output{
			{MIME: "image/png", Data: base64.StdEncoding.EncodeToString(pngBytes)},
			{MIME: "image/svg+xml", Data: "<svg/>"},
			{MIME: "text/html", Data: "<b>hi</b>"},
			{MIME: "text/plain", Data: "plain text"},
		}
	case "loop()":
		res.Status, res.TimedOut, res.ExitCode = api.StatusTimedOut, true, 1
		res.Error = &api.CellError{Name: "KeyboardInterrupt", Message: ""}
	}
	return stdout, res
}

func (f *fakeInterpreter) execute(w http.ResponseWriter, r *http.Request) {
	var req api.ExecuteRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.cells = append(f.cells, req.Code)
	n := len(f.cells)
	s := f.sessions[req.SessionID]
	f.mu.Unlock()
	if s == nil {
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(api.Errorf(api.CodeNotFound, "session %q: not found", req.SessionID))
		return
	}
	id := fmt.Sprintf("e%031x", n)
	f.mu.Lock()
	stdout, res := f.cell(req.Code)
	s.Interpreter.State = api.InterpreterKept
	f.mu.Unlock()
	res.ID, res.SessionID, res.Language, res.Stdout = id, s.ID, s.Language, stdout
	if r.Header.Get("Accept") != api.NDJSON {
		json.NewEncoder(w).Encode(res)
		return
	}
	w.Header().Set("Content-Type", api.NDJSON)
	enc := json.NewEncoder(w)
	enc.Encode(api.StreamEvent{Type: api.EventStart, ID: id, SessionID: s.ID})
	if strings.TrimSpace(req.Code) == "slow()" {
		// Output, then a cell that runs until the client leaves.
		enc.Encode(api.StreamEvent{Type: api.EventStdout, Data: "working\n"})
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			f.interrupted <- req.Code
		case <-time.After(time.Minute):
		}
		return
	}
	if stdout != "" {
		enc.Encode(api.StreamEvent{Type: api.EventStdout, Data: stdout})
	}
	enc.Encode(api.ResultEvent{Type: api.EventResult, ExecuteResult: res})
}

func (f *fakeInterpreter) recorded() (cells, deleted []string, created []api.CreateSessionRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cells...), append([]string(nil), f.deleted...), append([]api.CreateSessionRequest(nil), f.created...)
}

// hasLine reports whether text has line, its spaces aside (a table's
// padding).
func hasLine(text, line string) bool {
	for l := range strings.Lines(text) {
		if strings.Join(strings.Fields(l), " ") == line {
			return true
		}
	}
	return false
}

// TestInterpreterSession creates an interpreter session, shows and
// restarts its interpreter.
func TestInterpreterSession(t *testing.T) {
	f := startFakeInterpreter(t)
	id, errOut, code := run(t, f.sock, "", "session", "create", "-l", "python", "--interpreter")
	id = strings.TrimSpace(id)
	if code != 0 || id == "" {
		t.Fatalf("create: exit %d %s", code, errOut)
	}
	if _, _, created := f.recorded(); !created[0].Interpreter || created[0].Language != "python" {
		t.Errorf("created %+v", created)
	}
	run(t, f.sock, "", "execute", "--session", id, "-c", "1+1")
	out, errOut, code := run(t, f.sock, "", "session", "show", id)
	if code != 0 || !hasLine(out, "interpreter: kept, 0 restarts") {
		t.Errorf("show: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := run(t, f.sock, "", "session", "restart", id); code != 0 || out != "" || errOut != "" {
		t.Errorf("restart: exit %d %q %q", code, out, errOut)
	}
	out, _, _ = run(t, f.sock, "", "session", "show", id)
	if !hasLine(out, "interpreter: fresh, 1 restarts") {
		t.Errorf("show after restart:\n%s", out)
	}
	out, _, code = run(t, f.sock, "", "-o", "json", "session", "restart", id)
	var s api.Session
	if err := json.Unmarshal([]byte(out), &s); err != nil || code != 0 || s.Interpreter == nil || s.Interpreter.Restarts != 2 {
		t.Errorf("restart -o json: exit %d %q", code, out)
	}
	if _, errOut, code := run(t, f.sock, "", "session", "restart", strings.Repeat("0", 32)); code != 1 || !strings.Contains(errOut, "not found") {
		t.Errorf("restart of no session: exit %d %q", code, errOut)
	}
	if _, _, code := run(t, f.sock, "", "session", "restart"); code != 2 {
		t.Errorf("restart without an id: exit %d", code)
	}
	// A session without an interpreter shows none.
	plain, _, _ := run(t, f.sock, "", "session", "create", "-l", "python")
	if out, _, _ := run(t, f.sock, "", "session", "show", strings.TrimSpace(plain)); strings.Contains(out, "interpreter") {
		t.Errorf("show of a session without an interpreter:\n%s", out)
	}
}

// TestExecuteCell runs cells with execute --session: the value after the
// output, on a line of its own, the exception on stderr, state_lost
// noted, streamed and not.
func TestExecuteCell(t *testing.T) {
	f := startFakeInterpreter(t)
	id, _, _ := run(t, f.sock, "", "session", "create", "-l", "python", "--interpreter")
	id = strings.TrimSpace(id)
	for _, mode := range [][]string{nil, {"--no-stream"}} {
		exec := func(code string) (string, string, int) {
			return run(t, f.sock, "", append(append([]string{"execute", "--session", id}, mode...), "-c", code)...)
		}
		for _, tc := range []struct {
			code, stdout, stderr string
			exit                 int
		}{
			{"1+1", "2\n", "", 0},
			{"print('no newline', end=''); 7", "no newline\n7\n", "", 0},
			{"def double(x):\n    return x * 2\n", "", "", 0},
			{"1/0", "", "Traceback (most recent call last):\n  File \"<cell>\", line 1, in <module>\nZeroDivisionError: division by zero\n", 1},
			{"raise KeyError", "", "KeyError: 'k'\n", 1},
			{"lost()", "1\n", "sandboxctl: the interpreter was restarted: earlier state is gone\n", 0},
			{"loop()", "", "KeyboardInterrupt\n", ctl.ExitTimedOut},
		} {
			if out, errOut, code := exec(tc.code); out != tc.stdout || errOut != tc.stderr || code != tc.exit {
				t.Errorf("%v %q: stdout %q, stderr %q, exit %d; want %q, %q, %d", mode, tc.code, out, errOut, code, tc.stdout, tc.stderr, tc.exit)
			}
		}
	}
	// JSON passes the cell's fields through.
	out, _, code := run(t, f.sock, "", "-o", "json", "execute", "--session", id, "-c", "1/0")
	var res api.ExecuteResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 1 || res.Error == nil || res.Error.Name != "ZeroDivisionError" {
		t.Errorf("-o json: exit %d %q", code, out)
	}
	out, _, _ = run(t, f.sock, "", "-o", "ndjson", "execute", "--session", id, "-c", "lost()")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var ev api.ResultEvent
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &ev); err != nil || ev.Type != api.EventResult || !ev.StateLost || ev.Value != "1" {
		t.Errorf("-o ndjson: %q", out)
	}
}

// TestExecuteOutputs writes a cell's rich outputs to files with
// --outputs-dir, named with -v; without it, text says what it did not
// show and how to get it.
func TestExecuteOutputs(t *testing.T) {
	f := startFakeInterpreter(t)
	id, _, _ := run(t, f.sock, "", "session", "create", "-l", "python", "--interpreter")
	id = strings.TrimSpace(id)
	out, errOut, code := run(t, f.sock, "", "execute", "--session", id, "-c", "plot()")
	wantErr := "sandboxctl: 3 outputs not shown (image/png, image/svg+xml, text/html): --outputs-dir DIR writes them to files\n"
	if out != "plain text\n" || errOut != wantErr || code != 0 {
		t.Errorf("no --outputs-dir: stdout %q, stderr %q, exit %d", out, errOut, code)
	}
	dir := filepath.Join(t.TempDir(), "out")
	out, errOut, code = run(t, f.sock, "", "-v", "execute", "--session", id, "-c", "plot()", "--outputs-dir", dir)
	if out != "" || code != 0 {
		t.Errorf("--outputs-dir: stdout %q, stderr %q, exit %d", out, errOut, code)
	}
	cells, _, _ := f.recorded()
	exec := fmt.Sprintf("e%031x", len(cells))
	for i, want := range []struct {
		mime, ext string
		data      []byte
	}{
		{"image/png", "png", pngBytes},
		{"image/svg+xml", "svg", []byte("<svg/>")},
		{"text/html", "html", []byte("<b>hi</b>")},
		{"text/plain", "txt", []byte("plain text")},
	} {
		name := filepath.Join(dir, fmt.Sprintf("%s-%d.%s", exec, i+1, want.ext))
		if b, err := os.ReadFile(name); err != nil || string(b) != string(want.data) {
			t.Errorf("%s: %q %v", name, b, err)
		}
		if line := fmt.Sprintf("sandboxctl: %s written to %s\n", want.mime, name); !strings.Contains(errOut, line) {
			t.Errorf("-v does not say %q:\n%s", line, errOut)
		}
	}
	// In JSON the outputs come in the result, and are written too.
	dir2 := t.TempDir()
	out, _, _ = run(t, f.sock, "", "-o", "json", "execute", "--session", id, "-c", "plot()", "--outputs-dir", dir2)
	var res api.ExecuteResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Outputs) != 4 {
		t.Errorf("-o json: %q", out)
	}
	if b, err := os.ReadFile(filepath.Join(dir2, res.ID+"-1.png")); err != nil || string(b) != string(pngBytes) {
		t.Errorf("-o json --outputs-dir: %q %v", b, err)
	}
}

// sessionID is the id of the nth session created.
func (f *fakeInterpreter) sessionID(n int) string { return fmt.Sprintf("%032x", n) }

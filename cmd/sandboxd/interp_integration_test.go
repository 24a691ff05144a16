//go:build integration

package main_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image/png"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// cell runs code as a cell of an interpreter session of the daemon at
// sock.
func cell(t *testing.T, sock, session, code string, timeoutMS int64) *api.ExecuteResult {
	t.Helper()
	return mustExecute(t, sock, api.ExecuteRequest{SessionID: session, Code: code, TimeoutMS: timeoutMS})
}

func interpSession(t *testing.T, sock, lang string, memory int64) string {
	t.Helper()
	x := createSession(t, sock, api.CreateSessionRequest{Language: lang, Interpreter: true, MemoryBytes: memory})
	t.Cleanup(func() { request(sock, "DELETE", "/v1/sessions/"+x.ID, "", nil) })
	if x.Interpreter == nil || x.Interpreter.State != api.InterpreterFresh || x.Interpreter.Restarts != 0 {
		t.Fatalf("a new interpreter session: %+v", x.Interpreter)
	}
	return x.ID
}

// wantValue checks that a cell ended well with value.
func wantValue(t *testing.T, res *api.ExecuteResult, value string) {
	t.Helper()
	if res.Status != api.StatusOK || res.Value != value || res.Error != nil || res.StateLost {
		t.Fatalf("want value %q: status %s, value %q, error %+v, state lost %v, stderr %q", value, res.Status, res.Value, res.Error, res.StateLost, res.Stderr)
	}
}

func TestInterpreterSessionPython(t *testing.T) {
	id := interpSession(t, socket, "python", 0)
	wantValue(t, cell(t, socket, id, "x = 41\nimport math\ndef f(y):\n    return y + 1\nclass K:\n    pass", 0), "")
	wantValue(t, cell(t, socket, id, "f(x)", 0), "42")
	wantValue(t, cell(t, socket, id, "math.sqrt(16)", 0), "4.0")
	wantValue(t, cell(t, socket, id, "type(K()).__name__", 0), "'K'")
	// Output streams as a program's; a statement has no value.
	res := cell(t, socket, id, "print('hi')\nimport sys\nprint('err', file=sys.stderr)", 0)
	if res.Stdout != "hi\n" || res.Stderr != "err\n" || res.Value != "" {
		t.Fatalf("print: %+v", res)
	}
	// An exception fails the cell and keeps the state.
	res = cell(t, socket, id, "def g():\n    raise ValueError('bad input')\ng()", 0)
	if res.Status != api.StatusFailed || res.Error == nil || res.Error.Name != "ValueError" || res.Error.Message != "bad input" ||
		!strings.Contains(res.Error.Traceback, "<cell") || !strings.Contains(res.Error.Traceback, "in g") {
		t.Fatalf("exception: status %s, error %+v", res.Status, res.Error)
	}
	wantValue(t, cell(t, socket, id, "x", 0), "41")
	if x := showSession(t, socket, id); x.Interpreter == nil || x.Interpreter.State != api.InterpreterKept || x.Interpreter.Restarts != 0 {
		t.Fatalf("after cells: %+v", x.Interpreter)
	}
	// display() and a figure come back as rich outputs.
	res = cell(t, socket, id, "class P:\n    def _repr_html_(self):\n        return '<b>hi</b>'\ndisplay(P())", 0)
	if len(res.Outputs) != 1 || res.Outputs[0].MIME != "text/html" || res.Outputs[0].Data != "<b>hi</b>" {
		t.Fatalf("display: %+v", res.Outputs)
	}
	res = cell(t, socket, id, "import matplotlib.pyplot as plt\nfig = plt.figure(figsize=(4, 3), dpi=50)\nplt.plot([1, 2, 3])\nplt.show()", 60000)
	if res.Status != api.StatusOK || len(res.Outputs) != 1 || res.Outputs[0].MIME != "image/png" {
		t.Fatalf("figure: status %s, error %+v, stderr %q, outputs %d", res.Status, res.Error, res.Stderr, len(res.Outputs))
	}
	raw, err := base64.StdEncoding.DecodeString(res.Outputs[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("the figure is no PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 200 || b.Dy() != 150 {
		t.Fatalf("the figure is %dx%d, not 200x150", b.Dx(), b.Dy())
	}
	// A program in another language runs beside the interpreter, which
	// keeps its state; what a cell starts in the background ends with it.
	if res := mustExecute(t, socket, api.ExecuteRequest{SessionID: id, Language: "bash", Code: "echo beside"}); res.Stdout != "beside\n" {
		t.Fatalf("bash beside: %+v", res)
	}
	wantValue(t, cell(t, socket, id, "x", 0), "41")
	cell(t, socket, id, "import subprocess\np = subprocess.Popen(['sleep', '4381'])", 0)
	if pgrep("sleep 4381") {
		t.Error("a cell's background process outlived the cell")
	}
	wantValue(t, cell(t, socket, id, "p.poll() is not None", 0), "True")
	// One that writes without end does not hold the cell's result back.
	res = cell(t, socket, id, "q = subprocess.Popen(['yes'])\n1 + 1", 10000)
	if res.Status != api.StatusOK || res.Value != "2" {
		t.Fatalf("a cell that left a writer: status %s, value %q", res.Status, res.Value)
	}
	wantValue(t, cell(t, socket, id, "q.wait() != 0", 0), "True")
}

func TestInterpreterSessionJavaScript(t *testing.T) {
	id := interpSession(t, socket, "javascript", 0)
	wantValue(t, cell(t, socket, id, "let a = 2; const b = 3; function g(n) { return n * a } class K {}", 0), "")
	wantValue(t, cell(t, socket, id, "g(21) + b - 3", 0), "42")
	wantValue(t, cell(t, socket, id, "new K()", 0), "K {}")
	wantValue(t, cell(t, socket, id, "({a: 1, s: 'x'})", 0), "{ a: 1, s: 'x' }")
	res := cell(t, socket, id, "console.log('out'); undefined", 0)
	if res.Stdout != "out\n" || res.Value != "" {
		t.Fatalf("console.log: %+v", res)
	}
	res = cell(t, socket, id, "throw new TypeError('nope')", 0)
	if res.Status != api.StatusFailed || res.Error == nil || res.Error.Name != "TypeError" || res.Error.Message != "nope" {
		t.Fatalf("throw: %+v", res.Error)
	}
	wantValue(t, cell(t, socket, id, "a", 0), "2")
	// An endless loop is interrupted at the timeout; the state stays.
	res = cell(t, socket, id, "while (true) {}", 1000)
	if res.Status != api.StatusTimedOut || res.StateLost {
		t.Fatalf("interrupted loop: status %s, state lost %v, error %+v", res.Status, res.StateLost, res.Error)
	}
	wantValue(t, cell(t, socket, id, "a", 0), "2")
}

// TestInterpreterLimits: a timeout interrupts a cell and keeps the state;
// an interpreter that ignores the interrupt, or is OOM-killed, is started
// anew, and the results say the state was lost.
func TestInterpreterLimits(t *testing.T) {
	id := interpSession(t, socket, "python", 256<<20)
	wantValue(t, cell(t, socket, id, "x = 41", 0), "")
	start := time.Now()
	res := cell(t, socket, id, "import time\nwhile True:\n    time.sleep(0.01)", 1000)
	if res.Status != api.StatusTimedOut || res.StateLost || res.Error == nil || res.Error.Name != "KeyboardInterrupt" {
		t.Fatalf("interrupted: status %s, state lost %v, error %+v", res.Status, res.StateLost, res.Error)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the interrupted cell took %v", took)
	}
	wantValue(t, cell(t, socket, id, "x", 0), "41")

	res = cell(t, socket, id, "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass", 1000)
	if res.Status != api.StatusTimedOut || !res.StateLost {
		t.Fatalf("ignoring the interrupt: status %s, state lost %v", res.Status, res.StateLost)
	}
	res = cell(t, socket, id, "x", 0)
	if res.Status != api.StatusFailed || res.Error == nil || res.Error.Name != "NameError" || res.StateLost {
		t.Fatalf("after a restart, the state is fresh (and the loss was told once): %+v", res)
	}
	if x := showSession(t, socket, id); x.Interpreter.Restarts != 1 {
		t.Fatalf("restarts after a killed interpreter: %+v", x.Interpreter)
	}

	wantValue(t, cell(t, socket, id, "y = 7", 0), "")
	res = cell(t, socket, id, "a = b'x' * (1 << 30)", 0)
	if res.Status != api.StatusOOMKilled || !res.OOMKilled || !res.StateLost {
		t.Fatalf("out of memory: status %s, state lost %v", res.Status, res.StateLost)
	}
	if res := cell(t, socket, id, "y", 0); res.Error == nil || res.Error.Name != "NameError" {
		t.Fatalf("after an OOM kill: %+v", res)
	}
	if x := showSession(t, socket, id); x.Interpreter.Restarts != 2 {
		t.Fatalf("restarts after an OOM kill: %+v", x.Interpreter)
	}
}

// TestInterpreterRestartAndIsolation: a restart asked for clears the state
// and keeps the files; two sessions never see each other's state.
func TestInterpreterRestartAndIsolation(t *testing.T) {
	a := interpSession(t, socket, "python", 0)
	b := interpSession(t, socket, "python", 0)
	wantValue(t, cell(t, socket, a, "secret = 'a'\n_ = open('/workspace/kept.txt', 'w').write('kept')", 0), "")
	if res := cell(t, socket, b, "secret", 0); res.Error == nil || res.Error.Name != "NameError" {
		t.Fatalf("session b sees a's state: %+v", res)
	}
	status, body := request(socket, "POST", "/v1/sessions/"+a+"/restart", "", nil)
	var x api.Session
	if status != 200 || json.Unmarshal(body, &x) != nil || x.Interpreter == nil || x.Interpreter.Restarts != 1 || x.Interpreter.State != api.InterpreterFresh {
		t.Fatalf("restart: %d %s", status, body)
	}
	res := cell(t, socket, a, "print(open('/workspace/kept.txt').read())\n'secret' in globals()", 0)
	if res.Stdout != "kept\n" || res.Value != "False" || res.StateLost {
		t.Fatalf("after a restart: %+v", res)
	}
	// Bad input gets a clear error.
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/v1/sessions", `{"language":"bash","interpreter":true}`, 400},
		{"POST", "/v1/execute", `{"session_id":"` + a + `","code":"input()","stdin":"x"}`, 400},
		{"POST", "/v1/execute", `{"session_id":"` + a + `","code":"1","args":["x"]}`, 400},
	} {
		if status, body := request(socket, tc.method, tc.path, tc.body, map[string]string{"Content-Type": "application/json"}); status != tc.want {
			t.Errorf("%s %s %s: %d %s", tc.method, tc.path, tc.body, status, body)
		}
	}
	plain := createSession(t, socket, api.CreateSessionRequest{Language: "python"})
	defer request(socket, "DELETE", "/v1/sessions/"+plain.ID, "", nil)
	if status, body := request(socket, "POST", "/v1/sessions/"+plain.ID+"/restart", "", nil); status != 400 {
		t.Errorf("restart of a session without interpreter: %d %s", status, body)
	}
}

// TestInterpreterSurvivesDaemonKill: the interpreter lives in the sandbox:
// a daemon killed and started again finds it with its state.
func TestInterpreterSurvivesDaemonKill(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	id := interpSession(t, d.sock, "python", 0)
	wantValue(t, cell(t, d.sock, id, "kept = [1, 2, 3]", 0), "")
	// Not while the pool is being made: a sandbox whose creation a
	// SIGKILL cuts short may leave its shim (a matter of its own).
	waitPoolFull(t, d.sock)
	d.kill()
	d = d.restart(t)
	wantValue(t, cell(t, d.sock, id, "sum(kept)", 0), "6")
	if x := showSession(t, d.sock, id); x.Interpreter == nil || x.Interpreter.Restarts != 0 {
		t.Errorf("adopted: %+v", x.Interpreter)
	}
	// Before the restarted daemon stops, which its cleanup does first.
	if status, body := request(d.sock, "DELETE", "/v1/sessions/"+id, "", nil); status != 204 {
		t.Errorf("delete: %d %s", status, body)
	}
}

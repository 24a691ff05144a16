package drivers

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPythonReady(t *testing.T) {
	out, err := exec.Command(*pythonPath, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	d := startDriver(t, "python")
	if want := strings.TrimSpace(strings.TrimPrefix(string(out), "Python ")); d.ready.Version != want {
		t.Errorf("ready line's version %q, want %q", d.ready.Version, want)
	}
}

func TestPythonStateAcrossCells(t *testing.T) {
	d := startDriver(t, "python")
	d.wantValue("x = 41\nimport math\ndef inc(n):\n    return n + 1\nclass Box:\n    def __init__(self, v):\n        self.v = v", "")
	d.wantValue("Box(inc(x)).v + math.floor(0.5)", "42")
	// The namespace is __main__'s, so pickle finds the cells' classes.
	d.wantValue("import pickle\npickle.loads(pickle.dumps(Box(3))).v", "3")
	d.wantValue("__name__", "'__main__'")
	// Imports from the working directory, as in the REPL.
	d.wantValue("open('helper.py', 'w').write('ANSWER = 42\\n')\nimport helper\nhelper.ANSWER", "42")
}

func TestPythonValue(t *testing.T) {
	d := startDriver(t, "python")
	for _, tc := range []struct{ code, want string }{
		{"1 + 1", "2"},
		{"y = 5", ""},
		{"None", ""},
		{"'s'", "'s'"},
		{"a = 2\na * 3", "6"},
		{"print('printed')", ""},
		{"if True:\n    7", ""},
		{"[1, 2]", "[1, 2]"},
		{"_", "[1, 2]"},
		{"import asyncio\nawait asyncio.sleep(0)\n'awaited'", "'awaited'"},
	} {
		d.wantValue(tc.code, tc.want)
	}
}

func TestPythonError(t *testing.T) {
	d := startDriver(t, "python")
	d.ok("x = 1")
	id := d.nextID
	e := d.wantError("def fail():\n    raise ValueError('bad value')\nfail()", "ValueError")
	if e.Message != "bad value" {
		t.Errorf("message %q", e.Message)
	}
	cell := `"<cell ` + itoa(id) + `>"`
	want := "Traceback (most recent call last):\n" +
		"  File " + cell + ", line 3, in <module>\n    fail()\n" +
		"  File " + cell + ", line 2, in fail\n    raise ValueError('bad value')\n" +
		"ValueError: bad value\n"
	if e.Traceback != want {
		t.Errorf("traceback:\n%s\nwant:\n%s", e.Traceback, want)
	}
	d.wantValue("x", "1")

	id = d.nextID
	e = d.wantError("x = (", "SyntaxError")
	if !strings.HasPrefix(e.Traceback, `  File "<cell `+itoa(id)+`>", line 1`) || strings.Contains(e.Traceback, "python.py") {
		t.Errorf("SyntaxError traceback:\n%s", e.Traceback)
	}
	d.wantValue("x", "1")
}

func TestPythonOutputBeforeResult(t *testing.T) {
	d := startDriver(t, "python")
	d.ok("import sys\nprint('out line')\nsys.stderr.write('err line\\n')\nprint('no newline', end='')")
	if got := available(t, d.stdout); got != "out line\nno newline" {
		t.Errorf("stdout when the result came: %q", got)
	}
	if got := available(t, d.stderr); got != "err line\n" {
		t.Errorf("stderr when the result came: %q", got)
	}
	// A buffered stdout of the cell's own is flushed too.
	d.ok("sys.stdout = open(1, 'w', closefd=False)\nprint('buffered', end='')")
	if got := available(t, d.stdout); got != "buffered" {
		t.Errorf("stdout when the result came: %q", got)
	}
}

func TestPythonOutputStreamsLive(t *testing.T) {
	outputStreamsLive(t, "python", "print('waiting for a line')\nline = input()", "line", "'hello'")
}

func TestPythonDisplay(t *testing.T) {
	d := startDriver(t, "python")
	pic := testPNG(t, 3, 2)
	r := d.run(`import base64
class Picture:
    def _repr_png_(self):
        return base64.b64decode("` + pic + `")
class Page:
    def _repr_html_(self):
        return "<b>bold</b>"
class NoPNG:
    def _repr_png_(self):
        return None
    def _repr_svg_(self):
        return "<svg/>"
display(Picture(), Page())
display(NoPNG(), 5, "s")
`)
	if r.Error != nil {
		t.Fatalf("error: %+v", *r.Error)
	}
	want := []Output{{"image/png", pic}, {"text/html", "<b>bold</b>"}, {"image/svg+xml", "<svg/>"}, {"text/plain", "5"}, {"text/plain", "'s'"}}
	if !slices.Equal(r.Outputs, want) {
		t.Errorf("outputs %+v, want %+v", r.Outputs, want)
	}
	if w, h := pngSize(t, r.Outputs[0].Data); w != 3 || h != 2 {
		t.Errorf("PNG %dx%d", w, h)
	}
	// A cell that deletes display does not take it from the next.
	d.ok("del display")
	if r := d.run("display({'k': 1})"); r.Error != nil || !slices.Equal(r.Outputs, []Output{{"text/plain", "{'k': 1}"}}) {
		t.Errorf("display after del: %+v", r)
	}
	if r := d.run("1"); len(r.Outputs) != 0 {
		t.Errorf("a cell that displays nothing has outputs: %+v", r.Outputs)
	}
}

func TestPythonMatplotlib(t *testing.T) {
	if err := exec.Command(*pythonPath, "-c", "import matplotlib").Run(); err != nil {
		t.Fatalf("%s cannot import matplotlib (apt-get install python3-matplotlib): %v", *pythonPath, err)
	}
	d := startDriver(t, "python")
	d.wantValue("import sys\n'matplotlib' in sys.modules", "False") // the driver starts without it
	r := d.run(`import matplotlib.pyplot as plt
fig = plt.figure(figsize=(4, 3), dpi=50)
plt.plot([1, 2, 3], [1, 4, 9])
plt.show()`)
	if r.Error != nil {
		t.Fatalf("error: %+v", *r.Error)
	}
	if len(r.Outputs) != 1 || r.Outputs[0].MIME != "image/png" {
		t.Fatalf("outputs %+v, want one PNG", r.Outputs)
	}
	if w, h := pngSize(t, r.Outputs[0].Data); w != 200 || h != 150 {
		t.Errorf("the figure is %dx%d, want 4x3 inches at 50 dpi: 200x150", w, h)
	}
	// Shown figures are closed: the next cell shows none.
	if r := d.run("len(plt.get_fignums())"); r.Value != "0" || len(r.Outputs) != 0 {
		t.Errorf("after the cell: %+v", r)
	}
	// A figure displayed is shown once.
	r = d.run("fig, ax = plt.subplots(figsize=(2, 1), dpi=100)\nax.bar([1, 2], [3, 4])\ndisplay(fig)")
	if len(r.Outputs) != 1 || r.Outputs[0].MIME != "image/png" {
		t.Fatalf("outputs %+v, want one PNG", r.Outputs)
	}
	if w, h := pngSize(t, r.Outputs[0].Data); w != 200 || h != 100 {
		t.Errorf("the figure is %dx%d, want 200x100", w, h)
	}
	// A cell that fails still shows what it drew.
	r = d.run("plt.plot([1, 2])\nraise RuntimeError('after the plot')")
	if r.Error == nil || len(r.Outputs) != 1 {
		t.Errorf("a failing cell's plot: %+v", r)
	}
}

func TestPythonInterrupt(t *testing.T) {
	d := startDriver(t, "python")
	d.ok("x = 1")
	id := d.send("print('looping', flush=True)\nwhile True: pass")
	readUntil(t, d.stdout, "looping\n")
	d.interrupt()
	r := d.result(id)
	if r.Error == nil || r.Error.Name != "KeyboardInterrupt" {
		t.Fatalf("result %+v, want KeyboardInterrupt", r)
	}
	// Where the cell was: in the loop, or still returning from print.
	head := "Traceback (most recent call last):\n  File \"<cell " + itoa(id) + ">\", "
	inLoop := head + "line 2, in <module>\n    while True: pass\nKeyboardInterrupt\n"
	inPrint := head + "line 1, in <module>\n    print('looping', flush=True)\nKeyboardInterrupt\n"
	if r.Error.Traceback != inLoop && r.Error.Traceback != inPrint {
		t.Errorf("traceback:\n%s\nwant:\n%s", r.Error.Traceback, inLoop)
	}
	d.wantValue("x", "1")

	// A cell blocked in a call is interrupted too.
	id = d.send("import time\nprint('sleeping', flush=True)\ntime.sleep(60)")
	readUntil(t, d.stdout, "sleeping\n")
	start := time.Now()
	d.interrupt()
	if r := d.result(id); r.Error == nil || r.Error.Name != "KeyboardInterrupt" {
		t.Fatalf("result %+v, want KeyboardInterrupt", r)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Errorf("the sleep ended %v after SIGINT", waited)
	}
	d.wantValue("x + 1", "2")

	// A cell that awaits is interrupted, and its task does not run on.
	id = d.send("import asyncio\nasync def tick():\n    global ticks\n    while True:\n        ticks += 1\n        await asyncio.sleep(0.01)\nticks = 0\nprint('awaiting', flush=True)\nawait tick()")
	readUntil(t, d.stdout, "awaiting\n")
	time.Sleep(50 * time.Millisecond) // most likely in the loop's wait then
	d.interrupt()
	r = d.result(id)
	if r.Error == nil || r.Error.Name != "KeyboardInterrupt" {
		t.Fatalf("result %+v, want KeyboardInterrupt", r)
	}
	if !strings.HasPrefix(r.Error.Traceback, "Traceback (most recent call last):\n  File \"<cell "+itoa(id)+">\"") || strings.Contains(r.Error.Traceback, "asyncio") {
		t.Errorf("traceback:\n%s", r.Error.Traceback)
	}
	d.ok("before = ticks")
	d.wantValue("await asyncio.sleep(0.1)\nticks - before", "0")
}

func TestPythonInterruptPrinting(t *testing.T) {
	interruptPrinting(t, "python", "i = 0\nwhile True:\n    print(i)\n    i += 1", "print('still printing')", "KeyboardInterrupt")
}

func TestPythonIdleInterrupt(t *testing.T) {
	d := startDriver(t, "python")
	idleInterrupts(t, d, "1 + 1", "2")
	// A cell's own SIGINT handler holds for that cell only.
	d.ok("import signal\nsignal.signal(signal.SIGINT, signal.SIG_DFL)")
	idleInterrupts(t, d, "2 + 2", "4")
}

func TestPythonSurvivesHostileCells(t *testing.T) {
	d := startDriver(t, "python")
	d.ok("alive = 'yes'")
	for _, tc := range []struct{ code, errorName string }{
		{"import sys\nsys.exit(3)", "SystemExit"},
		{"raise SystemExit", "SystemExit"},
		{"class Stop(BaseException): pass\nraise Stop('stop')", "Stop"},
		{"raise KeyboardInterrupt", "KeyboardInterrupt"},
		{"raise GeneratorExit", "GeneratorExit"},
		// Closing, then reusing, fds 3 and 4.
		{"import os\nfor fd in (3, 4):\n    try:\n        os.close(fd)\n    except OSError:\n        pass", ""},
		{"null = os.open(os.devnull, os.O_WRONLY)\nos.dup2(null, 3)\nos.dup2(null, 4)\nos.write(4, b'not a result\\n')", ""},
		{"sys.stdout = None", ""},
		{"sys.stdout = sys.__stdout__\nsys.stderr.close()", ""},
		{"sys.stderr = sys.__stderr__ = open(2, 'w', closefd=False)", ""},
		{"del display", ""},
		{"import builtins\ndel builtins.display", ""},
		{"import json\njson.dumps = json.loads = None", ""},
		{"def f():\n    f()\nf()", "RecursionError"},
		{"os.close(1)", ""},
	} {
		r := d.run(tc.code)
		switch {
		case tc.errorName == "" && r.Error != nil:
			t.Errorf("cell %q: %+v", tc.code, *r.Error)
		case tc.errorName != "" && (r.Error == nil || r.Error.Name != tc.errorName):
			t.Errorf("cell %q: %+v, want %s", tc.code, r, tc.errorName)
		}
		d.wantValue("alive", "'yes'")
	}
	e := d.wantError("sys.exit(3)", "SystemExit")
	if e.Message != "3" {
		t.Errorf("SystemExit message %q", e.Message)
	}
	if r := d.run("display(1)"); len(r.Outputs) != 1 {
		t.Errorf("display after it was deleted: %+v", r)
	}
}

func TestPythonHugeOutput(t *testing.T) {
	d := startDriver(t, "python", driverOpts{drainOutput: true})
	const size = 64 * 65536 // many times what a pipe holds
	d.ok("import sys\nfor _ in range(64):\n    sys.stdout.write('x' * 65536)")
	deadline := time.Now().Add(resultTimeout)
	for d.outputLen() < size && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := d.outputLen(); n != size {
		t.Errorf("stdout: %d bytes, want %d", n, size)
	}
	// A value as large.
	if got := d.ok("'y' * 10_000_000"); len(got) != 10_000_002 {
		t.Errorf("a value of %d bytes, want 10000002", len(got))
	}
}

func TestPythonEndOfCells(t *testing.T) {
	d := startDriver(t, "python")
	d.ok("import threading, time\nthreading.Thread(target=time.sleep, args=(600,)).start()") // not waited for
	endOfCells(t, d)
}

func TestPythonProtocolError(t *testing.T) { protocolErrors(t, startDriver(t, "python")) }

package drivers

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The interpreters the drivers are tested with: Debian's, as sandboxes
// run them. -node=/path runs the node tests with another node.
var (
	pythonPath = flag.String("python", "/usr/bin/python3", "the python3 the python driver is tested with")
	nodePath   = flag.String("node", "/usr/bin/node", "the node the node driver is tested with")
)

// How long a result may take on a loaded machine; cells here take
// milliseconds (matplotlib's import, a second).
const resultTimeout = 20 * time.Second

// driver is a driver started as the agent starts it: fds 3 and 4 are
// pipes, and the test holds the other ends of stdin, stdout and stderr.
type driver struct {
	t       testing.TB
	cmd     *exec.Cmd
	dir     string // the driver's directory, which must stay as it is
	control *os.File
	stdin   *os.File
	stdout  *os.File
	stderr  *os.File
	lines   chan []byte
	exited  chan struct{} // closed once the driver exited, with exitErr
	exitErr error
	nextID  int64

	outMu  sync.Mutex
	output bytes.Buffer // stdout and stderr, with drainOutput
}

type driverOpts struct {
	// drainOutput reads stdout and stderr into output as they come, for
	// cells that write more than a pipe holds.
	drainOutput bool
	env         []string // added to the test's environment
}

func startDriver(t testing.TB, language string, opts ...driverOpts) *driver {
	t.Helper()
	var o driverOpts
	if len(opts) > 0 {
		o = opts[0]
	}
	file, args, ok := For(language)
	if !ok {
		t.Fatalf("For(%q): no driver", language)
	}
	bin := *pythonPath
	if language == "javascript" {
		bin = *nodePath
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the %s driver is tested with %s: %v", language, bin, err)
	}
	dir := filepath.Join(t.TempDir(), "drivers")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range Files() {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	before := listDir(t, dir)
	t.Cleanup(func() {
		if after := listDir(t, dir); !slices.Equal(before, after) {
			t.Errorf("the driver wrote beside itself: %v, then %v", before, after)
		}
	})

	args = slices.Clone(args)
	if args[len(args)-1] != Dir+"/"+file {
		t.Fatalf("For(%q) = %v: the driver's path is not last", language, args)
	}
	args[0], args[len(args)-1] = bin, filepath.Join(dir, file)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = t.TempDir() // the workspace
	cmd.Env = append(os.Environ(), o.env...)

	pipe := func() (r, w *os.File) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		return r, w
	}
	stdinR, stdinW := pipe()
	stdoutR, stdoutW := pipe()
	stderrR, stderrW := pipe()
	controlR, controlW := pipe()
	resultsR, resultsW := pipe()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdinR, stdoutW, stderrW
	cmd.ExtraFiles = []*os.File{controlR, resultsW} // fds 3 and 4
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []*os.File{stdinR, stdoutW, stderrW, controlR, resultsW} {
		f.Close()
	}
	d := &driver{t: t, cmd: cmd, dir: dir, control: controlW, stdin: stdinW, stdout: stdoutR, stderr: stderrR,
		lines: make(chan []byte, 16), exited: make(chan struct{}), nextID: 1}
	go func() {
		defer close(d.lines)
		r := bufio.NewReader(resultsR)
		for {
			line, err := r.ReadBytes('\n')
			if len(line) > 0 {
				d.lines <- line
			}
			if err != nil {
				resultsR.Close()
				return
			}
		}
	}()
	if o.drainOutput {
		for _, f := range []*os.File{stdoutR, stderrR} {
			go func() {
				buf := make([]byte, 1<<16)
				for {
					n, err := f.Read(buf)
					d.outMu.Lock()
					d.output.Write(buf[:n])
					d.outMu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
	}
	go func() {
		d.exitErr = cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.control.Close()
		select {
		case <-d.exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-d.exited
		}
		for _, f := range []*os.File{d.stdin, d.stdout, d.stderr} {
			f.Close()
		}
	})

	var ready Ready
	d.decode(d.line(), &ready)
	if !ready.Ready || ready.Language != language || ready.Version == "" {
		t.Fatalf("the ready line: %+v", ready)
	}
	return d
}

// outputLen returns how much output a drainOutput driver wrote.
func (d *driver) outputLen() int {
	d.outMu.Lock()
	defer d.outMu.Unlock()
	return d.output.Len()
}

// waitOutput waits until a drainOutput driver's output after the first
// from bytes holds want.
func (d *driver) waitOutput(from int, want string) {
	d.t.Helper()
	deadline := time.Now().Add(resultTimeout)
	for {
		d.outMu.Lock()
		found := strings.Contains(d.output.String()[from:], want)
		d.outMu.Unlock()
		if found {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("no %q in the output in %v", want, resultTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func listDir(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func (d *driver) line() []byte {
	d.t.Helper()
	select {
	case line, ok := <-d.lines:
		if !ok {
			d.t.Fatalf("the driver closed its results (exited: %v); stderr: %q", d.exitStatus(), available(d.t, d.stderr))
		}
		return line
	case <-time.After(resultTimeout):
		d.t.Fatalf("no line from the driver in %v; stderr: %q", resultTimeout, available(d.t, d.stderr))
	}
	return nil
}

func (d *driver) exitStatus() error {
	select {
	case <-d.exited:
		return d.exitErr
	case <-time.After(time.Second):
		return errors.New("still running")
	}
}

func (d *driver) decode(line []byte, v any) {
	d.t.Helper()
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		d.t.Fatalf("decode %q: %v", line, err)
	}
}

// send writes a cell and returns its id.
func (d *driver) send(code string) int64 {
	d.t.Helper()
	id := d.nextID
	d.nextID++
	line, err := json.Marshal(Cell{ID: id, Code: code})
	if err != nil {
		d.t.Fatal(err)
	}
	if _, err := d.control.Write(append(line, '\n')); err != nil {
		d.t.Fatal(err)
	}
	return id
}

func (d *driver) result(id int64) Result {
	d.t.Helper()
	var r Result
	d.decode(d.line(), &r)
	if r.ID != id {
		d.t.Fatalf("result for cell %d, want %d: %+v", r.ID, id, r)
	}
	return r
}

// run runs a cell and returns its result.
func (d *driver) run(code string) Result {
	d.t.Helper()
	return d.result(d.send(code))
}

// ok runs a cell that must not fail and returns its value.
func (d *driver) ok(code string) string {
	d.t.Helper()
	r := d.run(code)
	if r.Error != nil {
		d.t.Fatalf("cell %q failed: %+v", code, *r.Error)
	}
	return r.Value
}

// wantValue runs a cell that must not fail and checks its value.
func (d *driver) wantValue(code, want string) {
	d.t.Helper()
	if got := d.ok(code); got != want {
		d.t.Errorf("cell %q: value %q, want %q", code, got, want)
	}
}

// wantError runs a cell that must fail with the error name and returns
// the error.
func (d *driver) wantError(code, name string) Error {
	d.t.Helper()
	r := d.run(code)
	if r.Error == nil {
		d.t.Fatalf("cell %q: no error (value %q), want %s", code, r.Value, name)
	}
	if r.Error.Name != name {
		d.t.Fatalf("cell %q: error %+v, want %s", code, *r.Error, name)
	}
	if r.Value != "" {
		d.t.Errorf("cell %q failed with a value: %q", code, r.Value)
	}
	return *r.Error
}

func (d *driver) interrupt() {
	d.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGINT); err != nil {
		d.t.Fatal(err)
	}
}

// available returns what f holds now, without waiting: what a driver
// wrote before the line just read is there.
func available(t testing.TB, f *os.File) string {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	buf := make([]byte, 1<<16)
	for {
		var n int
		if err := rc.Read(func(fd uintptr) bool {
			n, _ = syscall.Read(int(fd), buf) // non-blocking: EAGAIN when empty
			return true
		}); err != nil {
			break
		}
		if n <= 0 {
			break
		}
		out = append(out, buf[:n]...)
	}
	return string(out)
}

// readUntil reads f until what it read holds want.
func readUntil(t *testing.T, f *os.File, want string) string {
	t.Helper()
	deadline := time.Now().Add(resultTimeout)
	var out []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(out, []byte(want)) {
		if err := f.SetReadDeadline(deadline); err != nil {
			t.Fatal(err)
		}
		n, err := f.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			t.Fatalf("waiting for %q, read %q: %v", want, out, err)
		}
	}
	return string(out)
}

// noResultYet checks that no result line is waiting.
func (d *driver) noResultYet() {
	d.t.Helper()
	select {
	case line := <-d.lines:
		d.t.Fatalf("a result before the cell ended: %s", line)
	default:
	}
}

// testPNG returns a w×h PNG, and its base64.
func testPNG(t *testing.T, w, h int) string {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	img.Set(0, 0, color.RGBA{R: 255, A: 255})
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

func pngSize(t *testing.T, b64 string) (w, h int) {
	t.Helper()
	data, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatalf("PNG output not base64: %v", err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("PNG output does not decode: %v", err)
	}
	return cfg.Width, cfg.Height
}

func TestFor(t *testing.T) {
	files := Files()
	for _, tc := range []struct {
		language, file string
		args           []string
	}{
		{"python", "python.py", []string{"python3", "-u", "/.sandboxd/drivers/python.py"}},
		{"javascript", "node.js", []string{"node", "/.sandboxd/drivers/node.js"}},
	} {
		file, args, ok := For(tc.language)
		if !ok || file != tc.file || !slices.Equal(args, tc.args) {
			t.Errorf("For(%q) = %q, %q, %v; want %q, %q, true", tc.language, file, args, ok, tc.file, tc.args)
		}
		if len(files[file]) == 0 {
			t.Errorf("Files() has no %s", file)
		}
		if _, err := FS().Open(file); err != nil {
			t.Errorf("FS(): %v", err)
		}
	}
	for _, language := range []string{"bash", "typescript", "", "Python"} {
		if _, _, ok := For(language); ok {
			t.Errorf("For(%q) has a driver", language)
		}
	}
}

func TestPythonReady(t *testing.T) {
	out, err := exec.Command(*pythonPath, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	d := startDriver(t, "python")
	// The version in the ready line is the interpreter's.
	want := strings.TrimSpace(strings.TrimPrefix(string(out), "Python "))
	d.wantValue("import platform\nplatform.python_version()", "'"+want+"'")
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

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

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
	d := startDriver(t, "python")
	id := d.send("print('waiting for a line')\nline = input()")
	readUntil(t, d.stdout, "waiting for a line\n")
	d.noResultYet()
	if _, err := d.stdin.WriteString("hello\n"); err != nil {
		t.Fatal(err)
	}
	if r := d.result(id); r.Error != nil {
		t.Fatalf("error: %+v", *r.Error)
	}
	d.wantValue("line", "'hello'")
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

// interruptPrinting breaks a cell that prints in a loop: its stdout must
// still work after.
func interruptPrinting(t *testing.T, language, loop, print, errorName string) {
	d := startDriver(t, language, driverOpts{drainOutput: true})
	id := d.send(loop)
	d.waitOutput(0, "\n1000\n")
	d.interrupt()
	if r := d.result(id); r.Error == nil || r.Error.Name != errorName {
		t.Fatalf("result %+v, want %s", r, errorName)
	}
	from := d.outputLen()
	d.ok(print)
	d.waitOutput(from, "still printing\n")
}

func TestPythonInterruptPrinting(t *testing.T) {
	interruptPrinting(t, "python", "i = 0\nwhile True:\n    print(i)\n    i += 1", "print('still printing')", "KeyboardInterrupt")
}

// idleInterrupts sends SIGINTs between cells; the driver must take no
// notice: the next cells run, uninterrupted.
func idleInterrupts(t *testing.T, d *driver, code, want string) {
	for range 3 {
		d.interrupt()
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // delivered while idle, not during the next cell
	d.wantValue(code, want)
	d.wantValue(code, want)
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

// endOfCells closes fd 3: the driver must exit 0.
func endOfCells(t *testing.T, d *driver) {
	d.control.Close()
	select {
	case <-d.exited:
		if d.exitErr != nil {
			t.Errorf("the driver exited with %v at the end of its cells", d.exitErr)
		}
	case <-time.After(resultTimeout):
		t.Fatal("the driver did not exit at the end of its cells")
	}
}

func TestPythonEndOfCells(t *testing.T) {
	d := startDriver(t, "python")
	d.ok("import threading, time\nthreading.Thread(target=time.sleep, args=(600,)).start()") // not waited for
	endOfCells(t, d)
}

// protocolErrors sends lines that are not cells: each gets an error, and
// the driver goes on.
func protocolErrors(t *testing.T, d *driver) {
	wantID := map[string]int64{`{"id": 7}`: 7} // else null
	for _, line := range []string{"not json", `{"id": "one", "code": "1"}`, `{"id": 7}`, `[1]`} {
		if _, err := d.control.WriteString(line + "\n"); err != nil {
			t.Fatal(err)
		}
		var r Result
		d.decode(d.line(), &r)
		if r.Error == nil || r.Error.Name != "ProtocolError" || r.ID != wantID[line] {
			t.Errorf("line %q: %+v", line, r)
		}
	}
	d.wantValue("1", "1")
}

func TestPythonProtocolError(t *testing.T) { protocolErrors(t, startDriver(t, "python")) }

func TestNodeReady(t *testing.T) {
	out, err := exec.Command(*nodePath, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	d := startDriver(t, "javascript")
	d.wantValue("process.version", "'"+strings.TrimSpace(string(out))+"'")
}

func TestNodeStateAcrossCells(t *testing.T) {
	d := startDriver(t, "javascript")
	d.wantValue("let a = 1; const b = 2; var c = 3;\nfunction add(x, y) { return x + y }\nclass Pair { constructor(x, y) { this.x = x; this.y = y } sum() { return add(this.x, this.y) } }", "")
	d.wantValue("new Pair(a, b).sum() + c", "6")
	d.wantValue("a = 10; a", "10")
	d.wantValue("const path = require('path'); path.basename('/x/y')", "'y'")
	// require resolves from the working directory.
	d.wantValue("require('fs').writeFileSync('helper.js', 'module.exports = 42')\nrequire('./helper')", "42")
}

func TestNodeValue(t *testing.T) {
	d := startDriver(t, "javascript")
	for _, tc := range []struct{ code, want string }{
		{"1 + 1", "2"},
		{"({a: 1, b: [1, 2]})", "{ a: 1, b: [ 1, 2 ] }"},
		{"{a: 1, b: 'x'}", "{ a: 1, b: 'x' }"},
		{"{ let inner = 5; inner }", "5"},
		{"'s'", "'s'"},
		{"undefined", ""},
		{"let z = 1", ""},
		{"null", "null"},
		{"[1, 2, 3].map(n => n * 2)", "[ 2, 4, 6 ]"},
		{"new Map([[1, 2]])", "Map(1) { 1 => 2 }"},
		{"if (true) { 7 }", "7"},
		{"console.log('printed')", ""},
		{"const r = await Promise.resolve(21); r", "21"},
		{"r * 2", "42"},
		{"await 10n", "10n"},
		{"Promise.resolve(5)", "Promise { 5 }"},
	} {
		d.wantValue(tc.code, tc.want)
	}
}

func TestNodeRedeclare(t *testing.T) {
	d := startDriver(t, "javascript")
	d.wantValue("let q = 1; const k = 'a'; class C {}", "")
	d.wantValue("let q = 2; q", "2")
	d.wantValue("const k = 'b'; k", "'b'")
	d.wantValue("q + k", "'2b'")
}

func TestNodeError(t *testing.T) {
	d := startDriver(t, "javascript")
	d.ok("let kept = 1")
	id := d.nextID
	e := d.wantError("function boom() {\n  throw new TypeError('bad thing');\n}\nboom();", "TypeError")
	if e.Message != "bad thing" {
		t.Errorf("message %q", e.Message)
	}
	cell := "<cell " + itoa(id) + ">"
	want := "TypeError: bad thing\n    at boom (" + cell + ":2:9)\n    at " + cell + ":4:1"
	if e.Traceback != want {
		t.Errorf("traceback:\n%s\nwant:\n%s", e.Traceback, want)
	}
	d.wantValue("kept", "1")

	e = d.wantError("throw 5", "Uncaught")
	if e.Message != "5" {
		t.Errorf("message %q", e.Message)
	}
	id = d.nextID
	e = d.wantError("let = ;", "SyntaxError")
	if !strings.HasPrefix(e.Traceback, "<cell "+itoa(id)+">:1\n") || strings.Contains(e.Traceback, "node:vm") || strings.Contains(e.Traceback, "node.js") {
		t.Errorf("SyntaxError traceback:\n%s", e.Traceback)
	}
	// An error in a cell that awaits.
	id = d.nextID
	e = d.wantError("await null;\nthrow new RangeError('later')", "RangeError")
	if !strings.HasPrefix(e.Traceback, "RangeError: later\n    at <cell "+itoa(id)+">:2:7") || strings.Contains(e.Traceback, "node:") {
		t.Errorf("traceback:\n%s", e.Traceback)
	}
	d.wantValue("kept", "1")
}

func TestNodeOutputBeforeResult(t *testing.T) {
	d := startDriver(t, "javascript")
	d.ok("console.log('out line'); console.error('err line'); process.stdout.write('no newline')")
	if got := available(t, d.stdout); got != "out line\nno newline" {
		t.Errorf("stdout when the result came: %q", got)
	}
	if got := available(t, d.stderr); got != "err line\n" {
		t.Errorf("stderr when the result came: %q", got)
	}
	// Node's own stdout would make fd 1 non-blocking, for the programs
	// the cells start too.
	d.wantValue("(parseInt(require('fs').readFileSync('/proc/self/fdinfo/1', 'utf8').match(/flags:\\s*(\\d+)/)[1], 8) & 0o4000) !== 0", "false")
	d.ok("require('child_process').execSync('echo from a child', {stdio: 'inherit'})")
	if got := available(t, d.stdout); got != "from a child\n" {
		t.Errorf("stdout when the result came: %q", got)
	}
}

func TestNodeOutputStreamsLive(t *testing.T) {
	d := startDriver(t, "javascript")
	id := d.send("console.log('waiting for a line');\nconst buf = Buffer.alloc(100);\nconst line = buf.subarray(0, require('fs').readSync(0, buf)).toString()")
	readUntil(t, d.stdout, "waiting for a line\n")
	d.noResultYet()
	if _, err := d.stdin.WriteString("hello\n"); err != nil {
		t.Fatal(err)
	}
	if r := d.result(id); r.Error != nil {
		t.Fatalf("error: %+v", *r.Error)
	}
	d.wantValue("line", "'hello\\n'")
}

func TestNodeDisplay(t *testing.T) {
	d := startDriver(t, "javascript")
	pic := testPNG(t, 3, 2)
	r := d.run(`display({a: 1, b: [true, null]}, 'some text', Buffer.from('` + pic + `', 'base64'))
display({mime: 'text/html', data: '<i>x</i>'}, {mime: 'image/png', data: Buffer.from('` + pic + `', 'base64')}, 5, new Set([1]))`)
	if r.Error != nil {
		t.Fatalf("error: %+v", *r.Error)
	}
	want := []Output{
		{"application/json", `{"a":1,"b":[true,null]}`}, {"text/plain", "some text"}, {"image/png", pic},
		{"text/html", "<i>x</i>"}, {"image/png", pic}, {"text/plain", "5"}, {"text/plain", "Set(1) { 1 }"},
	}
	if !slices.Equal(r.Outputs, want) {
		t.Errorf("outputs %+v, want %+v", r.Outputs, want)
	}
	d.ok("delete globalThis.display")
	if r := d.run("display([1])"); r.Error != nil || !slices.Equal(r.Outputs, []Output{{"application/json", "[1]"}}) {
		t.Errorf("display after delete: %+v", r)
	}
}

func TestNodeInterrupt(t *testing.T) {
	d := startDriver(t, "javascript")
	d.ok("let x = 1")
	id := d.send("console.log('looping');\nwhile (true) {}")
	readUntil(t, d.stdout, "looping\n")
	d.interrupt()
	r := d.result(id)
	if r.Error == nil || r.Error.Name != "Interrupted" || r.Error.Message != "Script execution was interrupted by `SIGINT`" {
		t.Fatalf("result %+v, want Interrupted", r)
	}
	d.wantValue("x", "1")

	// A cell that awaits forever stops being waited for. (It prints once
	// it awaits: node may lose a SIGINT that comes as a cell's synchronous
	// part ends.)
	id = d.send("await null;\nconsole.log('awaiting');\nawait new Promise(() => {})")
	readUntil(t, d.stdout, "awaiting\n")
	d.interrupt()
	if r := d.result(id); r.Error == nil || r.Error.Name != "Interrupted" {
		t.Fatalf("result %+v, want Interrupted", r)
	}
	d.wantValue("x + 1", "2")
}

// A SIGINT may break a cell in the middle of node's writing to stdout.
func TestNodeInterruptPrinting(t *testing.T) {
	interruptPrinting(t, "javascript", "let i = 0;\nwhile (true) { console.log(i++) }", "console.log('still printing')", "Interrupted")
}

// TestNodeScriptMode runs the way a node without the inspector takes:
// cells as scripts, without top-level await or declaring again.
func TestNodeScriptMode(t *testing.T) {
	d := startDriver(t, "javascript", driverOpts{env: []string{"SANDBOXD_DRIVER_SCRIPT_MODE=1"}})
	d.wantValue("let a = 1; class K { v() { return 2 } }\nfunction f() { return 3 }", "")
	d.wantValue("a + new K().v() + f()", "6")
	d.wantValue("{a: 1}", "{ a: 1 }")
	d.wantValue("Promise.resolve(5)", "Promise { 5 }")
	d.wantValue("typeof process.env.SANDBOXD_DRIVER_SCRIPT_MODE", "'undefined'")
	id := d.nextID
	e := d.wantError("function boom() {\n  throw new TypeError('bad thing');\n}\nboom();", "TypeError")
	cell := "<cell " + itoa(id) + ">"
	if want := "TypeError: bad thing\n    at boom (" + cell + ":2:9)\n    at " + cell + ":4:1"; e.Traceback != want {
		t.Errorf("traceback:\n%s\nwant:\n%s", e.Traceback, want)
	}
	d.wantError("let a = 2", "SyntaxError")
	d.wantError("await 1", "SyntaxError")
	id = d.send("console.log('looping');\nwhile (true) {}")
	readUntil(t, d.stdout, "looping\n")
	d.interrupt()
	if r := d.result(id); r.Error == nil || r.Error.Name != "Interrupted" {
		t.Fatalf("result %+v, want Interrupted", r)
	}
	d.wantValue("a", "1")
}

func TestNodeIdleInterrupt(t *testing.T) {
	d := startDriver(t, "javascript")
	idleInterrupts(t, d, "1 + 1", "2")
}

func TestNodeSurvivesHostileCells(t *testing.T) {
	d := startDriver(t, "javascript")
	d.ok("var alive = 'yes'")
	for _, tc := range []struct{ code, errorName string }{
		{"process.exit(3)", "ProcessExit"},
		{"throw undefined", "Uncaught"},
		{"const fs = require('fs'); for (const fd of [3, 4]) { try { fs.closeSync(fd) } catch {} }", ""},
		{"const files = [fs.openSync('f1', 'w'), fs.openSync('f2', 'w')]; try { fs.writeSync(4, 'not a result\\n') } catch {}", ""},
		{"setTimeout(() => { throw new Error('late') }, 0)", ""},
		{"Promise.reject(new Error('nobody catches this'))", ""},
		{"setTimeout(() => process.exit(1), 0)", ""},
		{"JSON.stringify = JSON.parse = null; fs.writeSync = null", ""},
		{"delete globalThis.require", ""},
		{"function f() { f() } f()", "RangeError"},
		{"fs.closeSync(1)", ""},
	} {
		r := d.run(tc.code)
		switch {
		case tc.errorName == "" && r.Error != nil:
			t.Errorf("cell %q: %+v", tc.code, *r.Error)
		case tc.errorName != "" && (r.Error == nil || r.Error.Name != tc.errorName):
			t.Errorf("cell %q: %+v, want %s", tc.code, r, tc.errorName)
		}
		time.Sleep(20 * time.Millisecond) // timers fire
		d.wantValue("alive", "'yes'")
	}
	e := d.wantError("process.exit(3)", "ProcessExit")
	if e.Message != "3" || !strings.HasPrefix(e.Traceback, "ProcessExit: 3\n    at <cell ") {
		t.Errorf("process.exit: %+v", e)
	}
	if got := available(t, d.stderr); !strings.Contains(got, "Uncaught Error: late") || !strings.Contains(got, "Uncaught (in promise) Error: nobody catches this") {
		t.Errorf("stderr: %q", got)
	}
	d.wantValue("typeof require", "'function'")
}

func TestNodeEndOfCells(t *testing.T) {
	d := startDriver(t, "javascript")
	d.ok("setInterval(() => {}, 1000)") // not waited for
	endOfCells(t, d)
}

func TestNodeProtocolError(t *testing.T) { protocolErrors(t, startDriver(t, "javascript")) }

// benchmarkCell measures a warm driver's round trip for a cell, from its
// line written to its result read (go test -bench Cell -benchtime 200x),
// and the driver's resident memory once idle.
func benchmarkCell(b *testing.B, language, setup, cell string) {
	benchmarkCellOpts(b, language, driverOpts{}, setup, cell)
}

func benchmarkCellOpts(b *testing.B, language string, opts driverOpts, setup, cell string) {
	d := startDriver(b, language, opts)
	d.ok(setup)
	for range 20 {
		d.ok(cell) // warm up
	}
	status, err := os.ReadFile("/proc/" + strconv.Itoa(d.cmd.Process.Pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	var rssKiB float64
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
			rssKiB, _ = strconv.ParseFloat(f[1], 64)
		}
	}
	durations := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		d.ok(cell)
		durations = append(durations, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(durations)
	b.ReportMetric(float64(durations[len(durations)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(durations[len(durations)*95/100].Microseconds()), "p95-µs")
	b.ReportMetric(rssKiB, "idle-rss-KiB")
}

func BenchmarkPythonCell(b *testing.B) { benchmarkCell(b, "python", "x = 0", "x += 1") }

func BenchmarkNodeCell(b *testing.B) { benchmarkCell(b, "javascript", "var x = 0", "x += 1") }

func BenchmarkNodeCellScriptMode(b *testing.B) {
	benchmarkCellOpts(b, "javascript", driverOpts{env: []string{"SANDBOXD_DRIVER_SCRIPT_MODE=1"}}, "var x = 0", "x += 1")
}

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
	ready   Ready

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

	d.decode(d.line(), &d.ready)
	if !d.ready.Ready || d.ready.Language != language || d.ready.Version == "" {
		t.Fatalf("the ready line: %+v", d.ready)
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

// interruptCell sends code, waits until it has printed printed, then
// interrupts it and returns its result.
func (d *driver) interruptCell(code, printed string) Result {
	d.t.Helper()
	id := d.send(code)
	readUntil(d.t, d.stdout, printed)
	d.interrupt()
	return d.result(id)
}

// outputStreamsLive runs code, which prints "waiting for a line" and then
// reads a line into a variable: its output comes while it runs, before its
// result, and the line it reads, given then, is the variable's repr, want.
func outputStreamsLive(t *testing.T, language, code, variable, want string) {
	d := startDriver(t, language)
	id := d.send(code)
	readUntil(t, d.stdout, "waiting for a line\n")
	d.noResultYet()
	if _, err := d.stdin.WriteString("hello\n"); err != nil {
		t.Fatal(err)
	}
	if r := d.result(id); r.Error != nil {
		t.Fatalf("error: %+v", *r.Error)
	}
	d.wantValue(variable, want)
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
func readUntil(t testing.TB, f *os.File, want string) string {
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

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

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

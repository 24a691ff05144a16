package drivers

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNodeReady(t *testing.T) {
	out, err := exec.Command(*nodePath, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	d := startDriver(t, "javascript")
	if want := strings.TrimPrefix(strings.TrimSpace(string(out)), "v"); d.ready.Version != want {
		t.Errorf("ready line's version %q, want %q", d.ready.Version, want)
	}
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
	outputStreamsLive(t, "javascript", "console.log('waiting for a line');\nconst buf = Buffer.alloc(100);\nconst line = buf.subarray(0, require('fs').readSync(0, buf)).toString()",
		"line", "'hello\\n'")
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
	r := d.interruptCell("console.log('looping');\nwhile (true) {}", "looping\n")
	if r.Error == nil || r.Error.Name != "Interrupted" || r.Error.Message != "Script execution was interrupted by `SIGINT`" {
		t.Fatalf("result %+v, want Interrupted", r)
	}
	d.wantValue("x", "1")

	// A cell that awaits forever stops being waited for. (It prints once
	// it awaits: node may lose a SIGINT that comes as a cell's synchronous
	// part ends.)
	if r := d.interruptCell("await null;\nconsole.log('awaiting');\nawait new Promise(() => {})", "awaiting\n"); r.Error == nil || r.Error.Name != "Interrupted" {
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
	if r := d.interruptCell("console.log('looping');\nwhile (true) {}", "looping\n"); r.Error == nil || r.Error.Name != "Interrupted" {
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

package ctl_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestReplScript drives the REPL from a standard input that is not a
// terminal: no banner, no prompts; inputs split as at a terminal, each run
// as a cell; values on stdout, exceptions on stderr; the session deleted
// at the end; the exit status the last cell's.
func TestReplScript(t *testing.T) {
	f := startFakeInterpreter(t)
	script := "def double(x):\n    return x * 2\n\n\ndouble(21)\n1/0\n"
	out, errOut, code := run(t, f.sock, script, "repl", "-l", "python")
	if out != "42\n" || errOut != "Traceback (most recent call last):\n  File \"<cell>\", line 1, in <module>\nZeroDivisionError: division by zero\n" || code != 1 {
		t.Errorf("stdout %q, stderr %q, exit %d", out, errOut, code)
	}
	cells, deleted, created := f.recorded()
	if want := []string{"def double(x):\n    return x * 2\n", "double(21)\n", "1/0\n"}; !slices.Equal(cells, want) {
		t.Errorf("cells %q, want %q", cells, want)
	}
	if len(created) != 1 || !created[0].Interpreter || created[0].Language != "python" {
		t.Errorf("created %+v", created)
	}
	if len(deleted) != 1 || deleted[0] != f.sessionID(1) {
		t.Errorf("deleted %q", deleted)
	}
	// A last block with no empty line after it runs too; the last cell
	// succeeded.
	if out, errOut, code := run(t, f.sock, "1+1\ndef double(x):\n    return x * 2", "repl", "-l", "py"); out != "2\n" || errOut != "" || code != 0 {
		t.Errorf("no empty line at the end: stdout %q, stderr %q, exit %d", out, errOut, code)
	}
	if cells, _, _ := f.recorded(); cells[len(cells)-1] != "def double(x):\n    return x * 2\n" {
		t.Errorf("last cell %q", cells[len(cells)-1])
	}
}

// TestReplJavascript splits javascript inputs on their brackets.
func TestReplJavascript(t *testing.T) {
	f := startFakeInterpreter(t)
	if _, errOut, code := run(t, f.sock, "function f(x) {\n  return `${x}`\n}\n\nf(1)\n", "repl", "-l", "javascript"); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	cells, _, _ := f.recorded()
	if want := []string{"function f(x) {\n  return `${x}`\n}\n", "f(1)\n"}; !slices.Equal(cells, want) {
		t.Errorf("cells %q, want %q", cells, want)
	}
}

// TestReplKeep keeps the session with --keep, and never deletes one
// named with --session.
func TestReplKeep(t *testing.T) {
	f := startFakeInterpreter(t)
	_, errOut, code := run(t, f.sock, "1+1\n", "repl", "-l", "python", "--keep")
	id := f.sessionID(1)
	if code != 0 || !strings.Contains(errOut, "session "+id+" kept") {
		t.Errorf("--keep: exit %d, stderr %q", code, errOut)
	}
	out, errOut, code := run(t, f.sock, "double(21)\n", "repl", "--session", id)
	if out != "" || !strings.Contains(errOut, "NameError: name 'double' is not defined") || code != 1 || strings.Contains(errOut, "kept") {
		t.Errorf("--session: stdout %q, stderr %q, exit %d", out, errOut, code)
	}
	cells, deleted, created := f.recorded()
	if len(deleted) != 0 || len(created) != 1 || len(cells) != 2 {
		t.Errorf("deleted %q, created %d sessions, ran %q", deleted, len(created), cells)
	}
}

// TestReplUsage refuses what the REPL cannot do.
func TestReplUsage(t *testing.T) {
	f := startFakeInterpreter(t)
	plain, _, _ := run(t, f.sock, "", "session", "create", "-l", "python")
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"repl"}, 2, "no language"},
		{[]string{"repl", "-l", "python", "extra"}, 2, "no arguments"},
		{[]string{"-o", "json", "repl", "-l", "python"}, 2, "execute --session"},
		{[]string{"repl", "-l", "python", "--session", strings.TrimSpace(plain)}, 2, "exclusive"},
		{[]string{"repl", "--session", strings.TrimSpace(plain)}, 1, "has no interpreter"},
		{[]string{"repl", "--session", strings.Repeat("0", 32)}, 1, "not found"},
		{[]string{"repl", "-l", "python", "-t", "-1"}, 1, "must be positive"},
	} {
		if _, errOut, code := run(t, f.sock, "", tc.args...); code != tc.code || !strings.Contains(errOut, tc.says) {
			t.Errorf("%v: exit %d, want %d saying %q: %s", tc.args, code, tc.code, tc.says, errOut)
		}
	}
	if _, _, created := f.recorded(); len(created) != 1 {
		t.Errorf("%d sessions created, want only the test's", len(created))
	}
}

// TestReplOldDaemon refuses to run a REPL on a daemon that makes
// sessions without an interpreter, and deletes the session it made.
func TestReplOldDaemon(t *testing.T) {
	f := startFakeInterpreter(t)
	f.old = true
	_, errOut, code := run(t, f.sock, "1+1\n", "repl", "-l", "python")
	if code != 1 || !strings.Contains(errOut, "has no interpreter sessions") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	if cells, deleted, _ := f.recorded(); len(cells) != 0 || !slices.Equal(deleted, []string{f.sessionID(1)}) {
		t.Errorf("ran %q, deleted %q", cells, deleted)
	}
}

// TestReplOutputs names the files the cells' outputs went to, or says how
// to get them; a lost state is noted before the value.
func TestReplOutputs(t *testing.T) {
	f := startFakeInterpreter(t)
	out, errOut, _ := run(t, f.sock, "plot()\nlost()\n", "repl", "-l", "python")
	wantErr := "sandboxctl: 3 outputs not shown (image/png, image/svg+xml, text/html): start the REPL with --outputs-dir DIR to save them\n" +
		"sandboxctl: the interpreter was restarted: earlier state is gone\n"
	if out != "plain text\n1\n" || errOut != wantErr {
		t.Errorf("stdout %q, stderr %q", out, errOut)
	}
	dir := t.TempDir()
	_, errOut, _ = run(t, f.sock, "plot()\n", "repl", "-l", "python", "--outputs-dir", dir)
	cells, _, _ := f.recorded()
	png := filepath.Join(dir, fmt.Sprintf("e%031x-1.png", len(cells)))
	if b, err := os.ReadFile(png); err != nil || string(b) != string(pngBytes) || !strings.HasPrefix(errOut, "sandboxctl: image/png written to "+png+"\n") {
		t.Errorf("--outputs-dir: %q %v; stderr %q", b, err, errOut)
	}
}

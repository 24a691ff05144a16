package ctl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/ctl"
	"github.com/sandboxd/sandboxd/daemon"
	"github.com/sandboxd/sandboxd/daemon/api"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
	"github.com/sandboxd/sandboxd/runtime/sandbox/sandboxtest"
)

// fakeRuntime is package sandboxtest's runtime as the daemon consumes it.
// As cmd/sandboxd/adapter.go does for the real runtime, only the sandboxes
// it returns need wrapping in the daemon's types.
type fakeRuntime struct{ *sandboxtest.Runtime }

func (r fakeRuntime) Create(ctx context.Context, cfg sandbox.Config) (daemon.Sandbox, error) {
	sb, err := r.Runtime.Create(ctx, cfg)
	if sb == nil {
		return nil, err
	}
	return sb, err
}

func (r fakeRuntime) AdoptSessions(ctx context.Context) ([]daemon.Adopted, error) {
	adopted, err := r.Runtime.AdoptSessions(ctx)
	out := make([]daemon.Adopted, len(adopted))
	for i, a := range adopted {
		out[i] = daemon.Adopted{Sandbox: a.Sandbox, Record: a.Record}
	}
	return out, err
}

// echo is a program that prints its code and stdin, and exits with the
// code's length, or as the code says.
func echo(ctx context.Context, p sandbox.Process) (sandbox.ExitResult, error) {
	if p.Args[0] == "/usr/bin/gcc" {
		return compile(p)
	}
	code := string(p.Files["main.py"])
	in, _ := io.ReadAll(p.Stdin)
	switch code {
	case "timeout":
		return sandbox.ExitResult{ExitCode: 137, Killed: true}, nil
	case "oom":
		return sandbox.ExitResult{ExitCode: 137, OOMKilled: true}, nil
	case "binary":
		p.Stdout.Write([]byte{0xff, 0x00, 0xfe})
		return sandbox.ExitResult{}, nil
	case "deadline":
		// The timeout the daemon gave the run, in whole seconds.
		dl, ok := ctx.Deadline()
		if !ok {
			return sandbox.ExitResult{ExitCode: 3}, nil
		}
		fmt.Fprintf(p.Stdout, "%.0f", time.Until(dl).Seconds())
		return sandbox.ExitResult{}, nil
	}
	p.Stdout.Write([]byte("code=" + code + " stdin=" + string(in) + " args=" + strings.Join(p.Args[2:], ",")))
	p.Stderr.Write([]byte("to stderr"))
	return sandbox.ExitResult{ExitCode: len(code) % 256}, nil
}

// compile is a compiler that fails as the code says, or compiles.
func compile(p sandbox.Process) (sandbox.ExitResult, error) {
	switch string(p.Files["main.c"]) {
	case "error":
		p.Stdout.Write([]byte("in main:\n"))
		p.Stderr.Write([]byte("main.c:1: error\n"))
		return sandbox.ExitResult{ExitCode: 1}, nil
	case "oom":
		return sandbox.ExitResult{ExitCode: 137, Signal: 9, OOMKilled: true}, nil
	}
	return sandbox.ExitResult{}, nil
}

func startServer(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := daemon.New(daemon.Config{
		Runtime: fakeRuntime{&sandboxtest.Runtime{Exec: echo}},
		Languages: []daemon.Language{{LanguageSpec: daemon.LanguageSpec{Name: "python", Extensions: []string{".py"},
			FileName: "main.py", Run: []string{"/usr/bin/python3", "/sandbox/main.py"}}, Version: "3.11"},
			{LanguageSpec: daemon.LanguageSpec{Name: "c", FileName: "main.c", Compile: []string{"/usr/bin/gcc", "/sandbox/main.c"},
				Run: []string{"/tmp/main"}}, Version: "12"}},
		Limits:  daemon.DefaultLimits(1),
		Version: ctl.Version,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return sock
}

func run(t *testing.T, sock, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := ctl.Run(context.Background(), append([]string{"--socket", sock}, args...), strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

func TestExecute(t *testing.T) {
	sock := startServer(t)
	out, errOut, code := run(t, sock, "", "execute", "-l", "python", "-c", "hello", "-i", "in", "a", "b")
	if out != "code=hello stdin=in args=a,b" || errOut != "to stderr" || code != 5 {
		t.Errorf("stdout %q, stderr %q, exit %d", out, errOut, code)
	}
	// Global flags after the command, code and input from stdin.
	out, _, code = run(t, sock, "from stdin", "execute", "-l", "python", "-o", "json", "-c", "-")
	var res api.ExecuteResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Stdout != "code=from stdin stdin= args=" || code != 10 {
		t.Errorf("json: %q exit %d", out, code)
	}
	f := filepath.Join(t.TempDir(), "x.py")
	os.WriteFile(f, []byte("file"), 0o644)
	if out, _, _ := run(t, sock, "", "execute", "-c", f); out != "code=file stdin= args=" {
		t.Errorf("from file: %q", out)
	}
	if out, _, _ := run(t, sock, "", "execute", "-l", "python", "-c", "binary"); out != "\xff\x00\xfe" {
		t.Errorf("binary: %q", out)
	}
}

// A compiler's output goes to stderr in text mode, streamed or not: it is
// diagnostics, whichever of its streams the compiler wrote. A limit that
// ended the compile is named.
func TestExecuteCompileFailure(t *testing.T) {
	sock := startServer(t)
	for _, mode := range [][]string{nil, {"--no-stream"}} {
		out, errOut, code := run(t, sock, "", append(append([]string{"execute"}, mode...), "-l", "c", "-c", "error")...)
		if out != "" || errOut != "in main:\nmain.c:1: error\n" || code != 1 {
			t.Errorf("%v: stdout %q, stderr %q, exit %d", mode, out, errOut, code)
		}
		out, errOut, code = run(t, sock, "", append(append([]string{"execute"}, mode...), "-l", "c", "-c", "oom")...)
		if out != "" || errOut != "sandboxctl: the compiler reached the memory limit\n" || code != ctl.ExitKilled {
			t.Errorf("%v: stdout %q, stderr %q, exit %d", mode, out, errOut, code)
		}
	}
}

// TestExecuteLiveStdin streams standard input to the program while -v
// reads the daemon's version that the stdin request also sets.
func TestExecuteLiveStdin(t *testing.T) {
	sock := startServer(t)
	out, errOut, code := run(t, sock, "live input", "-v", "execute", "-l", "python", "-c", "x", "-i", "-")
	if out != "code=x stdin=live input args=" || !strings.HasPrefix(errOut, "to stderrid=") || code != 1 {
		t.Errorf("stdout %q, stderr %q, exit %d", out, errOut, code)
	}
}

func TestExitCodes(t *testing.T) {
	sock := startServer(t)
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"execute", "-l", "python", "-c", "timeout"}, ctl.ExitTimedOut},
		{[]string{"execute", "-l", "python", "-c", "oom"}, ctl.ExitKilled},
		{[]string{"execute", "-l", "cobol", "-c", "x"}, ctl.ExitFailed},
		{[]string{"execute", "-l", "python"}, ctl.ExitFailed},
		{[]string{"execute", "-l", "python", "-c", "x", "--memory", "lots"}, ctl.ExitFailed},
		{[]string{"execute", "-c", filepath.Join(t.TempDir())}, ctl.ExitFailed},
		{[]string{"-o", "yaml", "info"}, 2},
		{[]string{"nope"}, 2},
		{[]string{"info"}, 0},
		{[]string{"languages"}, 0},
	} {
		if _, errOut, code := run(t, sock, "", tc.args...); code != tc.code {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, code, tc.code, errOut)
		}
	}
	_, errOut, code := run(t, filepath.Join(t.TempDir(), "none.sock"), "", "execute", "-l", "python", "-c", "x")
	if code != ctl.ExitFailed || !strings.Contains(errOut, "cannot reach sandboxd") {
		t.Errorf("no daemon: exit %d, %q", code, errOut)
	}
}

// TestTimeout gives the timeout as a global flag, as execute's, and as
// both: execute's wins. Other commands refuse it.
func TestTimeout(t *testing.T) {
	sock := startServer(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-t", "7", "execute", "-l", "python", "-c", "deadline"}, "7"},
		{[]string{"--timeout", "7", "execute", "-l", "python", "-c", "deadline"}, "7"},
		{[]string{"--timeout=7.7", "execute", "-l", "python", "-c", "deadline"}, "8"},
		{[]string{"execute", "-t", "9", "-l", "python", "-c", "deadline"}, "9"},
		{[]string{"-t", "7", "execute", "--timeout", "9", "-l", "python", "-c", "deadline"}, "9"},
		{[]string{"--timeout", "7", "execute", "-t", "0.4", "-l", "python", "-c", "deadline"}, "0"},
	} {
		if out, errOut, code := run(t, sock, "", tc.args...); out != tc.want || code != 0 {
			t.Errorf("%v: %q exit %d, want %q (%s)", tc.args, out, code, tc.want, errOut)
		}
	}
	if _, errOut, code := run(t, sock, "", "-t", "-1", "execute", "-l", "python", "-c", "x"); code != ctl.ExitFailed || !strings.Contains(errOut, "must be positive") {
		t.Errorf("negative: exit %d, %q", code, errOut)
	}
	for _, args := range [][]string{{"-t", "5", "info"}, {"--timeout", "5", "session", "list"}, {"-t", "5", "mcp"}, {"info", "-t", "5"}} {
		if _, errOut, code := run(t, sock, "", args...); code != 2 || !strings.Contains(errOut, "-t") {
			t.Errorf("%v: exit %d, %q", args, code, errOut)
		}
	}
}

// TestSessionID runs in a session named by --session-id as by --session.
func TestSessionID(t *testing.T) {
	sock := startServer(t)
	id, errOut, code := run(t, sock, "", "session", "create", "-l", "python")
	if code != 0 {
		t.Fatalf("create: exit %d %s", code, errOut)
	}
	id = strings.TrimSpace(id)
	for _, flag := range []string{"--session", "--session-id", "-session-id"} {
		out, errOut, _ := run(t, sock, "", "-o", "json", "execute", flag, id, "-c", "x")
		var res api.ExecuteResult
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.SessionID != id || res.Stdout != "code=x stdin= args=" {
			t.Errorf("%s: %q %s", flag, out, errOut)
		}
	}
	if _, _, code := run(t, sock, "", "execute", "--session-id", "0123456789abcdef0123456789abcdef", "-c", "x"); code != ctl.ExitFailed {
		t.Errorf("an unknown session: exit %d", code)
	}
}

// TestParseSize checks the sizes execute --memory and session create
// --memory take.
func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"512m": 512 << 20, "1g": 1 << 30, "64MiB": 64 << 20, "1048576": 1 << 20, "1.5g": 3 << 29} {
		if got, err := api.ParseSize(in); err != nil || got != want {
			t.Errorf("%s: %d %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "-1m", "lots", "1t"} {
		if _, err := api.ParseSize(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSessionCommandUsage(t *testing.T) {
	sock := startServer(t)
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"session"}, 2},
		{[]string{"session", "nope"}, 2},
		{[]string{"session", "show"}, 2},
		{[]string{"session", "show", "a", "b"}, 2},
		{[]string{"session", "create"}, 1},              // no language
		{[]string{"session", "show", "../../etc"}, 1},   // refused by the daemon
		{[]string{"session", "upload", "0123", "-"}, 1}, // stdin needs a REMOTE
		{[]string{"session", "list", "-o", "json"}, 0},  // flags after the command
		{[]string{"session", "create", "-l", "python", "-o", "json"}, 0},
	} {
		if _, errOut, code := run(t, sock, "", tc.args...); code != tc.code {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, code, tc.code, errOut)
		}
	}
	out, _, _ := run(t, sock, "", "session", "list", "-o", "json")
	var list []api.Session
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 {
		t.Errorf("list: %v %q", err, out)
	}
}

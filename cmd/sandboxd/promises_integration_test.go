//go:build integration

// Tests of the README's promises that no other test held to: the limits
// of a sandbox and of a request, and the verdicts and statuses the API and
// the CLI give. Each asserts the exact status, errno or bound, so that it
// fails once the promise breaks.
package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// wantError checks an API error answer: its status, code, and a part of
// its message.
func wantError(t *testing.T, what string, status int, body []byte, wantStatus int, wantCode, wantMsg string) {
	t.Helper()
	var e api.Error
	if err := json.Unmarshal(body, &e); err != nil {
		t.Errorf("%s: status %d, body %.200q is not an API error: %v", what, status, body, err)
		return
	}
	if status != wantStatus || e.Code != wantCode || !strings.Contains(e.Message, wantMsg) {
		t.Errorf("%s: %d %s %q, want %d %s with %q", what, status, e.Code, e.Message, wantStatus, wantCode, wantMsg)
	}
}

// ctlJSON runs sandboxctl -o json execute and decodes its result.
func ctlJSON(t *testing.T, args ...string) (api.ExecuteResult, int) {
	t.Helper()
	out, errOut, code := sandboxctl(t, "", append([]string{"-o", "json", "execute"}, args...)...)
	var res api.ExecuteResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("sandboxctl %v: exit %d, %v: %q %q", args, code, err, out, errOut)
	}
	return res, code
}

// fillProgram writes /workspace and /tmp full, in files of 8 MiB (under
// RLIMIT_FSIZE), and says how many bytes each took and how the writes
// stopped; a full /workspace leaves /tmp writable, and a file removed
// makes room again.
const fillProgram = `
import errno, os
chunk = b"x" * (1 << 20)
def fill(d):
    total, i = 0, 0
    while True:
        fd = os.open(f"{d}/fill{i}", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for _ in range(8):
                try:
                    total += os.write(fd, chunk)
                except OSError as e:
                    return total, errno.errorcode[e.errno]
        finally:
            os.close(fd)
        i += 1
def probe(d):
    try:
        with open(f"{d}/probe", "wb") as f:
            f.write(chunk)
        os.remove(f"{d}/probe")
        return "writable"
    except OSError as e:
        return errno.errorcode[e.errno]
n, err = fill("/workspace")
print("workspace", n, err)
print("tmp", probe("/tmp"))
n, err = fill("/tmp")
print("tmp", n, err)
os.remove("/workspace/fill0")
print("workspace", probe("/workspace"))
`

func TestPromiseTmpfsSizes(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, _ []string) {
		// The filled tmpfs counts in the sandbox's memory: 128 MiB of it.
		res := execute(t, api.ExecuteRequest{Language: "python", Code: fillProgram, MemoryBytes: 512 << 20, Runtime: rt})
		var ws, tmp int64
		var wsErr, tmpErr, tmpProbe, wsProbe string
		if _, err := fmt.Sscanf(res.Stdout, "workspace %d %s\ntmp %s\ntmp %d %s\nworkspace %s\n", &ws, &wsErr, &tmpProbe, &tmp, &tmpErr, &wsProbe); err != nil || res.Status != api.StatusOK {
			t.Fatalf("%v: %+v", err, res)
		}
		// 64 MiB each, to the byte, on both runtimes.
		for _, fs := range []struct {
			name  string
			n     int64
			errno string
		}{{"/workspace", ws, wsErr}, {"/tmp", tmp, tmpErr}} {
			if fs.errno != "ENOSPC" || fs.n != 64<<20 {
				t.Errorf("%s took %d bytes (%.2f MiB) and stopped with %s; want 64 MiB, then ENOSPC", fs.name, fs.n, mib(fs.n), fs.errno)
			}
		}
		if tmpProbe != "writable" || wsProbe != "writable" {
			t.Errorf("with /workspace full, /tmp: %s; with a file removed, /workspace: %s", tmpProbe, wsProbe)
		}
	})
}

// fsizeProgram writes at the edge of RLIMIT_FSIZE in sparse files, which
// take no room in the tmpfs: only the limit stops them. Python ignores
// SIGXFSZ, so the writes fail with EFBIG.
const fsizeProgram = `
import errno, os, resource
print(*resource.getrlimit(resource.RLIMIT_FSIZE))
for d in ["/workspace", "/tmp"]:
    fd = os.open(f"{d}/sparse", os.O_WRONLY | os.O_CREAT, 0o644)
    print(d, "to the limit", os.pwrite(fd, b"xy", (64 << 20) - 1))
    for what, f in [("at the limit", lambda: os.pwrite(fd, b"x", 64 << 20)), ("grown", lambda: os.ftruncate(fd, (64 << 20) + 1))]:
        try:
            f()
            print(d, what, "ok")
        except OSError as e:
            print(d, what, errno.errorcode[e.errno])
    print(d, "size", os.fstat(fd).st_size)
`

func TestPromiseFileSizeLimit(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		// RLIMIT_FSIZE is the tmpfs size: 64 MiB. A write that starts
		// below it stops at it; one at it fails.
		res := execute(t, api.ExecuteRequest{Language: "python", Code: fsizeProgram, Runtime: rt})
		want := "67108864 67108864\n"
		for _, d := range []string{"/workspace", "/tmp"} {
			want += d + " to the limit 1\n" + d + " at the limit EFBIG\n" + d + " grown EFBIG\n" + d + " size 67108864\n"
		}
		if res.Stdout != want || res.Status != api.StatusOK {
			t.Errorf("stdout %q, want %q; stderr %q", res.Stdout, want, res.Stderr)
		}
		// A program that does not ignore SIGXFSZ is killed by it, and the
		// verdict says so, through the CLI too.
		r, code := ctlJSON(t, append(ctl, "-l", "bash", "-c", "exec dd if=/dev/zero of=/workspace/big bs=1 count=1 seek=67108864 status=none")...)
		if r.Status != api.StatusSignaled || r.Signal != "SIGXFSZ" || r.ExitCode != 128+25 || code != 128+25 {
			t.Errorf("dd past the limit: CLI exit %d, %+v", code, r)
		}
	})
}

// nofileProgram opens files until it cannot, and tries to raise the limit.
const nofileProgram = `
import errno, os, resource
print(*resource.getrlimit(resource.RLIMIT_NOFILE))
fds = []
try:
    while True:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    print(max(fds), len(fds), errno.errorcode[e.errno])
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    print("raised")
except (ValueError, OSError):
    print("not raised")
`

func TestPromiseOpenFilesLimit(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, _ []string) {
		res := execute(t, api.ExecuteRequest{Language: "python", Code: nofileProgram, Runtime: rt})
		var soft, hard, maxFD, n int
		var errno, raised string
		if _, err := fmt.Sscanf(res.Stdout, "%d %d\n%d %d %s\nnot %s\n", &soft, &hard, &maxFD, &n, &errno, &raised); err != nil {
			t.Fatalf("%v: stdout %q stderr %q", err, res.Stdout, res.Stderr)
		}
		// Descriptors are handed out lowest first: at EMFILE every one
		// below the limit is taken, and the last one given is 1023.
		if soft != 1024 || hard != 1024 || maxFD != 1023 || n < 1000 || errno != "EMFILE" || raised != "raised" {
			t.Errorf("RLIMIT_NOFILE %d/%d; opens stopped at fd %d after %d, with %s (want 1024/1024, fd 1023, EMFILE; the hard limit cannot be raised): %q",
				soft, hard, maxFD, n, errno, res.Stdout)
		}
	})
}

// spinProgram runs two processes that spin for 2.5 s of wall time each,
// and prints the CPU time they used, in ms, as the sandbox's kernel
// counted it.
const spinProgram = `
import os, resource, time
deadline = time.monotonic() + 2.5
for _ in range(2):
    if os.fork() == 0:
        while time.monotonic() < deadline:
            pass
        os._exit(0)
os.wait(); os.wait()
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(int((r.ru_utime + r.ru_stime) * 1000))
`

func TestPromiseCPUQuota(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, _ []string) {
		// A one-shot execution's cpu_ms is its sandbox's whole life, the
		// sandbox's start included, which under gVisor is about 0.2 s of
		// CPU before the execution's wall time begins: that is measured
		// first, on a program that does nothing.
		idle := execute(t, api.ExecuteRequest{Language: "python", Code: "pass", Runtime: rt})
		res := execute(t, api.ExecuteRequest{Language: "python", Code: spinProgram, Runtime: rt})
		inside, err := strconv.Atoi(strings.TrimSpace(res.Stdout))
		if err != nil || res.Status != api.StatusOK {
			t.Fatalf("%v: %+v", err, res)
		}
		t.Logf("cpu %d ms in %d ms of wall time (a program doing nothing: %d ms in %d ms); the spinners' own count %d ms",
			res.Usage.CPUMS, res.DurationMS, idle.Usage.CPUMS, idle.DurationMS, inside)
		// 1 CPU: two spinners get one CPU between them, whatever the
		// host has free. The bound is loose for the cgroup's own
		// accounting; without the quota, on two free cores, the ratio
		// is near 2.
		if float64(res.Usage.CPUMS-idle.Usage.CPUMS) > 1.2*float64(res.DurationMS) {
			t.Errorf("cpu %d ms (%d ms without the sandbox's start) in %d ms of wall time: more than the quota of 1 CPU",
				res.Usage.CPUMS, res.Usage.CPUMS-idle.Usage.CPUMS, res.DurationMS)
		}
		// The spinners ran: on a loaded host they get less than their
		// CPU, but more than python's start.
		if res.Usage.CPUMS < 200 || res.DurationMS < 2500 {
			t.Errorf("cpu %d ms in %d ms: the spinners did not spin", res.Usage.CPUMS, res.DurationMS)
		}
		if rt == "runc" && float64(inside) > 1.2*2500 {
			// gVisor's kernel counts its tasks' time itself, whatever the
			// host's quota: only runc's count is the host kernel's.
			t.Errorf("the spinners counted %d ms of CPU in 2.5 s: more than the quota of 1 CPU", inside)
		}
	})
}

func TestPromiseStderrCap(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		const prog = "import sys\nsys.stderr.write('e' * (3 << 20))\nsys.stdout.write('o' * 10)"
		res := execute(t, api.ExecuteRequest{Language: "python", Code: prog, Runtime: rt})
		if !res.StderrTruncated || len(res.Stderr) != 1<<20 || strings.Trim(res.Stderr, "e") != "" {
			t.Errorf("stderr: truncated %v, %d bytes", res.StderrTruncated, len(res.Stderr))
		}
		if res.StdoutTruncated || res.Stdout != "oooooooooo" || res.Status != api.StatusOK {
			t.Errorf("stdout: truncated %v, %q, status %s", res.StdoutTruncated, res.Stdout, res.Status)
		}
		// The CLI prints what was kept, and says it was cut.
		out, errOut, code := sandboxctl(t, "", append(append([]string{"execute"}, ctl...), "-l", "python", "-c", prog)...)
		kept, note, _ := strings.Cut(errOut, "sandboxctl:")
		if code != 0 || out != "oooooooooo" || len(kept) != 1<<20 || strings.Trim(kept, "e") != "" || note != " output truncated at the daemon's cap\n" {
			t.Errorf("CLI: exit %d, stdout %q, %d bytes of stderr then %q", code, out, len(kept), note)
		}
	})
}

func TestPromiseStreamedOutputCap(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, _ []string) {
		// 3 MiB on each stream, in writes of 64 KiB, interleaved.
		evs := streamEvents(t, api.ExecuteRequest{Language: "python", Runtime: rt, Code: `
import sys
for i in range(48):
    sys.stdout.write("o" * (64 << 10)); sys.stdout.flush()
    sys.stderr.write("e" * (64 << 10)); sys.stderr.flush()
sys.exit(3)`})
		var out, errb []byte
		var res api.ExecuteResult
		results := 0
		for _, e := range evs {
			switch e.ev.Type {
			case api.EventStdout:
				out = append(out, chunkData(t, e.ev)...)
			case api.EventStderr:
				errb = append(errb, chunkData(t, e.ev)...)
			case api.EventResult:
				results++
				json.Unmarshal(e.line, &res)
			case api.EventError:
				t.Fatalf("error event: %s", e.line)
			}
		}
		// What is streamed is what is kept: the first 1 MiB of each
		// stream, nothing past the cap.
		if len(out) != 1<<20 || strings.Trim(string(out), "o") != "" || len(errb) != 1<<20 || strings.Trim(string(errb), "e") != "" {
			t.Errorf("streamed %d bytes of stdout and %d of stderr, want 1 MiB each", len(out), len(errb))
		}
		if results != 1 || !res.StdoutTruncated || !res.StderrTruncated || res.Stdout != string(out) || res.Stderr != string(errb) ||
			res.Status != api.StatusFailed || res.ExitCode != 3 {
			t.Errorf("%d results; result: truncated %v %v, %d and %d bytes, status %s, exit %d",
				results, res.StdoutTruncated, res.StderrTruncated, len(res.Stdout), len(res.Stderr), res.Status, res.ExitCode)
		}
	})
}

// manyFiles returns n small files for a request, and as a directory for
// the CLI.
func manyFiles(t *testing.T, n int) ([]api.File, string) {
	dir := t.TempDir()
	files := make([]api.File, n)
	for i := range files {
		files[i] = api.File{Path: fmt.Sprintf("d/f%04d", i), Content: "x"}
		os.MkdirAll(filepath.Join(dir, "d"), 0o755)
		if err := os.WriteFile(filepath.Join(dir, files[i].Path), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return files, dir
}

func repeatArgs(n int, s string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func manyEnv(n, size int) map[string]string {
	env := map[string]string{}
	for i := range n {
		env[fmt.Sprintf("V%d", i)] = strings.Repeat("v", size)
	}
	return env
}

// TestPromiseRequestCaps: each cap of a request, at its bound (accepted,
// and the program sees all of it) and past it (400, or 413 for a body
// over the daemon's cap, with a message that names the cap), through the
// API and through the CLI (exit 125).
func TestPromiseRequestCaps(t *testing.T) {
	files1000, _ := manyFiles(t, 1000)
	files1001, dir1001 := manyFiles(t, 1001)
	half := strings.Repeat("x", 16<<20)
	countFiles := `n=0; for f in d/*; do n=$((n+1)); done; echo $n`
	for _, tc := range []struct {
		name string
		req  api.ExecuteRequest
		// Past the cap: the status and a part of the message; at it, the
		// program's output.
		status int
		msg    string
	}{
		{"code at 1 MiB", api.ExecuteRequest{Language: "bash", Code: "echo ok #" + strings.Repeat("x", (1<<20)-len("echo ok #"))}, 200, "ok\n"},
		{"code over 1 MiB", api.ExecuteRequest{Language: "bash", Code: strings.Repeat("#", (1<<20)+1)}, 400, "code is 1048577 bytes, more than the maximum of 1048576"},
		{"stdin at 1 MiB", api.ExecuteRequest{Language: "bash", Code: "wc -c", Stdin: strings.Repeat("i", 1<<20)}, 200, "1048576\n"},
		{"stdin over 1 MiB", api.ExecuteRequest{Language: "bash", Code: "wc -c", Stdin: strings.Repeat("i", (1<<20)+1)}, 400, "stdin is 1048577 bytes, more than the maximum of 1048576"},
		{"256 args", api.ExecuteRequest{Language: "bash", Code: "echo $#", Args: repeatArgs(256, "a")}, 200, "256\n"},
		{"257 args", api.ExecuteRequest{Language: "bash", Code: "echo $#", Args: repeatArgs(257, "a")}, 400, "257 args, more than the maximum of 256"},
		{"args over 64 KiB", api.ExecuteRequest{Language: "bash", Code: "echo $#", Args: repeatArgs(2, strings.Repeat("a", 32<<10+1))}, 400, "args are 65538 bytes, more than the maximum of 65536"},
		{"128 env", api.ExecuteRequest{Language: "bash", Code: "env | grep -c '^V[0-9]'", Env: manyEnv(128, 1)}, 200, "128\n"},
		{"129 env", api.ExecuteRequest{Language: "bash", Code: "true", Env: manyEnv(129, 1)}, 400, "129 env variables, more than the maximum of 128"},
		{"env over 64 KiB", api.ExecuteRequest{Language: "bash", Code: "true", Env: manyEnv(2, 32<<10)}, 400, "env is 65540 bytes, more than the maximum of 65536"},
		{"1000 files", api.ExecuteRequest{Language: "bash", Code: countFiles, Files: files1000}, 200, "1000\n"},
		{"1001 files", api.ExecuteRequest{Language: "bash", Code: countFiles, Files: files1001}, 400, "1001 files, more than the maximum of 1000"},
		{"files of 32 MiB", api.ExecuteRequest{Language: "bash", Code: "wc -c < a; wc -c < b",
			Files: []api.File{{Path: "a", Content: half}, {Path: "b", Content: half}}}, 200, "16777216\n16777216\n"},
		{"files over 32 MiB", api.ExecuteRequest{Language: "bash", Code: "true",
			Files: []api.File{{Path: "a", Content: half}, {Path: "b", Content: half + "x"}}}, 400, "files are more than the maximum of 33554432 bytes"},
		// 80 MiB of base64 (60 MiB of content) is a body over the
		// daemon's cap of 77 MiB: refused before it is read.
		{"a body over the cap", api.ExecuteRequest{Language: "bash", Code: "true",
			Files: []api.File{{Path: "a", Content: strings.Repeat("AAAA", 20<<20), Encoding: api.EncodingBase64}}}, 413, "request body is larger than"},
		{"33 globs", api.ExecuteRequest{Language: "bash", Code: "true", Collect: repeatArgs(33, "*")}, 400, "33 collect globs, more than the maximum of 32"},
		{"bad glob", api.ExecuteRequest{Language: "bash", Code: "true", Collect: []string{"out/[a-"}}, 400, `collect glob "out/[a-": syntax error in pattern`},
		{"glob out of the workspace", api.ExecuteRequest{Language: "bash", Code: "true", Collect: []string{"../*"}}, 400, `path "../*" leaves /workspace`},
		{"absolute glob", api.ExecuteRequest{Language: "bash", Code: "true", Collect: []string{"/etc/*"}}, 400, `path "/etc/*" must be relative to /workspace`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := json.Marshal(tc.req)
			send := func() (int, []byte) { return request(socket, "POST", "/v1/execute", string(b), nil) }
			if tc.status == 413 {
				send = func() (int, []byte) { return requestEarly(socket, "POST", "/v1/execute", string(b)) }
			}
			status, body := send()
			if tc.status != 200 {
				wantError(t, tc.name, status, body, tc.status, api.CodeInvalidArgument, tc.msg)
				return
			}
			var res api.ExecuteResult
			json.Unmarshal(body, &res)
			if status != 200 || res.Status != api.StatusOK || res.Stdout != tc.msg {
				t.Errorf("status %d, result %.300v, want stdout %q", status, res, tc.msg)
			}
		})
	}

	// The CLI's path: each refusal is the daemon's, exit 125, with the
	// daemon's message.
	dir := t.TempDir()
	bigStdin := filepath.Join(dir, "stdin")
	os.WriteFile(bigStdin, []byte(strings.Repeat("i", (1<<20)+1)), 0o644)
	bigFile := filepath.Join(dir, "big.bin")
	os.WriteFile(bigFile, []byte(strings.Repeat("x", 33<<20)), 0o644)
	// Not UTF-8: sent in base64, 80 MiB of it.
	hugeFile := filepath.Join(dir, "huge.bin")
	os.WriteFile(hugeFile, bytes.Repeat([]byte{0xff}, 60<<20), 0o644)
	var envFlags []string
	for i := range 129 {
		envFlags = append(envFlags, "--env", fmt.Sprintf("V%d=1", i))
	}
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"stdin over 1 MiB", []string{"-l", "bash", "-c", "wc -c", "--input-file", bigStdin}, "stdin is 1048577 bytes"},
		{"257 args", append([]string{"-l", "bash", "-c", "echo $#"}, repeatArgs(257, "a")...), "257 args"},
		{"129 env", append([]string{"-l", "bash", "-c", "true"}, envFlags...), "129 env variables"},
		{"1001 files", []string{"-l", "bash", "-d", dir1001, "--entrypoint", "d/f0000"}, "1001 files"},
		{"files over 32 MiB", []string{"-l", "bash", "-c", "true", "-f", bigFile}, "files are more than the maximum"},
		{"a body over the cap", []string{"-l", "bash", "-c", "true", "-f", hugeFile}, "request body is larger than"},
		{"bad glob", []string{"-l", "bash", "-c", "true", "--collect", "out/[a-"}, "syntax error in pattern"},
	} {
		t.Run("CLI "+tc.name, func(t *testing.T) {
			out, errOut, code := sandboxctl(t, "", append([]string{"execute"}, tc.args...)...)
			if code != 125 || out != "" || !strings.HasPrefix(errOut, "sandboxctl: ") || !strings.Contains(errOut, tc.msg) {
				t.Errorf("exit %d (want 125), stdout %.80q, stderr %.200q (want %q)", code, out, errOut, tc.msg)
			}
		})
	}
}

func TestPromiseExitCodeVersusSignal(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		// A program that exits 137 failed; one killed by SIGKILL was
		// signaled; the CLI exits 137 for both.
		r, code := ctlJSON(t, append(ctl, "-l", "bash", "-c", "echo before; exit 137")...)
		if r.Status != api.StatusFailed || r.ExitCode != 137 || r.Signal != "" || r.OOMKilled || r.Stdout != "before\n" || code != 137 {
			t.Errorf("exit 137: CLI exit %d, %+v", code, r)
		}
		r, code = ctlJSON(t, append(ctl, "-l", "bash", "-c", "echo before; kill -9 $$; echo after")...)
		if r.Status != api.StatusSignaled || r.ExitCode != 137 || r.Signal != "SIGKILL" || r.OOMKilled || r.Stdout != "before\n" || code != 137 {
			t.Errorf("kill -9 $$: CLI exit %d, %+v", code, r)
		}
		// In text mode too, streamed or not.
		for _, mode := range [][]string{nil, {"--no-stream"}} {
			for _, prog := range []string{"exit 137", "kill -9 $$"} {
				_, errOut, code := sandboxctl(t, "", append(append(append([]string{"execute"}, ctl...), mode...), "-l", "bash", "-c", prog)...)
				if code != 137 || errOut != "" {
					t.Errorf("%q %v: exit %d, stderr %q", prog, mode, code, errOut)
				}
			}
		}
	})
}

func TestPromiseCompileError(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		const prog = "int main(void) { return nope; }"
		r, code := ctlJSON(t, append(ctl, "-l", "c", "-c", prog)...)
		// gcc exits 1; the CLI exits with the compiler's code.
		if r.Status != api.StatusCompileError || r.ExitCode != 1 || r.Runtime != rt || !strings.Contains(r.Stderr, "nope") || !strings.Contains(r.Stderr, "undeclared") || code != 1 {
			t.Errorf("CLI exit %d, %+v", code, r)
		}
		out, errOut, code := sandboxctl(t, "", append(append([]string{"execute"}, ctl...), "-l", "c", "-c", prog)...)
		if code != 1 || out != "" || !strings.Contains(errOut, "undeclared") {
			t.Errorf("text: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})
}

// bombProgram writes a file to collect, then fills the memory.
const bombProgram = "open('before.txt', 'w').write('written before the bomb')\nx = []\nwhile True: x.append(bytearray(8 << 20))"

// TestPromiseSessionOOM: a memory bomb in a session is oom_killed on both
// runtimes. Under runc the kernel kills the program and the session goes
// on; under gVisor, whose kernel holds the programs' memory, it ends the
// whole sandbox: the session is dead, and the next execution in it gets
// 409 until it is deleted.
func TestPromiseSessionOOM(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		id := newSession(t, append([]string{"-l", "python", "--memory", "96m"}, ctl...)...)
		b, _ := json.Marshal(api.ExecuteRequest{SessionID: id, Code: bombProgram, Collect: []string{"*.txt"}})
		status, body := request(socket, "POST", "/v1/execute", string(b), nil)
		var res api.ExecuteResult
		if err := json.Unmarshal(body, &res); err != nil || status != 200 || res.Status != api.StatusOOMKilled || !res.OOMKilled || res.Signal != "SIGKILL" {
			t.Fatalf("the bomb: %d %s", status, body)
		}
		status, body = request(socket, "GET", "/v1/sessions/"+id, "", nil)
		var s api.Session
		json.Unmarshal(body, &s)
		switch rt {
		case "runc":
			if len(res.Files) != 1 || res.Files[0].Content != "written before the bomb" || res.Message != "" {
				t.Errorf("collected after the bomb: %+v, message %q", res.Files, res.Message)
			}
			if status != 200 || s.State != api.SessionRunning {
				t.Fatalf("the session after the bomb: %d %s", status, body)
			}
			if r := execute(t, api.ExecuteRequest{SessionID: id, Code: "print(open('before.txt').read())"}); r.Stdout != "written before the bomb\n" {
				t.Errorf("the next execution: %+v", r)
			}
		case "runsc":
			if len(res.Files) != 0 || !strings.Contains(res.Message, "no files were collected") {
				t.Errorf("collected after the sandbox ended: %+v, message %q", res.Files, res.Message)
			}
			if status != 200 || s.State != api.SessionDead {
				t.Fatalf("the session after the bomb: %d %s", status, body)
			}
			st, b := request(socket, "POST", "/v1/execute", `{"session_id":"`+id+`","code":"print(1)"}`, nil)
			wantError(t, "execute in the dead session", st, b, 409, api.CodeFailedPrecondition, "is dead")
			_, errOut, code := sandboxctl(t, "", "execute", "--session", id, "-c", "print(1)")
			if code != 125 || !strings.Contains(errOut, "is dead") {
				t.Errorf("CLI in the dead session: exit %d, %q", code, errOut)
			}
			// Dead until deleted: never replaced.
			if out, _, _ := sandboxctl(t, "", "session", "show", id); !strings.Contains(out, "dead") {
				t.Errorf("session show: %q", out)
			}
			if st, b := request(socket, "DELETE", "/v1/sessions/"+id, "", nil); st != 204 {
				t.Errorf("delete the dead session: %d %s", st, b)
			}
		}
	})
}

// TestPromiseCollectAfterOOM: a one-shot execution with collect whose
// program meets the memory limit gets its oom_killed result, with the
// files when the sandbox outlived the program (runc) and without them,
// saying so, when the kernel ended the whole sandbox (gVisor).
func TestPromiseCollectAfterOOM(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		b, _ := json.Marshal(api.ExecuteRequest{Language: "python", Code: bombProgram, MemoryBytes: 64 << 20, Collect: []string{"*.txt"}, Runtime: rt})
		status, body := request(socket, "POST", "/v1/execute", string(b), nil)
		var res api.ExecuteResult
		if err := json.Unmarshal(body, &res); err != nil || status != 200 || res.Status != api.StatusOOMKilled || !res.OOMKilled {
			t.Fatalf("%d %s", status, body)
		}
		dir := t.TempDir()
		_, errOut, code := sandboxctl(t, "", append(append([]string{"execute"}, ctl...), "-l", "python", "--memory", "64m", "-c", bombProgram,
			"--collect", "*.txt", "--collect-dir", dir)...)
		got, _ := os.ReadFile(filepath.Join(dir, "before.txt"))
		switch rt {
		case "runc":
			if len(res.Files) != 1 || res.Files[0].Path != "before.txt" || res.Files[0].Content != "written before the bomb" || res.Message != "" {
				t.Errorf("files %+v, message %q", res.Files, res.Message)
			}
			if code != 137 || string(got) != "written before the bomb" {
				t.Errorf("CLI: exit %d, collected %q, stderr %q", code, got, errOut)
			}
		case "runsc":
			if len(res.Files) != 0 || !strings.Contains(res.Message, "no files were collected") {
				t.Errorf("files %+v, message %q", res.Files, res.Message)
			}
			if code != 137 || got != nil || !strings.Contains(errOut, "no files were collected") {
				t.Errorf("CLI: exit %d, collected %q, stderr %q", code, got, errOut)
			}
		}
	})
}

// TestPromiseContainerdDown: with containerd stopped, the daemon says it
// is unhealthy and refuses executions with 503 unavailable (no pool and
// no cell reuse, so that an execution must create its sandbox: a used
// cell serves its uid without containerd, as a session does); once
// containerd is back, it serves again.
func TestPromiseContainerdDown(t *testing.T) {
	dir := testDir(t, "sbxd")
	ctd, err := startContainerd(filepath.Join(dir, "ctd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctd.stop() }) // after the daemon's stop: it cleans up through containerd
	d := startDaemon(t, daemonOpts{dir: dir, config: "[pool]\nsize = 0\nreuse = 1\n", containerd: ctd.addr})
	sock := d.sock
	const req = `{"language":"bash","code":"echo up"}`
	if status, body := request(sock, "POST", "/v1/execute", req, nil); status != 200 || !strings.Contains(string(body), `"up\n"`) {
		t.Fatalf("with containerd: %d %s", status, body)
	}
	ctd.stop()
	status, body := request(sock, "GET", "/v1/health", "", nil)
	var h api.Health
	if json.Unmarshal(body, &h) != nil || status != 503 || h.Status != "unavailable" || h.Containerd != "not answering" {
		t.Errorf("health with containerd stopped: %d %s", status, body)
	}
	start := time.Now()
	status, body = request(sock, "POST", "/v1/execute", req, nil)
	wantError(t, "execute with containerd stopped", status, body, 503, api.CodeUnavailable, "containerd does not answer")
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("the refusal took %v", d)
	}
	_, errOut, code := cli{sock: sock}.run(t, "execute", "-l", "bash", "-c", "echo up")
	if code != 125 || !strings.Contains(errOut, "containerd does not answer") {
		t.Errorf("CLI with containerd stopped: exit %d, %q", code, errOut)
	}
	ctd, err = startContainerd(filepath.Join(dir, "ctd"))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		status, body = request(sock, "POST", "/v1/execute", req, nil)
		if status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd is back, the daemon still answers %d %s", status, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if status, body := request(sock, "GET", "/v1/health", "", nil); status != 200 {
		t.Errorf("health with containerd back: %d %s", status, body)
	}
	if err := d.stop(); err != nil {
		t.Error(err)
	}
}

func TestPromiseMissingSessionFile(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		id := newSession(t, append([]string{"-l", "bash"}, ctl...)...)
		execute(t, api.ExecuteRequest{SessionID: id, Code: "mkdir -p there && echo x > there/file"})
		for _, p := range []string{"missing.txt", "there/missing.txt", "nowhere/missing.txt"} {
			status, body := request(socket, "GET", "/v1/sessions/"+id+"/files/"+p, "", nil)
			wantError(t, "download "+p, status, body, 404, api.CodeNotFound, p+": no such file")
			out, errOut, code := sandboxctl(t, "", "session", "download", id, p, "-")
			if code != 1 || out != "" || !strings.Contains(errOut, "no such file") {
				t.Errorf("CLI download %s: exit %d, %q %q", p, code, out, errOut)
			}
		}
		// A file that is there comes, so the 404 is about the path.
		if status, body := request(socket, "GET", "/v1/sessions/"+id+"/files/there/file", "", nil); status != 200 || string(body) != "x\n" {
			t.Errorf("download there/file: %d %q", status, body)
		}
	})
}

// curlAs sends a request as uid with curl, and returns the status and
// body.
func curlAs(t *testing.T, uid uint32, sock, method, path, body string) (int, []byte) {
	t.Helper()
	args := []string{"-sS", "--unix-socket", sock, "-X", method, "-w", "\n%{http_code}"}
	if body != "" {
		args = append(args, "-H", "Content-Type: application/json", "-d", body)
	}
	cmd := exec.Command("curl", append(args, "http://sandboxd"+path)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl as uid %d: %v: %s", uid, err, out)
	}
	i := strings.LastIndexByte(string(out), '\n')
	status, _ := strconv.Atoi(string(out[i+1:]))
	return status, out[:i]
}

// TestPromiseImagesAreForRoot: pulling and removing images is for root;
// another uid that may use the API gets 403, and may still list them.
func TestPromiseImagesAreForRoot(t *testing.T) {
	sock := startDaemon(t, hostileDaemon("[pool]\nsize = 0\n")).sock
	const ref = "docker.io/library/busybox:latest"
	status, body := curlAs(t, 65534, sock, "POST", "/v1/images/pull", `{"ref":"`+ref+`"}`)
	wantError(t, "pull as uid 65534", status, body, 403, api.CodePermissionDenied, "pulling images is for root")
	status, body = curlAs(t, 65534, sock, "DELETE", "/v1/images/"+ref, "")
	wantError(t, "rm as uid 65534", status, body, 403, api.CodePermissionDenied, "removing images is for root")
	if status, body := curlAs(t, 65534, sock, "GET", "/v1/images", ""); status != 200 || !strings.Contains(string(body), `"images"`) {
		t.Errorf("list as uid 65534: %d %s", status, body)
	}
	for _, args := range [][]string{{"image", "pull", ref}, {"image", "rm", ref}} {
		if out, code := asUser(sock, args...); code != 1 || !strings.Contains(out, "is for root") {
			t.Errorf("sandboxctl %v as uid 65534: exit %d, %q", args, code, out)
		}
	}
	// Root is not refused: the image is not there, so rm says 404.
	if _, errOut, code := (cli{sock: sock}).run(t, "image", "rm", ref); code != 1 || !strings.Contains(errOut, "no image") {
		t.Errorf("rm as root: exit %d, %q", code, errOut)
	}
}

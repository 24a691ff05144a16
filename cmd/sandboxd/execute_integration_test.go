//go:build integration

package main_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon"
	"github.com/sandboxd/sandboxd/daemon/api"
)

func TestExecuteFromFileInfersLanguage(t *testing.T) {
	f := filepath.Join(t.TempDir(), "prog.py")
	os.WriteFile(f, []byte("import sys\nprint('args', sys.argv[1:])\n"), 0o644)
	out, errOut, code := sandboxctl(t, "", "execute", "-c", f, "a", "b c")
	if code != 0 || out != "args ['a', 'b c']\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// ociRuntimes are the OCI runtimes the core behaviour is tested on: runc,
// the default, and runsc (gVisor), asked for by each request.
var ociRuntimes = []string{"runc", "runsc"}

// forEachRuntime runs a test on each OCI runtime; ctl holds the sandboxctl
// flags that choose it.
func forEachRuntime(t *testing.T, test func(t *testing.T, rt string, ctl []string)) {
	for _, rt := range ociRuntimes {
		t.Run(rt, func(t *testing.T) { test(t, rt, []string{"--runtime", rt}) })
	}
}

func TestStdinRoundTrip(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		const prog = "import sys\ndata = sys.stdin.read()\nsys.stdout.write(data[::-1])"
		run := func(stdin string, args ...string) (string, int) {
			out, _, code := sandboxctl(t, stdin, append(append([]string{"execute"}, ctl...), args...)...)
			return out, code
		}
		if out, code := run("", "-l", "py", "-c", prog, "-i", "abc\n"); code != 0 || out != "\ncba" {
			t.Fatalf("-i: exit %d, stdout %q", code, out)
		}
		if out, code := run("piped input", "-l", "python", "-c", prog, "-i", "-"); code != 0 || out != "tupni depip" {
			t.Fatalf("-i -: exit %d, stdout %q", code, out)
		}
		f := filepath.Join(t.TempDir(), "in")
		os.WriteFile(f, []byte("from file"), 0o644)
		if out, code := run("", "-l", "python", "-c", prog, "--input-file", f); code != 0 || out != "elif morf" {
			t.Fatalf("--input-file: exit %d, stdout %q", code, out)
		}
		// Code from standard input.
		if out, code := run("print(6*7)", "-l", "python", "-c", "-"); code != 0 || out != "42\n" {
			t.Fatalf("-c -: exit %d, stdout %q", code, out)
		}
		res := execute(t, api.ExecuteRequest{Language: "bash", Code: "read a; read b; echo $b $a", Stdin: "1\n2\n", Runtime: rt})
		if res.Stdout != "2 1\n" || res.Runtime != rt {
			t.Fatalf("API: %+v", res)
		}
	})
}

func TestExitCodesAndStreams(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		run := func(args ...string) (string, string, int) {
			var flags []string
			for len(args) > 0 && args[0] != "execute" {
				flags, args = append(flags, args[0]), args[1:]
			}
			return sandboxctl(t, "", append(append(append(flags, "execute"), ctl...), args[1:]...)...)
		}
		out, errOut, code := run("execute", "-l", "bash", "-c", "echo out; echo err >&2; exit 7")
		if code != 7 || out != "out\n" || errOut != "err\n" {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		res := execute(t, api.ExecuteRequest{Language: "python", Code: "sum(range(3000000))", Runtime: rt})
		if res.Usage.CPUMS <= 0 || res.Usage.MemoryPeakBytes <= 1<<20 || res.DurationMS <= 0 {
			t.Errorf("usage: %+v, duration %dms", res.Usage, res.DurationMS)
		}
		res = execute(t, api.ExecuteRequest{Language: "python", Code: "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", Runtime: rt})
		if res.Status != api.StatusSignaled || res.Signal != "SIGSEGV" {
			t.Fatalf("self-signaled: status %q signal %q", res.Status, res.Signal)
		}
		stdout, _, code := run("-o", "json", "execute", "-l", "bash", "-c", "exit 3")
		var r api.ExecuteResult
		if err := json.Unmarshal([]byte(stdout), &r); err != nil || code != 3 || r.Status != api.StatusFailed || r.ExitCode != 3 || r.Runtime != rt {
			t.Fatalf("json: exit %d, %v, %q", code, err, stdout)
		}
		_, errOut, code = run("execute", "-l", "bash", "-c", "true", "-v")
		if code != 0 || !strings.Contains(errOut, "status=ok") {
			t.Fatalf("-v: exit %d, stderr %q", code, errOut)
		}
	})
}

func TestCompileError(t *testing.T) {
	res := execute(t, api.ExecuteRequest{Language: "c", Code: "int main(void) { return nope; }"})
	if res.Status != api.StatusCompileError || res.Phase != api.PhaseCompile || res.ExitCode == 0 || !strings.Contains(res.Stderr, "nope") {
		t.Fatalf("status %q exit %d stderr %q", res.Status, res.ExitCode, res.Stderr)
	}
}

// sleepersLeft is a program that lists, from inside a sandbox, the sleep
// processes still there: under gVisor they are not host processes, so
// pgrep on the host cannot see them.
const sleepersLeft = `for p in /proc/[0-9]*; do c=$(tr '\0' ' ' < $p/cmdline 2>/dev/null); case "$c" in "sleep 42"*) echo "left: $c";; esac; done; echo checked`

// sandboxLeft lists what of sandbox id, of containerd namespace ns, runs on
// the host: the processes of its cgroup (under runc, the sandboxed
// processes; under gVisor, its kernel, gofer and the host stubs of the
// processes it runs) and those whose command line names it (its shim;
// gVisor's sandbox and gofer). Under gVisor a sandboxed process is no host
// process that pgrep could find: it is gone when these are.
func sandboxLeft(ns, id string) []string {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", ns, id)) // cgroup v1
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", ns, id)); err == nil {
		dirs = append(dirs, filepath.Join("/sys/fs/cgroup", ns, id)) // v2
	}
	pids := map[string]bool{}
	for _, dir := range dirs {
		filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.Name() == "cgroup.procs" {
				b, _ := os.ReadFile(p)
				for _, pid := range strings.Fields(string(b)) {
					pids[pid] = true
				}
			}
			return nil
		})
	}
	out, _ := exec.Command("pgrep", "-f", id).Output()
	for _, pid := range strings.Fields(string(out)) {
		pids[pid] = true
	}
	var left []string
	for pid := range pids {
		cmdline, err := os.ReadFile("/proc/" + pid + "/cmdline")
		if err != nil {
			continue // gone meanwhile
		}
		what := strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
		if what == "" { // gVisor's stubs have none
			comm, _ := os.ReadFile("/proc/" + pid + "/comm")
			what = "[" + strings.TrimSpace(string(comm)) + "]"
		}
		left = append(left, pid+" "+what)
	}
	slices.Sort(left)
	return left
}

// sandboxWatch finds, while executions run, the sandboxes that run them:
// a sandbox's files dir holds a dir named after each execution running in
// it, for as long as it runs (daemon/execute.go), but for a cell, whose
// execution's code goes to its jail with the request: a cell runs one
// while a process of its cgroup is a child of a jail's init
// (jailedRunning). It notes what
// sandboxLeft sees of each sandbox when it is first seen, so that a check
// that nothing is left later is known to look where the processes were.
type sandboxWatch struct {
	stop chan struct{}
	done chan map[string]watchedSandbox
}

type watchedSandbox struct {
	executions []string // ids
	running    []string // sandboxLeft, once seen
}

// watchSandboxes watches the sandboxes of the daemon with state dir state
// and containerd namespace ns until end is called.
func watchSandboxes(state, ns string) *sandboxWatch {
	w := &sandboxWatch{stop: make(chan struct{}), done: make(chan map[string]watchedSandbox, 1)}
	go func() {
		seen := map[string]watchedSandbox{}
		for {
			note := func(id, execution string) {
				s, ok := seen[id]
				if !ok {
					s.running = sandboxLeft(ns, id)
				}
				if !slices.Contains(s.executions, execution) {
					s.executions = append(s.executions, execution)
				}
				seen[id] = s
			}
			boxes, _ := os.ReadDir(filepath.Join(state, "sandboxes"))
			for _, b := range boxes {
				execs, _ := os.ReadDir(filepath.Join(state, "sandboxes", b.Name()))
				for _, e := range execs {
					note(b.Name(), e.Name())
				}
			}
			for id, execution := range jailedRunning(ns) {
				note(id, execution)
			}
			select {
			case <-w.stop:
				w.done <- seen
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return w
}

// end stops the watch and returns the one sandbox it saw running an
// execution.
func (w *sandboxWatch) end(t *testing.T) (string, watchedSandbox) {
	t.Helper()
	close(w.stop)
	seen := <-w.done
	if len(seen) != 1 {
		t.Fatalf("sandboxes seen running executions: %+v, want the one of this execution", seen)
	}
	for id, s := range seen {
		return id, s
	}
	return "", watchedSandbox{}
}

// checkSandboxGone checks that nothing of a sandbox a watch saw is left on
// the host once it is torn down: a one-shot sandbox goes after its result
// is sent. That the sandbox's processes were seen while it ran makes the
// check one that can fail.
func checkSandboxGone(t *testing.T, ns, id string, s watchedSandbox) {
	t.Helper()
	if len(s.running) == 0 {
		t.Fatalf("no process of sandbox %s was seen while it ran: a check that none is left would prove nothing", id)
	}
	var left []string
	if !waitFor(30*time.Second, func() bool { left = executionLeft(ns, id); return len(left) == 0 }) {
		t.Errorf("processes of sandbox %s (running %v) left 30s after its execution:\n%s", id, s.executions, strings.Join(left, "\n"))
	}
}

// executionLeft is what sandboxLeft sees of a sandbox, less what a cell
// kept for its uid's next execution holds between executions: its shim,
// its agent and the init of the jail built for the next execution. A
// cell's jail ends with its execution; a sandbox that is not a cell goes
// whole.
func executionLeft(ns, id string) []string {
	return slices.DeleteFunc(sandboxLeft(ns, id), func(p string) bool {
		_, what, _ := strings.Cut(p, " ")
		return strings.HasPrefix(what, "/usr/bin/containerd-shim-runc-v2 ") || what == "/.sandboxd/init" || what == "sandboxd-jail"
	})
}

func TestTimeoutKillsEverything(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		// A double-forked, session-leading sleeper must die with the run.
		prog := "(setsid sleep 4242 &) ; (sleep 4243 &) ; nohup sleep 4244 >/dev/null 2>&1 & echo started; sleep 4245"
		start := time.Now()
		w := watchSandboxes(stateDir, "sandboxd")
		out, errOut, code := sandboxctl(t, "", append(append([]string{"execute"}, ctl...), "-l", "bash", "-c", prog, "-t", "1")...)
		id, sb := w.end(t)
		if code != 124 || out != "started\n" {
			t.Fatalf("exit %d (want 124), stdout %q, stderr %q", code, out, errOut)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("a 1s timeout took %v", d)
		}
		if rt == "runc" { // gVisor's processes are none of the host's
			for _, s := range []string{"sleep 4242", "sleep 4243", "sleep 4244", "sleep 4245"} {
				if pgrep(s) {
					t.Errorf("%q outlived its execution", s)
				}
			}
		}
		checkSandboxGone(t, "sandboxd", id, sb)
		res := execute(t, api.ExecuteRequest{Language: "bash", Code: "sleep 10", TimeoutMS: 500, Runtime: rt})
		if !res.TimedOut || res.Status != api.StatusTimedOut {
			t.Fatalf("API: %+v", res)
		}
		// In a session the sandbox stays: what the execution started must
		// be gone from inside it too.
		sess := newSession(t, append([]string{"-l", "bash"}, ctl...)...)
		res = execute(t, api.ExecuteRequest{SessionID: sess, Code: prog, TimeoutMS: 1000})
		if !res.TimedOut || res.Stdout != "started\n" {
			t.Fatalf("session: %+v", res)
		}
		if res = execute(t, api.ExecuteRequest{SessionID: sess, Code: sleepersLeft}); res.Stdout != "checked\n" || res.Runtime != rt {
			t.Fatalf("in the session after the timeout: %+v", res)
		}
	})
}

func TestProcessesDieWithNormalExit(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		// The second of sleep lets the watch see which sandbox runs it.
		w := watchSandboxes(stateDir, "sandboxd")
		res := execute(t, api.ExecuteRequest{Language: "bash", Code: "(setsid sleep 4246 &); sleep 1; echo done", Runtime: rt})
		id, sb := w.end(t)
		if res.Status != api.StatusOK || res.Stdout != "done\n" {
			t.Fatalf("%+v", res)
		}
		if rt == "runc" && pgrep("sleep 4246") { // gVisor's processes are none of the host's
			t.Error("a daemonized child outlived its execution")
		}
		if !slices.Contains(sb.executions, res.ID) {
			t.Fatalf("the watch saw executions %v in %s, not %s", sb.executions, id, res.ID)
		}
		checkSandboxGone(t, "sandboxd", id, sb)
		sess := newSession(t, append([]string{"-l", "bash"}, ctl...)...)
		execute(t, api.ExecuteRequest{SessionID: sess, Code: "(setsid sleep 4247 &); echo done"})
		if res = execute(t, api.ExecuteRequest{SessionID: sess, Code: sleepersLeft}); res.Stdout != "checked\n" {
			t.Fatalf("in the session: %q %q", res.Stdout, res.Stderr)
		}
	})
}

func TestMemoryBomb(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		out, _, code := sandboxctl(t, "", append(append([]string{"-o", "json", "execute"}, ctl...), "-l", "python", "--memory", "64m",
			"-c", "x = []\nwhile True: x.append(bytearray(8 << 20))")...)
		var res api.ExecuteResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatal(err, out)
		}
		if code != 137 || !res.OOMKilled || res.Status != api.StatusOOMKilled {
			t.Fatalf("exit %d, result %+v", code, res)
		}
		// The peak may pass the limit by a few pages: the kernel charges
		// what a task being OOM-killed still allocates past the limit (a
		// forced charge), and the peak counts it (4 KiB once under gVisor).
		if res.Usage.MemoryPeakBytes > 64<<20+256<<10 || res.Usage.MemoryPeakBytes < 32<<20 {
			t.Errorf("memory peak %d, want near the 64 MiB limit", res.Usage.MemoryPeakBytes)
		}
		// The daemon goes on serving.
		if r := execute(t, api.ExecuteRequest{Language: "python", Code: "print('alive')", Runtime: rt}); r.Stdout != "alive\n" {
			t.Fatalf("after the bomb: %+v", r)
		}
	})
}

func TestForkBombContained(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, _ []string) {
		// The tasks are counted with bash's own glob and arithmetic: no fork
		// is needed, so the count is taken while the bomb still holds
		// every task it could make.
		res := execute(t, api.ExecuteRequest{Language: "bash", Code: `bomb() { bomb | bomb & }; bomb; sleep 3
n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo "tasks $n"`, TimeoutMS: 20000, Runtime: rt})
		// The task limit is the pids cgroup under runc, RLIMIT_NPROC in
		// gVisor's kernel, which holds the programs' tasks.
		switch {
		case res.Status == api.StatusOK:
			// The bomb met the task limit: forks failed with EAGAIN, and
			// the processes it could make were at most the limit.
			var n int
			if _, err := fmt.Sscanf(res.Stdout, "tasks %d", &n); err != nil || n > 128 {
				t.Fatalf("the bomb's tasks: %q", res.Stdout)
			}
			if !strings.Contains(res.Stderr, "Resource temporarily unavailable") {
				t.Fatalf("no fork failed with EAGAIN: %q", res.Stderr)
			}
		case res.Signal == "SIGKILL" && strings.Contains(res.Stderr, "Resource temporarily unavailable"):
			// The forks met the task limit, and the kernel then killed
			// the shell: 128 shells can also reach the memory limit.
		default:
			t.Fatalf("the fork bomb was not contained: %+v", res)
		}
		// The pids limit held: the host still forks and the daemon still runs.
		if r := execute(t, api.ExecuteRequest{Language: "bash", Code: "echo fine", Runtime: rt}); r.Stdout != "fine\n" {
			t.Fatalf("after the fork bomb: %+v", r)
		}
		res = execute(t, api.ExecuteRequest{Language: "python", Code: `
import os
n = 0
try:
    while True:
        if os.fork() == 0:
            import time; time.sleep(30)
        n += 1
except OSError as e:
    print("stopped at", n, e.errno)
`, TimeoutMS: 20000, Runtime: rt})
		if rt == "runsc" && res.Status == api.StatusOOMKilled && res.Signal == "SIGKILL" {
			// gVisor's memory is the programs': python's forks fill it
			// before the task limit, and the kernel ends the whole sandbox.
			return
		}
		// The limit is 128 tasks in all, the agent's threads and python
		// among them: the forks stop short of it, with EAGAIN.
		var n, errno int
		if _, err := fmt.Sscanf(res.Stdout, "stopped at %d %d", &n, &errno); err != nil || n < 100 || n >= 128 || errno != 11 {
			t.Fatalf("forks stopped at %d with errno %d (want 100 to 127, EAGAIN): %q %q", n, errno, res.Stdout, res.Stderr)
		}
	})
}

func TestOutputCap(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, _ []string) {
		res := execute(t, api.ExecuteRequest{Language: "python", Code: "import sys\nsys.stdout.write('x' * (3 << 20))\nsys.stderr.write('e' * 10)", Runtime: rt})
		if !res.StdoutTruncated || len(res.Stdout) != 1<<20 || strings.Trim(res.Stdout, "x") != "" {
			t.Fatalf("stdout: truncated %v, %d bytes", res.StdoutTruncated, len(res.Stdout))
		}
		if res.StderrTruncated || res.Stderr != "eeeeeeeeee" || res.Status != api.StatusOK {
			t.Fatalf("stderr: %+v", res.Stderr)
		}
	})
}

func TestInvalidUTF8(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		want := []byte{0xff, 0xfe, 0x00, 'a', 0xc3, 0x28, '\n'}
		prog := "import sys\nsys.stdout.buffer.write(bytes([0xff, 0xfe, 0x00, 0x61, 0xc3, 0x28, 0x0a]))"
		res := execute(t, api.ExecuteRequest{Language: "python", Code: prog, Runtime: rt})
		got, err := base64.StdEncoding.DecodeString(res.Stdout)
		if res.StdoutEncoding != api.EncodingBase64 || err != nil || !bytes.Equal(got, want) {
			t.Fatalf("encoding %q, stdout %q", res.StdoutEncoding, res.Stdout)
		}
		out, _, code := sandboxctl(t, "", append(append([]string{"execute"}, ctl...), "-l", "python", "-c", prog)...)
		if code != 0 || out != string(want) {
			t.Fatalf("CLI: exit %d, stdout %q", code, out)
		}
	})
}

// noNetworkProgram lists the sandbox's interfaces and tries to reach the
// host's port, a private address and a public one.
const noNetworkProgram = `
import os, socket
print(sorted(os.listdir("/sys/class/net")))
for host in ["127.0.0.1", "10.0.0.1", "1.1.1.1"]:
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((host, %d))
        print("connected", host)
    except OSError as e:
        print("refused", host)
`

func TestNoNetwork(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	forEachRuntime(t, func(t *testing.T, rt string, _ []string) {
		res := execute(t, api.ExecuteRequest{Language: "python", Code: fmt.Sprintf(noNetworkProgram, port), Runtime: rt})
		if res.Stdout != "['lo']\nrefused 127.0.0.1\nrefused 10.0.0.1\nrefused 1.1.1.1\n" {
			t.Fatalf("stdout %q stderr %q", res.Stdout, res.Stderr)
		}
	})
}

// identityProgram shows who a sandboxed program is and what it may do.
const identityProgram = "grep -E '^(Uid|Gid|CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; id -u"

func TestIdentity(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, _ []string) {
		res := execute(t, api.ExecuteRequest{Language: "bash", Code: identityProgram, Runtime: rt})
		want := []string{"Uid:\t65534\t65534\t65534\t65534", "Gid:\t65534\t65534\t65534\t65534",
			"CapEff:\t0000000000000000", "CapPrm:\t0000000000000000", "CapBnd:\t0000000000000000",
			"Seccomp:\t2", "\n65534\n"}
		if rt == "runc" {
			// gVisor's /proc does not show the flag (its kernel sets it).
			want = append(want, "NoNewPrivs:\t1")
		}
		for _, w := range want {
			if !strings.Contains(res.Stdout, w) {
				t.Errorf("missing %q in:\n%s", w, res.Stdout)
			}
		}
		// The seccomp profile's refusals: TestSeccompRefusedSyscalls.
	})
}

func TestNoHostSecrets(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, _ []string) {
		// Globs, not ls: Debian 12's gVisor fails GNU ls's statx flags.
		res := execute(t, api.ExecuteRequest{Language: "bash", Code: `
cd /etc && echo *
test -e /etc/shadow && echo "shadow visible"
find / -xdev -path /usr -prune -o -type s -print 2>/dev/null | head
find / -path /usr -prune -o -path /proc -prune -o -type s -path '*containerd*' -print 2>/dev/null | head
find /usr -maxdepth 4 -type s 2>/dev/null | head
test -e /run && echo "run exists"
test -e /root && echo "root exists"
test -e /var/lib/sandboxd && echo "state visible"
env | sort | tr '\n' ' '
`, Env: map[string]string{"MINE": "1"}, Runtime: rt, TimeoutMS: 60000})
		if res.Status != api.StatusOK {
			t.Fatalf("the probe did not finish: %+v", res)
		}
		first, rest, _ := strings.Cut(res.Stdout, "\n")
		// The configuration of the languages present (Java's, R's...) is
		// mounted: what the built-in table names, and nothing else.
		var kept []string
		for _, f := range strings.Fields(first) {
			if !slices.ContainsFunc(daemon.Languages, func(l daemon.LanguageSpec) bool {
				return slices.ContainsFunc(l.HostPaths, func(g string) bool { m, _ := filepath.Match(g, "/etc/"+f); return m })
			}) {
				kept = append(kept, f)
			}
		}
		first = strings.Join(kept, " ") + " "
		if first != "group hostname hosts nsswitch.conf passwd " {
			t.Errorf("/etc holds %q", first)
		}
		for _, bad := range []string{"shadow visible", ".sock", "run exists", "root exists", "state visible", "SANDBOXD", "INVOCATION_ID"} {
			if strings.Contains(rest, bad) {
				t.Errorf("found %q in:\n%s", bad, rest)
			}
		}
		if !strings.Contains(rest, "MINE=1") || !strings.Contains(rest, "HOME=/workspace") {
			t.Errorf("environment: %s", rest)
		}
	})
}

// readOnlyProgram tries to write everywhere but /tmp and /workspace.
const readOnlyProgram = `
for f in /x /usr/x /etc/x /sandbox/x /bin/x; do touch $f 2>/dev/null && echo "wrote $f"; done
touch /tmp/x && echo tmp ok
touch /workspace/x && echo workspace ok
pwd
`

func TestReadOnlyRootAndTmpfs(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, _ []string) {
		res := execute(t, api.ExecuteRequest{Language: "bash", Code: readOnlyProgram, Runtime: rt})
		if res.Stdout != "tmp ok\nworkspace ok\n/workspace\n" {
			t.Fatalf("stdout %q", res.Stdout)
		}
		// /tmp holds 64 MiB at most, whatever the writer does.
		res = execute(t, api.ExecuteRequest{Language: "python", Code: `
import errno
for i in range(4):
    try:
        with open(f"/tmp/f{i}", "wb") as f:
            f.write(b"x" * (30 << 20))
        print("wrote", i)
    except OSError as e:
        print("full", errno.errorcode[e.errno])
        break
`, MemoryBytes: 512 << 20, Runtime: rt})
		if res.Stdout != "wrote 0\nwrote 1\nfull ENOSPC\n" {
			t.Fatalf("stdout %q stderr %q", res.Stdout, res.Stderr)
		}
	})
}

func TestManySequentialRuns(t *testing.T) {
	for i := range 500 {
		res := execute(t, api.ExecuteRequest{Language: "bash", Code: `printf 'run %s\n' "$1"; printf 'err %s' "$1" >&2`, Args: []string{fmt.Sprint(i)}})
		if res.Stdout != fmt.Sprintf("run %d\n", i) || res.Stderr != fmt.Sprintf("err %d", i) || res.Status != api.StatusOK {
			t.Fatalf("run %d: %+v", i, res)
		}
	}
}

func TestConcurrentRuns(t *testing.T) {
	const clients, total = 8, 2000
	var wg sync.WaitGroup
	errs := make(chan error, total)
	next := make(chan int, total)
	for i := range total {
		next <- i
	}
	close(next)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				b, _ := json.Marshal(api.ExecuteRequest{Language: "python", Code: "import sys\nprint('out', sys.argv[1] * 1000)\nprint('err', sys.argv[1], file=sys.stderr)", Args: []string{fmt.Sprint(i)}})
				status, body := request(socket, "POST", "/v1/execute", string(b), nil)
				var res api.ExecuteResult
				json.Unmarshal(body, &res)
				want := "out " + strings.Repeat(fmt.Sprint(i), 1000) + "\n"
				if status != 200 || res.Stdout != want || res.Stderr != fmt.Sprintf("err %d\n", i) {
					errs <- fmt.Errorf("run %d: status %d, stdout %d bytes, stderr %q", i, status, len(res.Stdout), res.Stderr)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestQueueFull(t *testing.T) {
	var wg sync.WaitGroup
	statuses := make(chan int, maxConcurrent+maxQueued+4)
	body, _ := json.Marshal(api.ExecuteRequest{Language: "bash", Code: "sleep 3"})
	for range maxConcurrent + maxQueued {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, _ := request(socket, "POST", "/v1/execute", string(body), nil)
			statuses <- status
		}()
	}
	waitInfo(t, socket, "every run slot and queue place taken", func(i api.Info) bool {
		return i.Running == maxConcurrent && i.Queued == maxQueued
	})
	status, resp := request(socket, "POST", "/v1/execute", string(body), nil)
	var e api.Error
	json.Unmarshal(resp, &e)
	if status != 429 || e.Code != api.CodeResourceExhausted {
		t.Errorf("over capacity: status %d, %s", status, resp)
	}
	_, errOut, code := sandboxctl(t, "", "execute", "-l", "bash", "-c", "true")
	if code != 125 || !strings.Contains(errOut, "too many executions") {
		t.Errorf("CLI over capacity: exit %d, stderr %q", code, errOut)
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != 200 {
			t.Errorf("a queued request got %d", s)
		}
	}
}

func TestBadRequests(t *testing.T) {
	for _, tc := range []struct {
		name, method, path, body string
		header                   map[string]string
		status                   int
		code                     string
	}{
		{"unknown language", "POST", "/v1/execute", `{"language":"nosuchlanguage","code":"x"}`, nil, 400, api.CodeInvalidArgument},
		{"invalid JSON", "POST", "/v1/execute", `{"language":`, nil, 400, api.CodeInvalidArgument},
		{"unknown field", "POST", "/v1/execute", `{"language":"python","code":"1","rm":"-rf"}`, nil, 400, api.CodeInvalidArgument},
		{"trailing data", "POST", "/v1/execute", `{"language":"python","code":"1"} {}`, nil, 400, api.CodeInvalidArgument},
		{"absurd timeout", "POST", "/v1/execute", `{"language":"python","code":"1","timeout_ms":99999999999}`, nil, 400, api.CodeInvalidArgument},
		{"absurd memory", "POST", "/v1/execute", `{"language":"python","code":"1","memory_bytes":1125899906842624}`, nil, 400, api.CodeInvalidArgument},
		{"bad env name", "POST", "/v1/execute", `{"language":"python","code":"1","env":{"A=B":"c"}}`, nil, 400, api.CodeInvalidArgument},
		{"oversized body", "POST", "/v1/execute", `{"language":"python","code":"` + strings.Repeat("x", 96<<20) + `"}`, nil, 413, api.CodeInvalidArgument},
		{"wrong content type", "POST", "/v1/execute", `{}`, map[string]string{"Content-Type": "text/plain"}, 415, api.CodeInvalidArgument},
		{"browser origin", "GET", "/v1/info", "", map[string]string{"Origin": "http://evil.example"}, 403, api.CodePermissionDenied},
		{"unknown route", "GET", "/v1/nope", "", nil, 404, api.CodeNotFound},
		{"wrong method", "GET", "/v1/execute", "", nil, 405, api.CodeInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			send := func() (int, []byte) { return request(socket, tc.method, tc.path, tc.body, tc.header) }
			if tc.status == 413 {
				send = func() (int, []byte) { return requestEarly(socket, tc.method, tc.path, tc.body) }
			}
			status, body := send()
			var e api.Error
			if err := json.Unmarshal(body, &e); err != nil || e.Code != tc.code || e.Message == "" {
				t.Errorf("body %q (%v)", body, err)
			}
			if status != tc.status {
				t.Errorf("status %d, want %d: %s", status, tc.status, body)
			}
		})
	}
	_, errOut, code := sandboxctl(t, "", "execute", "-l", "nosuchlanguage", "-c", "x")
	if code != 125 || !strings.Contains(errOut, "unknown language") || !strings.Contains(errOut, "python") {
		t.Errorf("CLI: exit %d, stderr %q", code, errOut)
	}
	out, _, code := sandboxctl(t, "", "execute", "-o", "json", "-l", "nosuchlanguage", "-c", "x")
	var e api.Error
	if err := json.Unmarshal([]byte(out), &e); err != nil || code != 125 || e.Code != api.CodeInvalidArgument {
		t.Errorf("CLI json: exit %d, stdout %q", code, out)
	}
	// The daemon still serves.
	if r := execute(t, api.ExecuteRequest{Language: "bash", Code: "echo ok"}); r.Stdout != "ok\n" {
		t.Fatalf("after bad requests: %+v", r)
	}
}

func TestInfoHealthVersion(t *testing.T) {
	out, _, code := sandboxctl(t, "", "info", "-o", "json")
	var info api.Info
	if err := json.Unmarshal([]byte(out), &info); err != nil || code != 0 {
		t.Fatalf("info: exit %d: %q", code, out)
	}
	if info.ContainerdAddress != containerdAddr || info.ContainerdVersion == "" || info.CgroupVersion == 0 || info.Limits.MaxConcurrent != maxConcurrent {
		t.Errorf("info: %+v", info)
	}
	out, _, code = sandboxctl(t, "", "info")
	if code != 0 || !strings.Contains(out, "containerd:") {
		t.Errorf("info text: %q", out)
	}
	status, body := request(socket, "GET", "/v1/health", "", nil)
	if status != 200 || !strings.Contains(string(body), `"ok"`) {
		t.Errorf("health: %d %s", status, body)
	}
	out, _, code = sandboxctl(t, "", "version")
	if code != 0 || !strings.Contains(out, "sandboxctl") || !strings.Contains(out, "sandboxd") {
		t.Errorf("version: %q", out)
	}
	out, _, code = sandboxctl(t, "", "languages")
	if code != 0 || !strings.Contains(out, "python") || !strings.HasPrefix(out, "NAME") {
		t.Errorf("languages: %q", out)
	}
}

// sandboxOf finds the container running an execution, of the daemon with
// state dir state and containerd namespace ns: its files dir holds the
// execution's code, or, a cell, it runs a jail's program (jailedRunning).
func sandboxOf(t *testing.T, state, ns string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		dirs, _ := os.ReadDir(filepath.Join(state, "sandboxes"))
		for _, d := range dirs {
			if sub, _ := os.ReadDir(filepath.Join(state, "sandboxes", d.Name())); len(sub) > 0 {
				return d.Name()
			}
		}
		for id := range jailedRunning(ns) {
			return id
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no sandbox holds an execution")
	return ""
}

// jailedRunning finds the cells of containerd namespace ns that run a
// program, and the execution each runs: a process of the cell's cgroup
// whose parent is a jail's init is the program (an idle cell holds its
// agent and the init of its next jail only), and its code is at
// /sandbox/<execution id>/.
func jailedRunning(ns string) map[string]string {
	procs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "pids", ns, "*", "cgroup.procs")) // cgroup v1
	if v2, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", ns, "*", "cgroup.procs")); len(v2) > 0 {
		procs = v2
	}
	running := map[string]string{}
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		for _, pid := range strings.Fields(string(b)) {
			stat, _ := os.ReadFile("/proc/" + pid + "/stat")
			// pid (comm) state ppid ...: comm may hold spaces, not ")".
			_, rest, _ := strings.Cut(string(stat), ") ")
			f := strings.Fields(rest)
			if len(f) < 2 {
				continue
			}
			if parent, _ := os.ReadFile("/proc/" + f[1] + "/cmdline"); string(parent) != "sandboxd-jail\x00" {
				continue
			}
			cmdline, _ := os.ReadFile("/proc/" + pid + "/cmdline")
			if _, code, ok := strings.Cut(string(cmdline), "/sandbox/"); ok {
				execution, _, _ := strings.Cut(code, "/")
				running[filepath.Base(filepath.Dir(p))] = execution
				break
			}
		}
	}
	return running
}

func TestClientGoneKillsExecution(t *testing.T) {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"language":"bash","code":"sleep 4260"}`
	fmt.Fprintf(conn, "POST /v1/execute HTTP/1.1\r\nHost: sandboxd\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	deadline := time.Now().Add(20 * time.Second)
	for !pgrep("sleep 4260") {
		if time.Now().After(deadline) {
			t.Fatal("the execution did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	id := sandboxOf(t, stateDir, "sandboxd")
	conn.Close()
	deadline = time.Now().Add(5 * time.Second)
	for pgrep("sleep 4260") {
		if time.Now().After(deadline) {
			t.Fatal("the execution outlived its client by 5s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for containerExistsIn(t, containerdAddr, "sandboxd", id) {
		if time.Now().After(deadline) {
			t.Fatalf("the sandbox %s remains after the client left", id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPooledSandboxServesOnce checks that no execution ever sees another's
// traces: every sandbox, pooled or not, serves one execution.
func TestPooledSandboxServesOnce(t *testing.T) {
	for i := range 40 {
		res := execute(t, api.ExecuteRequest{Language: "bash", Code: "ls -A /tmp /workspace; touch /tmp/used /workspace/used; echo $$ > /tmp/pid"})
		if res.Stdout != "/tmp:\n\n/workspace:\n" || res.Status != api.StatusOK {
			t.Fatalf("run %d found traces: %q %q", i, res.Stdout, res.Stderr)
		}
	}
}

// TestAgentSurvivesItsSandbox: signals from inside do not kill PID 1 (the
// agent, or in a cell the jail's init), its memory and descriptors are
// closed to the sandboxed code, and nothing of the run is left after it:
// the sandbox is deleted, or, a cell, holds its shim and agent only.
func TestAgentSurvivesItsSandbox(t *testing.T) {
	type outcome struct {
		res *api.ExecuteResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		// Not execute: a goroutine other than the test's cannot end it.
		status, res, body := executeOn(socket, api.ExecuteRequest{Language: "bash", Code: `
for s in KILL SEGV TERM INT HUP BUS ABRT STOP USR1; do kill -$s 1 2>/dev/null; done
ls /proc/1/fd >/dev/null 2>&1 && echo "fds readable"
cat /proc/1/environ >/dev/null 2>&1 && echo "environ readable"
sleep 1; echo alive`})
		var err error
		if status != 200 || !json.Valid([]byte(body)) {
			err = fmt.Errorf("execute: status %d: %s", status, body)
		}
		done <- outcome{res, err}
	}()
	id := sandboxOf(t, stateDir, "sandboxd")
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	if res := o.res; res.Status != api.StatusOK || res.Stdout != "alive\n" {
		t.Fatalf("%+v", res)
	}
	var left []string
	if !waitFor(10*time.Second, func() bool { left = executionLeft("sandboxd", id); return len(left) == 0 }) {
		t.Fatalf("the run in sandbox %s left:\n%s", id, strings.Join(left, "\n"))
	}
}

// Go programs build against a cache of the standard library that the
// daemon builds once per host, in the background: a hello world then runs
// within the default limits and timeout (without it, the standard library
// is compiled at every run, which the default timeout does not allow).
// Sandboxes read the cache and cannot write it.
func TestGoBuildCache(t *testing.T) {
	waitGoCache(t)
	const prog = `package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	cache := os.Getenv("GOCACHE")
	fmt.Println(strings.HasPrefix(cache, "/var/cache/sandboxd/go-build-"))
	fmt.Println(os.WriteFile(filepath.Join(cache, "planted"), []byte("x"), 0o644) != nil)
}
`
	out, errOut, code := sandboxctl(t, "", "execute", "-l", "go", "-c", prog)
	if code != 0 || out != "true\ntrue\n" {
		t.Fatalf("exit %d, stdout %q (want the shared cache, read-only), stderr %q", code, out, errOut)
	}
	if m, _ := filepath.Glob("/var/cache/sandboxd/go-build-*/planted"); len(m) > 0 {
		t.Fatalf("a sandbox wrote into the shared cache: %v", m)
	}
}

// waitGoCache waits until the suite's daemon builds Go programs against
// its cache of the standard library.
func waitGoCache(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		log := mainDaemon.logged()
		building := strings.Index(log, `msg="building the Go standard library's cache"`)
		ready := strings.Index(log, `msg="Go cache ready"`)
		// Built before the suite's daemon started (it then uses it from
		// the start), or built since and applied (a reload follows).
		if building < 0 || ready > building && strings.Contains(log[ready:], "msg=reloaded") {
			return
		}
		if strings.Contains(log, `msg="Go cache not built`) || time.Now().After(deadline) {
			t.Fatalf("the Go cache is not ready:\n%s", log)
		}
		time.Sleep(time.Second)
	}
}

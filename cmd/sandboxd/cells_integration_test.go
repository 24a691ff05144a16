//go:build integration

package main_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// cellDaemon is a daemon whose one-shot executions all go to one cell per
// caller: no pool, so the first execution makes the cell and the next ones
// find it.
func cellDaemon(t *testing.T, reuse int) *daemonProc {
	t.Helper()
	// socket_mode 0666: some tests run a client as another uid.
	return startDaemon(t, daemonOpts{config: fmt.Sprintf("socket_mode = '0666'\n[pool]\nsize = 0\nreuse = %d\n", reuse)})
}

// containersOf counts the containers of a daemon's namespace.
func containersOf(t *testing.T, d *daemonProc) int {
	t.Helper()
	return len(mustProbeContainerd(t, containerdAddr, d.ns).containers)
}

// TestCellIsolation: pairs of one-shot executions of one caller, forced
// into one cell, and nothing the first leaves is there for the second:
// files in /tmp, /workspace, /dev/shm and $HOME; a double-forked,
// setsid, SIGTERM-ignoring process; SysV and POSIX IPC objects; an
// abstract Unix socket and a loopback listener; the hostname; rlimits.
func TestCellIsolation(t *testing.T) {
	d := cellDaemon(t, 50)
	run := func(code string) *api.ExecuteResult {
		t.Helper()
		return mustExecute(t, d.sock, api.ExecuteRequest{Language: "bash", Code: code})
	}
	for _, tc := range []struct{ name, leave, check string }{
		{"files", `echo x > /tmp/left; echo x > /workspace/left; echo x > /dev/shm/left; echo x > "$HOME/left.home"; echo left`,
			`ls /tmp /workspace /dev/shm "$HOME" | grep -c left`},
		{"processes", `(setsid sh -c 'trap "" TERM; exec -a leftsleeper sleep 600' & ) ; (nohup sleep 601 >/dev/null 2>&1 &); echo left`,
			`for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -c -e '^sleep 60' -e '^leftsleeper'`},
		{"sysv ipc", `ipcmk -M 4096 >/dev/null && ipcmk -S 1 >/dev/null && ipcmk -Q >/dev/null && echo left`,
			`ipcs -m -s -q | grep -c '^0x'`},
		{"posix mqueue", `touch /dev/mqueue/leftq && echo left`, `ls /dev/mqueue | grep -c .`},
		{"sockets", `python3 -c "
import os, socket, time
u = socket.socket(socket.AF_UNIX); u.bind('\0sbxleft'); u.listen()
t = socket.socket(); t.bind(('127.0.0.1', 45678)); t.listen()
if os.fork() == 0:
    os.setsid(); time.sleep(600)
print('left')"`,
			`python3 -c "
import socket
n = 0
for fam, addr in ((socket.AF_UNIX, '\0sbxleft'), (socket.AF_INET, ('127.0.0.1', 45678))):
    try:
        socket.socket(fam).connect(addr); n += 1
    except OSError:
        pass
print(n)"`},
		{"hostname", `hostname leftname 2>/dev/null; echo left`, `hostname | grep -c leftname`},
		{"rlimits", `ulimit -n 64; ulimit -s 1024; echo left`, `[ "$(ulimit -n)" = 64 ] || [ "$(ulimit -s)" = 1024 ]; echo $((1 - $?))`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if res := run(tc.leave); res.Stdout != "left\n" {
				t.Fatalf("the first execution: %+v", res)
			}
			if res := run(tc.check); res.Stdout != "0\n" {
				t.Errorf("the next execution in the cell found what the first left: %q (stderr %q)", res.Stdout, res.Stderr)
			}
		})
	}
	if n := containersOf(t, d); n != 1 {
		t.Errorf("%d containers: the executions did not share one cell", n)
	}
	if got := metricValue(t, d.sock, "sandboxd_cell_reuses_total"); got < 14 {
		t.Errorf("sandboxd_cell_reuses_total = %v after 14 executions", got)
	}
}

// TestJailWalls: a program in a cell sees its jail only (not the agent,
// not another execution), cannot build namespaces or mounts of its own,
// and has a sandbox's /proc masks.
func TestJailWalls(t *testing.T) {
	d := cellDaemon(t, 50)
	res := mustExecute(t, d.sock, api.ExecuteRequest{Language: "bash", Code: `
echo "pid $$ init $(tr '\0' ' ' < /proc/1/cmdline)"
set -- /proc/[0-9]*; echo $#
for c in 'unshare -U true' 'unshare -m true' 'unshare -n true' 'unshare -p -f true' 'nsenter -t 1 -m true' 'mount -t tmpfs none /tmp' 'pivot_root /tmp /tmp' 'hostname other' 'chroot / true'; do
  if $c 2>/dev/null; then echo "allowed: $c"; fi
done
python3 -c "
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
print('clone', libc.syscall(56, 0x10000000, 0, 0, 0, 0), ctypes.get_errno())   # CLONE_NEWUSER
print('unshare', libc.unshare(0x20000), ctypes.get_errno())                       # CLONE_NEWNS
"
echo 1 > /proc/sys/kernel/hostname 2>/dev/null && echo "wrote /proc/sys"
for fd in 3 4 5; do [ -e /proc/$$/fd/$fd ] && echo "inherited fd $fd"; done
grep -q sandboxd-agent /proc/net/unix && echo "the agent's socket is listed"
python3 -c "
import socket
try:
    socket.socket(socket.AF_UNIX).connect('\0sandboxd-agent'); print('reached the agent')
except OSError as e:
    print('agent socket', e.errno)
"
id -u; grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\t ' ' '
for sig in $(seq 1 31) $(seq 34 64); do kill -$sig 1 2>/dev/null; done; sleep 0.2
kill -0 1 && echo "init survived"
echo x >> "$0" 2>/dev/null && echo "wrote its code"
touch /sandbox/x 2>/dev/null && echo "wrote /sandbox"
echo "sandbox holds $(ls /sandbox | wc -l)"
`})
	out := res.Stdout
	for _, want := range []string{"init sandboxd-jail ", "clone -1 1\n", "unshare -1 1\n", "\n65534\n", "agent socket 111\n",
		"CapEff: 0000000000000000", "CapPrm: 0000000000000000", "CapBnd: 0000000000000000", "CapAmb: 0000000000000000", "NoNewPrivs: 1", "Seccomp: 2",
		"init survived", "sandbox holds 1\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "allowed:") || strings.Contains(out, "wrote /proc/sys") || strings.Contains(out, "inherited fd") ||
		strings.Contains(out, "wrote its code") || strings.Contains(out, "wrote /sandbox") ||
		strings.Contains(out, "agent's socket") || strings.Contains(out, "reached the agent") {
		t.Errorf("a wall let the program through:\n%s", out)
	}
	// The program's jail init is the only other process it sees; the
	// agent and the cell are out of sight.
	if lines := strings.Split(out, "\n"); len(lines) < 2 || lines[1] != "2" {
		t.Errorf("processes seen in /proc (the init, the shell): %q", out)
	}
}

// TestCellAgentSocket: sandboxd drives a cell's agent on the agent's
// abstract socket, in the cell's network namespace: one connection there,
// and no listener left once it is made. (TestJailWalls: a jail cannot
// reach it.)
func TestCellAgentSocket(t *testing.T) {
	d := cellDaemon(t, 50)
	if res := mustExecute(t, d.sock, api.ExecuteRequest{Language: "bash", Code: "echo ran"}); res.Stdout != "ran\n" {
		t.Fatalf("%+v", res)
	}
	c, err := containerd.New(containerdAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := namespaces.WithNamespace(context.Background(), d.ns)
	ctrs, err := c.Containers(ctx)
	if err != nil || len(ctrs) != 1 {
		t.Fatalf("the cell: %v %v", ctrs, err)
	}
	task, err := ctrs[0].Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	unixSockets, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/unix", task.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	// Num RefCount Protocol Flags Type St Inode Path: St 03 is connected,
	// Flags 00010000 listening.
	var agent []string
	for _, line := range strings.Split(string(unixSockets), "\n") {
		if f := strings.Fields(line); len(f) == 8 && f[7] == "@sandboxd-agent" {
			agent = append(agent, "flags "+f[3]+" state "+f[5])
		}
	}
	if len(agent) != 1 || agent[0] != "flags 00000000 state 03" {
		t.Errorf("the agent's sockets in the cell: %q, want one connection and no listener", agent)
	}
	// A jailed run's code goes with the request into the jail's own
	// /sandbox: nothing of it is written to the cell's directory on the
	// host while it runs.
	hostDir := d.state + "/sandboxes/" + ctrs[0].ID()
	done := make(chan string, 1)
	go func() {
		_, res, body := executeOn(d.sock, api.ExecuteRequest{Language: "bash", Code: "cat $0 >/dev/null; sleep 1; echo slept"})
		if res.Stdout != "slept\n" {
			body = "not run: " + body
		} else {
			body = ""
		}
		done <- body
	}()
	for deadline := time.Now().Add(800 * time.Millisecond); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if entries, err := os.ReadDir(hostDir); err != nil || len(entries) > 0 {
			t.Fatalf("the cell's host directory during a run: %v %v", entries, err)
		}
	}
	if msg := <-done; msg != "" {
		t.Fatal(msg)
	}
	// The channel serves: files, another run.
	if res := mustExecute(t, d.sock, api.ExecuteRequest{Language: "bash", Code: "cat /workspace/f", Files: []api.File{{Path: "f", Content: "given"}}}); res.Stdout != "given" {
		t.Errorf("a file through the socket: %+v", res)
	}
}

// TestJailProcMasks: /proc in a jail is masked as a sandbox's own is: the
// same paths hidden or read-only, whether the program runs in a cell or in
// a session's sandbox (which has no jail).
func TestJailProcMasks(t *testing.T) {
	d := cellDaemon(t, 50)
	probe := `for p in /proc/acpi /proc/asound /proc/kcore /proc/keys /proc/latency_stats /proc/timer_list /proc/timer_stats /proc/sched_debug /proc/scsi /proc/bus /proc/fs /proc/irq /proc/sys /proc/sysrq-trigger; do
  [ -e $p ] || { echo "$p absent"; continue; }
  if [ -d $p ]; then n=$(ls -A $p 2>/dev/null | wc -l); echo "$p dir $([ $n = 0 ] && echo empty || echo listed)"; else echo "$p file $(head -c 64 $p 2>/dev/null | wc -c)"; fi
  touch $p/x 2>/dev/null && echo "$p writable"
done
echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo "drop_caches written"
true`
	inCell := mustExecute(t, d.sock, api.ExecuteRequest{Language: "bash", Code: probe})
	sess := createSession(t, d.sock, api.CreateSessionRequest{Language: "bash"})
	defer request(d.sock, "DELETE", "/v1/sessions/"+sess.ID, "", nil)
	inSession := mustExecute(t, d.sock, api.ExecuteRequest{SessionID: sess.ID, Code: probe})
	if inCell.Stdout != inSession.Stdout || !strings.Contains(inCell.Stdout, "/proc/kcore") {
		t.Errorf("/proc in a jail:\n%s\nin a session's sandbox:\n%s", inCell.Stdout, inSession.Stdout)
	}
}

// TestProgramTimerSlack: a jail's init runs with a coarse timer slack
// (cmd/sandboxd-init/slack.go); programs keep the one every process here
// starts with (the test's own, which containerd, its shim, runc and the
// agent pass on), whether they run in a cell's jail, in a session or as an
// interpreter session's interpreter.
func TestProgramTimerSlack(t *testing.T) {
	own, err := os.ReadFile("/proc/self/timerslack_ns")
	if err != nil {
		t.Fatal(err)
	}
	want := string(own)
	d := cellDaemon(t, 50)
	const probe = `cat /proc/self/timerslack_ns`
	for i := range 3 { // the cell's first jail, and jails built ahead
		if res := mustExecute(t, d.sock, api.ExecuteRequest{Language: "bash", Code: probe}); res.Stdout != want {
			t.Errorf("one-shot %d: timer slack %q, want %q (stderr %q)", i, res.Stdout, want, res.Stderr)
		}
	}
	sess := createSession(t, d.sock, api.CreateSessionRequest{Language: "bash"})
	defer request(d.sock, "DELETE", "/v1/sessions/"+sess.ID, "", nil)
	if res := mustExecute(t, d.sock, api.ExecuteRequest{SessionID: sess.ID, Code: probe}); res.Stdout != want {
		t.Errorf("in a session: timer slack %q, want %q (stderr %q)", res.Stdout, want, res.Stderr)
	}
	interp := createSession(t, d.sock, api.CreateSessionRequest{Language: "python", Interpreter: true})
	defer request(d.sock, "DELETE", "/v1/sessions/"+interp.ID, "", nil)
	if res := mustExecute(t, d.sock, api.ExecuteRequest{SessionID: interp.ID, Code: `print(open('/proc/self/timerslack_ns').read(), end='')`}); res.Stdout != want {
		t.Errorf("in an interpreter session: timer slack %q, want %q (stderr %q)", res.Stdout, want, res.Stderr)
	}
}

// TestProgramSignals: a program in a jail starts with the signal
// dispositions and mask of a session's program (those of the sandbox; GNU
// make, for one, runs the tests with signals 32 and 33 ignored), though
// its jail's init ignores those that would end it (TestJailWalls).
func TestProgramSignals(t *testing.T) {
	const probe = `grep -E '^Sig(Blk|Ign):' /proc/self/status`
	d := cellDaemon(t, 50)
	sess := createSession(t, d.sock, api.CreateSessionRequest{Language: "bash"})
	defer request(d.sock, "DELETE", "/v1/sessions/"+sess.ID, "", nil)
	want := mustExecute(t, d.sock, api.ExecuteRequest{SessionID: sess.ID, Code: probe}).Stdout
	if !strings.HasPrefix(want, "SigBlk:\t0000000000000000\nSigIgn:\t") {
		t.Fatalf("in a session: %q", want)
	}
	for i := range 3 { // the cell's first jail, and jails built ahead
		if res := mustExecute(t, d.sock, api.ExecuteRequest{Language: "bash", Code: probe}); res.Stdout != want {
			t.Errorf("one-shot %d: %q, want a session's %q (stderr %q)", i, res.Stdout, want, res.Stderr)
		}
	}
}

// TestCellMemoryPeak: a cell's executions each report their own memory
// peak where the kernel can reset it (cgroup v1, docs/api.md): a small
// program after a big one in the same cell does not report the big one's;
// on cgroup v2 the peak is the cell's so far.
func TestCellMemoryPeak(t *testing.T) {
	d := cellDaemon(t, 50)
	big := mustExecute(t, d.sock, api.ExecuteRequest{Language: "python", Code: "x = b'x' * (96 << 20); print(len(x) >> 20)"})
	small := mustExecute(t, d.sock, api.ExecuteRequest{Language: "python", Code: "print(1)"})
	if big.Stdout != "96\n" || small.Stdout != "1\n" {
		t.Fatalf("the runs: %+v, %+v", big, small)
	}
	if n := containersOf(t, d); n != 1 {
		t.Fatalf("%d containers: the two runs were not in one cell", n)
	}
	if big.Usage.MemoryPeakBytes < 96<<20 {
		t.Errorf("the big run's peak %d, under the 96 MiB it held", big.Usage.MemoryPeakBytes)
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.max_usage_in_bytes"); err == nil {
		if small.Usage.MemoryPeakBytes <= 0 || small.Usage.MemoryPeakBytes > 48<<20 {
			t.Errorf("cgroup v1: the small run's peak %d, want its own (under 48 MiB; the big run's was %d)", small.Usage.MemoryPeakBytes, big.Usage.MemoryPeakBytes)
		}
	} else if small.Usage.MemoryPeakBytes < big.Usage.MemoryPeakBytes {
		t.Errorf("cgroup v2: the small run's peak %d, want the cell's so far (%d)", small.Usage.MemoryPeakBytes, big.Usage.MemoryPeakBytes)
	}
}

// TestCellUsageAfterIdle: an execution that comes once its cell has built
// its next jail takes the counters read then (runtime's countersBefore):
// its CPU and memory peak are its own, neither those of the runs before
// nor cut short. Heavy and small runs alternate, each after a pause, so
// that a baseline read once and kept would show.
func TestCellUsageAfterIdle(t *testing.T) {
	d := cellDaemon(t, 50)
	// 300 ms of CPU and 96 MiB held.
	const heavy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nx = b'x' * (96 << 20)\nprint(len(x) >> 20)"
	_, err := os.Stat("/sys/fs/cgroup/memory/memory.max_usage_in_bytes")
	v1 := err == nil
	for i := range 2 {
		r := mustExecute(t, d.sock, api.ExecuteRequest{Language: "python", Code: heavy})
		if r.Stdout != "96\n" || r.Usage.CPUMS < 250 || r.Usage.MemoryPeakBytes < 96<<20 {
			t.Errorf("heavy run %d: output %q, CPU %d ms (want at least 250), peak %d (want at least 96 MiB)", i, r.Stdout, r.Usage.CPUMS, r.Usage.MemoryPeakBytes)
		}
		// Idle: the cell builds its next jail and reads its counters.
		time.Sleep(300 * time.Millisecond)
		r = mustExecute(t, d.sock, api.ExecuteRequest{Language: "python", Code: "print(1)"})
		if r.Stdout != "1\n" || r.Usage.CPUMS <= 0 || r.Usage.CPUMS >= 150 {
			t.Errorf("small run %d: output %q, CPU %d ms (want its own, under 150)", i, r.Stdout, r.Usage.CPUMS)
		}
		if v1 && (r.Usage.MemoryPeakBytes <= 0 || r.Usage.MemoryPeakBytes > 48<<20) {
			t.Errorf("small run %d: peak %d, want its own (under 48 MiB)", i, r.Usage.MemoryPeakBytes)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if n := containersOf(t, d); n != 1 {
		t.Fatalf("%d containers: the runs were not in one cell", n)
	}
}

// TestCellLifecycle: a cell never serves two uids; it is destroyed after
// an OOM kill, a pids-limit hit and pool.reuse executions.
func TestCellLifecycle(t *testing.T) {
	d := cellDaemon(t, 3)
	run := func(code string, mem int64) *api.ExecuteResult {
		t.Helper()
		return mustExecute(t, d.sock, api.ExecuteRequest{Language: "bash", Code: code, MemoryBytes: mem})
	}
	destroyed := func(reason string) float64 {
		v, _ := metricOf(d.sock, fmt.Sprintf(`sandboxd_cells_destroyed_total{reason=%q}`, reason))
		return v
	}
	for range 3 {
		run("true", 0)
	}
	waitUntil(t, "the worn cell's destruction", 10e9, func() bool { return destroyed("worn") == 1 })
	// Another uid gets a cell of its own.
	run("true", 0)
	if out, code := asUser(d.sock, "execute", "-l", "bash", "-c", "true"); code != 0 {
		t.Fatalf("as uid 65534: %d %s", code, out)
	}
	if n := containersOf(t, d); n != 2 {
		t.Errorf("%d containers after executions of two uids: want a cell each", n)
	}
	if res := mustExecute(t, d.sock, api.ExecuteRequest{Language: "python", Code: "b = bytearray(1 << 30)", MemoryBytes: 64 << 20}); !res.OOMKilled {
		t.Fatalf("the memory bomb: %+v", res)
	}
	waitUntil(t, "the OOM-killed cell's destruction", 10e9, func() bool { return destroyed("limit") == 1 })
	// More processes than the pids limit (128): forks are refused.
	if res := run("for i in $(seq 200); do sleep 30 & done 2>/dev/null; true", 0); res.TimedOut {
		t.Fatalf("past the pids limit: %+v", res)
	}
	waitUntil(t, "the cell at its pids limit destroyed", 10e9, func() bool { return destroyed("limit") == 2 })
}

// TestCellsTakeTurns: a caller's executions one at a time, with time
// between them, stay in one cell, whose agent says when its next jail is
// built; back to back, the next request comes while that jail is being
// built, and the caller gets a second cell from the pool: its two cells
// take turns, and it holds no more.
func TestCellsTakeTurns(t *testing.T) {
	d := startDaemon(t, daemonOpts{config: "[pool]\nsize = 2\nreuse = 50\n"})
	waitPoolFull(t, d.sock)
	run := func(c *http.Client, i int) {
		t.Helper()
		var res api.ExecuteResult
		want := fmt.Sprintf("%d\n", i)
		if _, err := post(c, "/v1/execute", api.ExecuteRequest{Language: "bash", Code: "echo " + want}, &res); err != nil || res.Stdout != want {
			t.Fatalf("run %d: %v %+v", i, err, res)
		}
	}
	c := keptClient(d.sock)
	defer c.CloseIdleConnections()
	for i := range 5 {
		run(c, i)
		time.Sleep(300 * time.Millisecond)
	}
	if n := metricValue(t, d.sock, "sandboxd_cells_idle"); n != 1 {
		t.Errorf("%v cells after executions 300 ms apart: want one, its jail built for each", n)
	}
	for i := range 20 {
		run(c, i)
	}
	if n := metricValue(t, d.sock, "sandboxd_cells_idle"); n != 2 {
		t.Errorf("%v cells after executions back to back: want two that took turns", n)
	}
}

//go:build integration

package main_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/sandboxd/sandboxd/daemon/api"
)

func TestUnitFilesVerify(t *testing.T) {
	dir := t.TempDir()
	unit, err := os.ReadFile("../../systemd/sandboxd.service")
	if err != nil {
		t.Fatal(err)
	}
	unit = bytes.ReplaceAll(unit, []byte("/usr/local/bin/sandboxd"), []byte(filepath.Join(binDir, "sandboxd")))
	os.WriteFile(filepath.Join(dir, "sandboxd.service"), unit, 0o644)
	sock, _ := os.ReadFile("../../systemd/sandboxd.socket")
	os.WriteFile(filepath.Join(dir, "sandboxd.socket"), sock, 0o644)
	out, err := exec.Command("systemd-analyze", "verify", filepath.Join(dir, "sandboxd.service"), filepath.Join(dir, "sandboxd.socket")).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, want := range []string{"Type=notify", "WatchdogSec=", "KillMode=process", "ExecReload=", "Restart=on-failure"} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("the service lacks %s", want)
		}
	}
	if !bytes.Contains(sock, []byte("SocketMode=0660")) || !bytes.Contains(sock, []byte("SocketGroup=sandboxd")) {
		t.Error("the socket unit lacks its mode or group")
	}
}

func TestSocketActivation(t *testing.T) {
	dir, _ := os.MkdirTemp(suiteDir, "sbxa")
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "activated.sock")
	cmd := exec.Command("systemd-socket-activate", "-l", sock,
		filepath.Join(binDir, "sandboxd"), "--config", "/nonexistent", "--namespace", "sandboxd-activated", "--socket", filepath.Join(dir, "unused.sock"),
		"--state-dir", filepath.Join(dir, "state"), "--containerd", containerdAddr)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = lockedWriter{&log}, lockedWriter{&log}
	if err := startProc(cmd); err != nil {
		t.Fatal(err)
	}
	watchForRaces(&log)
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	// The first request starts sandboxd on the inherited socket.
	var status int
	var body []byte
	deadline := time.Now().Add(30 * time.Second)
	for status != 200 && time.Now().Before(deadline) {
		status, body = request(sock, "POST", "/v1/execute", `{"language":"bash","code":"echo activated"}`, nil)
		if status != 200 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if status != 200 || !strings.Contains(string(body), `"activated\n"`) {
		t.Fatalf("through the inherited socket: %d %s\n%s", status, body, lockedString(&log))
	}
	if _, err := os.Stat(filepath.Join(dir, "unused.sock")); err == nil {
		t.Error("sandboxd listened itself although a socket was passed")
	}
	if out := lockedString(&log); !strings.Contains(out, "socket_activated=true") {
		t.Errorf("log: %s", out)
	}
}

// notifications reads sd_notify datagrams as systemd would.
type notifications struct {
	conn *net.UnixConn
	msgs chan string
}

func listenNotify(t *testing.T, dir string) (*notifications, string) {
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifications{conn: conn, msgs: make(chan string, 1000)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				close(n.msgs)
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	return n, path
}

// until returns the messages received up to one containing want.
func (n *notifications) until(t *testing.T, want string, timeout time.Duration) []string {
	t.Helper()
	var seen []string
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-n.msgs:
			if !ok {
				t.Fatalf("notify socket closed waiting for %q; seen %q", want, seen)
			}
			seen = append(seen, m)
			if strings.Contains(m, want) {
				return seen
			}
		case <-deadline:
			t.Fatalf("no %q within %v; seen %q", want, timeout, seen)
		}
	}
}

func TestSdNotify(t *testing.T) {
	dir, _ := os.MkdirTemp(suiteDir, "sbxn")
	defer os.RemoveAll(dir)
	notify, path := listenNotify(t, dir)
	defer notify.conn.Close()
	ctdDir := filepath.Join(dir, "ctd")
	addr := filepath.Join(ctdDir, "c.sock")
	sock := filepath.Join(dir, "s.sock")
	// containerd is down when sandboxd starts.
	cmd := exec.Command(filepath.Join(binDir, "sandboxd"), "--config", "/nonexistent", "--socket", sock,
		"--state-dir", filepath.Join(dir, "state"), "--containerd", addr, "--containerd-wait", "2m")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+path, "WATCHDOG_USEC=400000")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = lockedWriter{&log}, lockedWriter{&log}
	if err := startProc(cmd); err != nil {
		t.Fatal(err)
	}
	watchForRaces(&log)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer cmd.Process.Kill()

	waiting := notify.until(t, "STATUS=waiting for containerd", 10*time.Second)
	// A window for a READY that should not come: what is tested is that
	// nothing arrives, which no state says sooner.
	time.Sleep(time.Second)
	for _, m := range append(waiting, drain(notify)...) {
		if strings.Contains(m, "READY=1") {
			t.Fatalf("READY before containerd answers: %q", m)
		}
	}
	_, stopContainerd, err := startContainerd(ctdDir)
	if err != nil {
		t.Fatal(err)
	}
	defer stopContainerd()
	msgs := notify.until(t, "READY=1", 60*time.Second)
	ready := msgs[len(msgs)-1]
	if !strings.Contains(ready, "STATUS=serving") {
		t.Errorf("READY without a status: %q", ready)
	}
	if st, _ := request(sock, "GET", "/v1/health", "", nil); st != 200 {
		t.Errorf("ready but not serving: %d", st)
	}
	// The watchdog is pinged every half of WATCHDOG_USEC (200ms), not at
	// the full interval (400ms). A loaded machine delays pings, never
	// hastens them: the median gap between pings, which a few late ones
	// do not move, must be under 300ms, and the window lasts until 9 have
	// come. Only too few pings, or too far apart, fail.
	drain(notify)
	var at []time.Time
	deadline := time.After(10 * time.Second)
	for len(at) < 9 {
		select {
		case m, ok := <-notify.msgs:
			if !ok {
				t.Fatalf("notify socket closed after %d watchdog pings", len(at))
			}
			if strings.Contains(m, "WATCHDOG=1") {
				at = append(at, time.Now())
			}
		case <-deadline:
			t.Fatalf("%d watchdog pings in 10s, at a 200ms interval", len(at))
		}
	}
	var gaps []time.Duration
	for i := 1; i < len(at); i++ {
		gaps = append(gaps, at[i].Sub(at[i-1]))
	}
	slices.Sort(gaps)
	if median := gaps[len(gaps)/2]; median >= 300*time.Millisecond {
		t.Errorf("watchdog pings %v apart (median), want every 200ms, half of WATCHDOG_USEC; gaps %v", median, gaps)
	}
	// The status line is kept current.
	status := notify.until(t, "STATUS=serving", 10*time.Second)
	if !regexp.MustCompile(`STATUS=serving: \d+ running, \d+ queued, \d+ sessions; containerd up`).MatchString(status[len(status)-1]) {
		t.Errorf("status: %q", status[len(status)-1])
	}
	cmd.Process.Signal(syscall.SIGHUP)
	notify.until(t, "RELOADING=1", 10*time.Second)
	notify.until(t, "READY=1", 10*time.Second)
	cmd.Process.Signal(syscall.SIGTERM)
	notify.until(t, "STOPPING=1", 10*time.Second)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
}

func drain(n *notifications) []string {
	var out []string
	for {
		select {
		case m := <-n.msgs:
			out = append(out, m)
		default:
			return out
		}
	}
}

// notRun is asUser's code when sandboxctl could not be run at all: no
// process exits with it (a process killed by a signal gives -1).
const notRun = -2

// asUser runs sandboxctl as uid 65534 against sock: its combined output
// and exit code, or notRun and why when it could not be started or
// waited for.
func asUser(sock string, args ...string) (string, int) {
	cmd := exec.Command(filepath.Join(binDir, "sandboxctl"), args...)
	cmd.Env = []string{"SANDBOXD_SOCKET=" + sock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := combinedOutputProc(cmd)
	code, err := exitCode(err)
	if err != nil {
		return fmt.Sprintf("sandboxctl as uid 65534 did not run: %v\n%s", err, out), notRun
	}
	return string(out), code
}

func TestConfigReloadAccessAndQuota(t *testing.T) {
	dir, _ := os.MkdirTemp(suiteDir, "sbxc")
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	config := filepath.Join(dir, "sandboxd.toml")
	write := func(body string) {
		if err := os.WriteFile(config, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Precedence: defaults < file < flags.
	write("[limits]\nmax_concurrent = 3\nmax_queued = 1\n")
	check := func(args ...string) string {
		out, err := combinedOutputProc(exec.Command(filepath.Join(binDir, "sandboxd"), append([]string{"--config", config, "--check-config"}, args...)...))
		if err != nil {
			t.Fatalf("--check-config: %v %s", err, out)
		}
		return string(out)
	}
	if out := check(); !strings.Contains(out, "max_concurrent = 3") || !strings.Contains(out, "max_queued = 1") || !strings.Contains(out, "pids = 128") {
		t.Errorf("file over defaults:\n%s", out)
	}
	if out := check("--max-concurrent", "5"); !strings.Contains(out, "max_concurrent = 5") || !strings.Contains(out, "max_queued = 1") {
		t.Errorf("flag over file:\n%s", out)
	}
	write("[limits]\nmax_concurent = 3\n")
	out, err := combinedOutputProc(exec.Command(filepath.Join(binDir, "sandboxd"), "--config", config, "--check-config"))
	if err == nil || !strings.Contains(string(out), "sandboxd.toml:2:1: unknown key \"limits.max_concurent\"") {
		t.Errorf("unknown key: %v %s", err, out)
	}

	write("[limits]\nmax_concurrent_per_uid = 1\n[access]\nallow_uids = [65534]\n")
	sock := filepath.Join(dir, "s.sock")
	d, err := startDaemon(sock, filepath.Join(dir, "state"), "--config", config, "--containerd", containerdAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer d.stop()
	os.Chmod(sock, 0o666)
	if out, code := asUser(sock, "execute", "-l", "bash", "-c", "echo allowed"); code != 0 || out != "allowed\n" {
		t.Fatalf("an allowed uid: %d %q", code, out)
	}
	// The per-uid quota: one execution at a time for uid 65534. The slot
	// of the one before is held until its sandbox is torn down.
	waitInfo(t, sock, "the first execution's teardown", func(i api.Info) bool { return i.Running == 0 && i.Queued == 0 })
	slow := make(chan string, 1)
	go func() { out, _ := asUser(sock, "execute", "-l", "bash", "-c", "sleep 3; echo slow done"); slow <- out }()
	waitInfo(t, sock, "the slow execution to run", func(i api.Info) bool { return i.Running == 1 })
	if out, code := asUser(sock, "execute", "-l", "bash", "-c", "echo second"); code != 125 || !strings.Contains(out, "quota") {
		t.Errorf("over the quota: %d %q", code, out)
	}
	// Reload while the slow one runs: uid 65534 is no longer allowed.
	write("[access]\nallow_uids = [4242]\n")
	d.cmd.Process.Signal(syscall.SIGHUP)
	if !waitFor(10*time.Second, func() bool { _, code := asUser(sock, "info"); return code == 1 }) {
		t.Errorf("uid 65534 still served 10s after the reload that took it off the list")
	}
	if out, code := asUser(sock, "execute", "-l", "bash", "-c", "echo refused"); code != 125 || !strings.Contains(out, "not allowed") {
		t.Errorf("a uid off the list after reload: %d %q", code, out)
	}
	if out := <-slow; out != "slow done\n" {
		t.Errorf("the execution running during the reload: %q", out)
	}
	if !strings.Contains(d.logged(), "caller refused by access control") || !strings.Contains(d.logged(), "uid=65534") {
		t.Errorf("no log line for the refused caller")
	}
	// An invalid file is refused and the old configuration stays.
	write("[access]\nallow_uids = \"everyone\"\n")
	refusedBefore := strings.Count(d.logged(), "reload refused")
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitLogged(t, d, "reload refused", refusedBefore+1)
	if _, code := asUser(sock, "info"); code != 1 {
		t.Errorf("after an invalid reload uid 65534 got in: %d", code)
	}
	if _, _, code := sandboxctl(t, "", "--socket", sock, "execute", "-l", "bash", "-c", "true"); code != 0 {
		t.Errorf("root after the invalid reload: %d", code)
	}
	// A language added by a reload brings its host paths into the
	// sandboxes made from then on, pooled ones included.
	data := filepath.Join(dir, "data")
	os.Mkdir(data, 0o755)
	os.WriteFile(filepath.Join(data, "greeting"), []byte("from the host path\n"), 0o644)
	write(fmt.Sprintf("[[languages]]\nname = \"greet\"\nfile_name = \"main.txt\"\nrun = [\"cat\", %q]\nhost_paths = [%q]\n", filepath.Join(data, "greeting"), data))
	d.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _, _ := sandboxctl(t, "", "--socket", sock, "languages")
		if strings.Contains(out, "greet") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reloaded language is not listed:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for range 3 { // the pool's and the cold path's alike
		if out, errOut, code := sandboxctl(t, "", "--socket", sock, "execute", "-l", "greet", "-c", "x"); code != 0 || out != "from the host path\n" {
			t.Fatalf("a language added by reload: exit %d %q %q", code, out, errOut)
		}
	}
}

// metricValue reads a sample of a daemon's metrics: -1 if there is none.
func metricValue(t testing.TB, sock, name string) float64 {
	t.Helper()
	v, err := metricOf(sock, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// metricOf is metricValue for a goroutine other than the test's, which may
// not end the test.
func metricOf(sock, name string) (float64, error) {
	status, body := request(sock, "GET", "/metrics", "", nil)
	if status != 200 {
		return 0, fmt.Errorf("metrics: %d %s", status, body)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") {
			v, _ := strconv.ParseFloat(strings.TrimPrefix(line, name+" "), 64)
			return v, nil
		}
	}
	return -1, nil
}

func TestMetrics(t *testing.T) {
	okBash := `sandboxd_executions_total{language="bash",status="ok"}`
	before := max(metricValue(t, socket, okBash), 0)
	timeoutsBefore := metricValue(t, socket, "sandboxd_timeouts_total")
	sandboxctl(t, "", "execute", "-l", "bash", "-c", "true")
	sandboxctl(t, "", "execute", "-l", "bash", "-c", "true")
	sandboxctl(t, "", "execute", "-l", "bash", "-c", "sleep 5", "-t", "0.5")
	if got := metricValue(t, socket, okBash); got != before+2 {
		t.Errorf("%s: %v, want %v", okBash, got, before+2)
	}
	if got := metricValue(t, socket, "sandboxd_timeouts_total"); got != timeoutsBefore+1 {
		t.Errorf("timeouts: %v, want %v", got, timeoutsBefore+1)
	}
	if metricValue(t, socket, "sandboxd_containerd_up") != 1 || metricValue(t, socket, `sandboxd_execution_duration_seconds_count{language="bash"}`) < 3 {
		t.Error("containerd_up or the duration histogram is missing")
	}
	if got := metricValue(t, socket, "sandboxd_leaked_containers"); got != 0 {
		t.Errorf("leaked before planting: %v", got)
	}
	// A container planted in sandboxd's namespace with its label is one
	// sandboxd does not know.
	c, err := containerd.New(containerdAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := namespaces.WithNamespace(context.Background(), "sandboxd")
	ctr, err := c.NewContainer(ctx, "planted", containerd.WithNewSpec(oci.WithRootFSPath("/nonexistent")),
		containerd.WithContainerLabels(map[string]string{"io.sandboxd.managed": "true", "io.sandboxd.kind": "execute"}))
	if err != nil {
		t.Fatal(err)
	}
	defer ctr.Delete(ctx)
	if got := metricValue(t, socket, "sandboxd_leaked_containers"); got != 1 {
		t.Errorf("leaked after planting: %v", got)
	}
	if got := metricValue(t, socket, "sandboxd_containers"); got < 1 {
		t.Errorf("containers: %v", got)
	}
	ctr.Delete(ctx)
	// The TCP endpoint, on loopback.
	dir, _ := os.MkdirTemp(suiteDir, "sbxp")
	defer os.RemoveAll(dir)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	d, err := startDaemon(filepath.Join(dir, "s.sock"), filepath.Join(dir, "state"), "--containerd", containerdAddr, "--metrics-address", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer d.stop()
	out, err := exec.Command("curl", "-sf", "http://"+addr+"/metrics").Output()
	if err != nil || !strings.Contains(string(out), "sandboxd_containerd_up 1") {
		t.Errorf("metrics over TCP: %v %.200s", err, out)
	}
}

func TestDoctor(t *testing.T) {
	out, _, code := sandboxctl(t, "", "doctor")
	if code != 0 || strings.Contains(out, "FAIL") {
		t.Fatalf("doctor here: %d\n%s", code, out)
	}
	for _, want := range []string{"containerd", "runc", "cgroups", "seccomp", "languages", "access", "runtime runc", "runtime runsc"} {
		if !regexp.MustCompile(`(?m)^ok\s+` + want).MatchString(out) {
			t.Errorf("no passing %s check:\n%s", want, out)
		}
	}
	// With containerd stopped, doctor says so and fails.
	dir, _ := os.MkdirTemp(suiteDir, "sbxd")
	defer os.RemoveAll(dir)
	addr, stopContainerd, err := startContainerd(filepath.Join(dir, "ctd"))
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	d, err := startDaemon(sock, filepath.Join(dir, "state"), "--containerd", addr)
	if err != nil {
		stopContainerd()
		t.Fatal(err)
	}
	waitPoolFull(t, sock)
	stopContainerd()
	out, _, code = sandboxctl(t, "", "--socket", sock, "doctor")
	if code == 0 || !regexp.MustCompile(`(?m)^FAIL\s+containerd\s+containerd does not answer`).MatchString(out) || !strings.Contains(out, "fix:") {
		t.Errorf("doctor with containerd stopped: %d\n%s", code, out)
	}
	// containerd back, so that the daemon cleans up its sandboxes at stop.
	_, stopContainerd, err = startContainerd(filepath.Join(dir, "ctd"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	stopContainerd()
}

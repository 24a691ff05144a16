//go:build integration

package main_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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
	dir := testDir(t, "sbxa")
	sock := filepath.Join(dir, "activated.sock")
	// It listens on the socket systemd-socket-activate passes it, not on
	// its own (--socket).
	d := startDaemon(t, daemonOpts{dir: dir, sock: filepath.Join(dir, "unused.sock"), namespace: "sandboxd-activated",
		launcher: []string{"systemd-socket-activate", "-l", sock}, noWait: true})
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
		t.Fatalf("through the inherited socket: %d %s\n%s", status, body, d.logged())
	}
	if _, err := os.Stat(d.sock); err == nil {
		t.Error("sandboxd listened itself although a socket was passed")
	}
	// The start-up line names the socket it serves on: systemd's.
	if out := d.logged(); !strings.Contains(out, " socket="+sock+" socket_activated=true") {
		t.Errorf("the log does not name the passed socket %s: %s", sock, out)
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
	dir := testDir(t, "sbxn")
	notify, path := listenNotify(t, dir)
	defer notify.conn.Close()
	ctdDir := filepath.Join(dir, "ctd")
	// containerd is down when sandboxd starts: it does not serve until
	// containerd answers.
	d := startDaemon(t, daemonOpts{dir: dir, containerd: filepath.Join(ctdDir, "c.sock"), args: []string{"--containerd-wait", "2m"},
		env: []string{"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=400000"}, noWait: true})
	sock := d.sock

	waiting := notify.until(t, "STATUS=waiting for containerd", 10*time.Second)
	// A window for a READY that should not come: what is tested is that
	// nothing arrives, which no state says sooner.
	time.Sleep(time.Second)
	for _, m := range append(waiting, drain(notify)...) {
		if strings.Contains(m, "READY=1") {
			t.Fatalf("READY before containerd answers: %q", m)
		}
	}
	ctd, err := startContainerd(ctdDir)
	if err != nil {
		t.Fatal(err)
	}
	defer ctd.stop()
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
	d.signal(syscall.SIGHUP)
	notify.until(t, "RELOADING=1", 10*time.Second)
	notify.until(t, "READY=1", 10*time.Second)
	d.signal(syscall.SIGTERM)
	notify.until(t, "STOPPING=1", 10*time.Second)
	if !d.awaitExit(30 * time.Second) {
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

func TestConfigReloadAccessAndQuota(t *testing.T) {
	dir := testDir(t, "sbxc")
	config := filepath.Join(dir, "sandboxd.toml") // the daemon's, below
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

	d := startDaemon(t, daemonOpts{dir: dir, config: "[limits]\nmax_concurrent_per_uid = 1\n[access]\nallow_uids = [65534]\n"})
	sock := d.sock
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
	d.reload(t, "[access]\nallow_uids = [4242]\n")
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
	refusedBefore := strings.Count(d.logged(), "reload refused")
	d.reload(t, "[access]\nallow_uids = \"everyone\"\n")
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
	d.reload(t, fmt.Sprintf("[[languages]]\nname = \"greet\"\nfile_name = \"main.txt\"\nrun = [\"cat\", %q]\nhost_paths = [%q]\n", filepath.Join(data, "greeting"), data))
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
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	startDaemon(t, daemonOpts{args: []string{"--metrics-address", addr}})
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
	dir := testDir(t, "sbxd")
	ctd, err := startContainerd(filepath.Join(dir, "ctd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctd.stop() }) // after the daemon's stop
	d := startDaemon(t, daemonOpts{dir: dir, containerd: ctd.addr})
	sock := d.sock
	waitPoolFull(t, sock)
	ctd.stop()
	out, _, code = sandboxctl(t, "", "--socket", sock, "doctor")
	if code == 0 || !regexp.MustCompile(`(?m)^FAIL\s+containerd\s+containerd does not answer`).MatchString(out) || !strings.Contains(out, "fix:") {
		t.Errorf("doctor with containerd stopped: %d\n%s", code, out)
	}
	// containerd back, so that the daemon cleans up its sandboxes at stop.
	if ctd, err = startContainerd(filepath.Join(dir, "ctd")); err != nil {
		t.Fatal(err)
	}
	if err := d.stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
}

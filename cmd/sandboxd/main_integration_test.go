//go:build integration

// Integration tests: the real sandboxd and sandboxctl binaries, a private
// containerd started here, and real containers. Run as root with
// `make integration` (or `go test -tags integration ./cmd/sandboxd/`).
package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// The suite's shared daemon. Its queue is small so that 429 can be reached.
const (
	maxConcurrent = 4
	maxQueued     = 4
)

var (
	binDir         string // sandboxd, sandboxctl, sandboxd-init
	containerdAddr string
	socket         string
	daemonLog      *bytes.Buffer // mainDaemon's log: read it with mainDaemon.logged()
	mainDaemon     *daemonProc
	stateDir       string // the suite's daemon's
	// suiteDir holds everything the suite makes; every test's directories
	// are in it, so that what they leave behind can be found.
	suiteDir string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "FAIL: integration tests need root (they start containerd and containers)")
		return 1
	}
	// Short paths: Unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp(suiteDir, "sbxit")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	suiteDir = dir
	// Should a test panic or the timeout strike, the reaper cleans up
	// what this function would have.
	if err := startReaper(dir); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: start the reaper:", err)
		return 1
	}
	// Let the unprivileged user of TestNotRootExitsAtOnce reach the binary.
	os.Chmod(dir, 0o755)
	binDir = filepath.Join(dir, "bin")
	if err := buildBinaries(binDir); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: build:", err)
		return 1
	}
	var stopContainerd func()
	containerdAddr, stopContainerd, err = startContainerd(filepath.Join(dir, "ctd"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer stopContainerd()

	socket = filepath.Join(dir, "sandboxd.sock")
	stateDir = filepath.Join(dir, "state")
	d, err := startDaemon(socket, stateDir, "--containerd", containerdAddr,
		"--max-concurrent", fmt.Sprint(maxConcurrent), "--max-queued", fmt.Sprint(maxQueued))
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	daemonLog, mainDaemon = d.log, d
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- sandboxd log:\n%s\n", d.logged())
	}
	if err := d.stop(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: sandboxd did not stop cleanly:", err)
		code = 1
	}
	if races := racesReported(); len(races) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d data races reported by the daemons the suite ran:\n%s\n", len(races), strings.Join(races, "\n"))
		code = 1
	}
	// Every sandbox the suite ran must be gone from containerd, and so
	// must the shims of every containerd the tests started.
	if n, err := countContainers(containerdAddr); err != nil || n != 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d containers left in containerd after the suite (err %v)\n", n, err)
		code = 1
	}
	// Shims exit a moment after their last task.
	var shims []byte
	waitFor(10*time.Second, func() bool {
		shims, err = exec.Command("pgrep", "-af", "containerd-shim.*"+dir+"/").Output()
		return err != nil
	})
	if len(shims) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: shims left running after the suite:\n%s", shims)
		code = 1
	}
	// Sandboxes' root views go with them, whatever the namespace.
	if n, err := countViews(containerdAddr); err != nil || n != 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d snapshot views of sandboxes left after the suite (err %v)\n", n, err)
		code = 1
	}
	// gVisor's sandbox and gofer processes name their bundle, under dir.
	if out, err := exec.Command("pgrep", "-af", "runsc.*"+dir+"/").Output(); err == nil {
		fmt.Fprintf(os.Stderr, "FAIL: gVisor processes left running after the suite:\n%s", out)
		code = 1
	}
	return code
}

// buildBinaries builds sandboxd, sandboxctl and sandboxd-init into dir,
// static; with raceDaemon, sandboxd again with -race, which needs cgo (it
// runs on the host: sandboxd-init, which runs in sandboxes that have no
// libc of ours, stays static).
func buildBinaries(dir string) error {
	build := exec.Command("go", "build", "-o", dir+"/", "../../cmd/sandboxd", "../../cmd/sandboxctl", "../../cmd/sandboxd-init")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	if !raceDaemon {
		return nil
	}
	build = exec.Command("go", "build", "-race", "-o", filepath.Join(dir, "sandboxd"), "../../cmd/sandboxd")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("sandboxd with -race: %v\n%s", err, out)
	}
	fmt.Fprintln(os.Stderr, "sandboxd is built with -race: a data race it reports fails the suite")
	return nil
}

// startContainerd starts a private containerd under dir, as containerd's
// own integration tests do, and returns its address and how to stop it.
func startContainerd(dir string) (string, func(), error) {
	p, err := startContainerdProc(dir)
	if err != nil {
		return "", nil, err
	}
	return p.addr, p.stop, nil
}

// containerdProc is a private containerd.
type containerdProc struct {
	addr string
	cmd  *exec.Cmd
	stop func() // SIGTERM, and wait
}

// kill ends containerd at once, as a crash would; its shims live on.
func (p *containerdProc) kill() {
	p.cmd.Process.Kill()
	p.stop()
}

// startContainerdProc starts a private containerd under dir; started again
// on the same dir, it finds the shims and tasks of the one before.
func startContainerdProc(dir string) (*containerdProc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	containerdAddr := filepath.Join(dir, "c.sock")
	config := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), containerdAddr, containerdAddr+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := startProc(cmd); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			logf.Close()
		})
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := containerd.New(containerdAddr, containerd.WithTimeout(time.Second))
		if err == nil {
			ok, err := c.IsServing(context.Background())
			c.Close()
			if err == nil && ok {
				return &containerdProc{addr: containerdAddr, cmd: cmd, stop: stop}, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			log, _ := os.ReadFile(logf.Name())
			return nil, fmt.Errorf("containerd did not serve within 30s:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countContainers counts the containers of every namespace of a containerd.
func countContainers(addr string) (int, error) {
	return countInNamespaces(addr, func(ctx context.Context, c *containerd.Client) (int, error) {
		ctrs, err := c.Containers(ctx)
		return len(ctrs), err
	})
}

// countViews counts the snapshot views sandboxd made, in every namespace.
func countViews(addr string) (int, error) {
	return countInNamespaces(addr, func(ctx context.Context, c *containerd.Client) (int, error) {
		n := 0
		err := c.SnapshotService("overlayfs").Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			if info.Kind == snapshots.KindView && info.Labels["io.sandboxd.managed"] == "true" {
				n++
			}
			return nil
		})
		return n, err
	})
}

// countInNamespaces sums count over every namespace of a containerd.
func countInNamespaces(addr string, count func(context.Context, *containerd.Client) (int, error)) (int, error) {
	c, err := containerd.New(addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	nss, err := c.NamespaceService().List(context.Background())
	if err != nil {
		return 0, err
	}
	total := 0
	for _, ns := range nss {
		n, err := count(namespaces.WithNamespace(context.Background(), ns), c)
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}

// namespaceOf is the containerd namespace of a test daemon's state dir.
func namespaceOf(state string) string {
	return fmt.Sprintf("sandboxd-%x", sha256.Sum256([]byte(state)))[:24]
}

type daemonProc struct {
	cmd *exec.Cmd
	// log is what the daemon writes, while it writes it: read it with
	// logged, under its writer's lock.
	log  *bytes.Buffer
	done chan error
	// stopOnce makes stop safe to call again, as a deferred stop after an
	// explicit one does.
	stopOnce sync.Once
	stopErr  error
}

func startDaemon(sock, state string, args ...string) (*daemonProc, error) {
	return startDaemonEnv(nil, sock, state, args...)
}

// startDaemonEnv starts sandboxd with more environment, such as systemd's,
// and an empty configuration file, and waits until it serves. A daemon
// other than the suite's own gets a containerd namespace of its own, named
// after its state dir (so a restart finds it again): daemons sharing a
// namespace would clean up each other's sandboxes.
func startDaemonEnv(env []string, sock, state string, args ...string) (*daemonProc, error) {
	d := &daemonProc{log: &bytes.Buffer{}, done: make(chan error, 1)}
	ns := "sandboxd"
	if mainDaemon != nil {
		ns = namespaceOf(state)
	}
	args = append([]string{"--config", "/nonexistent/sandboxd.toml", "--socket", sock, "--state-dir", state, "--namespace", ns}, args...)
	// Under the umask of its unit (UMask=0077): what sandboxes must read
	// may not depend on it.
	d.cmd = exec.Command("/bin/sh", append([]string{"-c", `umask 077 && exec "$0" "$@"`, filepath.Join(binDir, "sandboxd")}, args...)...)
	d.cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	d.cmd.Stdout, d.cmd.Stderr = pw, pw
	logged := make(chan struct{})
	go func() {
		io.Copy(lockedWriter{d.log}, pr)
		close(logged)
	}()
	if err := startProc(d.cmd); err != nil {
		return nil, err
	}
	watchForRaces(d.log)
	go func() { err := d.cmd.Wait(); pw.Close(); <-logged; d.done <- err }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if status, _ := request(sock, "GET", "/v1/health", "", nil); status == 200 {
			return d, nil
		}
		select {
		case err := <-d.done:
			return nil, fmt.Errorf("sandboxd exited at start: %v\n%s", err, d.logged())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.cmd.Process.Kill()
			return nil, fmt.Errorf("sandboxd did not serve within 60s\n%s", d.logged())
		}
	}
}

// logged is what the daemon has written so far.
func (d *daemonProc) logged() string { return lockedString(d.log) }

// stop ends the daemon with SIGTERM; a data race it reported is an error.
func (d *daemonProc) stop() error {
	d.stopOnce.Do(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case d.stopErr = <-d.done:
		case <-time.After(60 * time.Second):
			d.cmd.Process.Kill()
			d.stopErr = fmt.Errorf("still running 60s after SIGTERM")
		}
		if races := racesIn(d.logged()); len(races) > 0 {
			d.stopErr = errors.Join(d.stopErr, fmt.Errorf("%d data races reported (printed at the end of the suite)", len(races)))
		}
	})
	return d.stopErr
}

// lockedWriter writes to a buffer under logMu: a process's output is
// written by os/exec's copying goroutine while a test reads it. Read the
// buffer with lockedString.
type lockedWriter struct{ b *bytes.Buffer }

var logMu = make(chan struct{}, 1)

func (w lockedWriter) Write(p []byte) (int, error) {
	logMu <- struct{}{}
	defer func() { <-logMu }()
	return w.b.Write(p)
}

// lockedString reads a buffer that a lockedWriter fills.
func lockedString(b *bytes.Buffer) string {
	logMu <- struct{}{}
	defer func() { <-logMu }()
	return b.String()
}

// waitFor polls cond every 50ms until it holds, for at most within, and
// says whether it held.
func waitFor(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// info reads a daemon's GET /v1/info.
func info(t testing.TB, sock string) api.Info {
	t.Helper()
	status, body := request(sock, "GET", "/v1/info", "", nil)
	var i api.Info
	if err := json.Unmarshal(body, &i); status != 200 || err != nil {
		t.Fatalf("info: %d %s", status, body)
	}
	return i
}

// waitInfo waits, for at most a minute, until a daemon's /v1/info meets
// cond: executions running or queued, sessions.
func waitInfo(t testing.TB, sock, what string, cond func(api.Info) bool) {
	t.Helper()
	var last api.Info
	if !waitFor(time.Minute, func() bool { last = info(t, sock); return cond(last) }) {
		t.Fatalf("waiting for %s: info is %+v", what, last)
	}
}

// waitLogged waits, for at most a minute, until a daemon has logged s at
// least n times in all.
func waitLogged(t testing.TB, d *daemonProc, s string, n int) {
	t.Helper()
	if !waitFor(time.Minute, func() bool { return strings.Count(d.logged(), s) >= n }) {
		t.Fatalf("%q is not %d times in the daemon's log:\n%s", s, n, d.logged())
	}
}

// request sends one API request to the daemon at sock, on a connection of
// its own that it closes (a connection kept idle would count in the
// daemon's goroutines and descriptors).
func request(sock, method, path, body string, header map[string]string) (int, []byte) {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}, Timeout: 5 * time.Minute}
	// Its connection goes with it: left idle, the connections of many
	// requests would reach the daemon's cap of connections per uid.
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest(method, "http://sandboxd"+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// requestEarly sends a request and reads the answer while the body is
// still being sent, as curl does: a body refused by its length is
// answered before the daemon reads it, and Go's HTTP client may drop that
// answer when the daemon closes the connection under its write.
func requestEarly(sock, method, path, body string) (int, []byte) {
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	go func() {
		fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: sandboxd\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", method, path, len(body))
		io.WriteString(conn, body) // cut short once the daemon has answered
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// execute runs a request through the API and decodes the result.
func execute(t *testing.T, req api.ExecuteRequest) *api.ExecuteResult {
	t.Helper()
	res, err := tryExecute(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// tryExecute is execute for a goroutine other than the test's, which may
// not end the test: it returns what went wrong.
func tryExecute(req api.ExecuteRequest) (*api.ExecuteResult, error) {
	b, _ := json.Marshal(req)
	status, body := request(socket, "POST", "/v1/execute", string(b), nil)
	if status != 200 {
		return nil, fmt.Errorf("execute: status %d: %s", status, body)
	}
	var res api.ExecuteResult
	if err := json.Unmarshal(body, &res); err != nil {
		return nil, fmt.Errorf("execute: %v: %s", err, body)
	}
	return &res, nil
}

// sandboxctl runs the CLI against the suite's daemon.
func sandboxctl(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "sandboxctl"), args...)
	cmd.Env = append(os.Environ(), "SANDBOXD_SOCKET="+socket)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	code, err := exitCode(runProc(cmd))
	if err != nil {
		t.Fatalf("sandboxctl: %v", err)
	}
	return out.String(), errb.String(), code
}

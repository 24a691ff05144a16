//go:build integration

// The integration tests' helpers: a directory of a test's own, the one
// daemon starter (startDaemon, with daemonOpts), the one sandboxctl runner
// (cli), the API requests, the waits, and the one probe of what a
// containerd holds (probeContainerd).
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
	"maps"
	"net"
	"net/http"
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

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// testDir makes a directory in the suite's for one test, which other uids
// may traverse (to reach a socket whose mode lets them in), removed when
// the test ends: after the daemons started in it have stopped, as their
// cleanups are registered later.
func testDir(tb testing.TB, prefix string) string {
	tb.Helper()
	dir, err := os.MkdirTemp(suiteDir, prefix)
	if err != nil {
		tb.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// containerdProc is a private containerd.
type containerdProc struct {
	addr string
	cmd  *exec.Cmd
	stop func() // SIGTERM, and wait; again, it does nothing
}

// kill ends containerd at once, as a crash would; its shims live on.
func (p *containerdProc) kill() {
	p.cmd.Process.Kill()
	p.stop()
}

// startContainerd starts a private containerd under dir, as containerd's
// own integration tests do, and waits until it serves; started again on
// the same dir, it finds the shims and tasks of the one before.
func startContainerd(dir string) (*containerdProc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	addr := filepath.Join(dir, "c.sock")
	config := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), addr, addr+".ttrpc")
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
		c, err := containerd.New(addr, containerd.WithTimeout(time.Second))
		if err == nil {
			ok, err := c.IsServing(context.Background())
			c.Close()
			if err == nil && ok {
				return &containerdProc{addr: addr, cmd: cmd, stop: stop}, nil
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

// daemonOpts say how to start a sandboxd. The zero value starts one in a
// directory of its own, on the suite's containerd, in a containerd
// namespace of its own, with no configuration file, and returns once it
// serves.
type daemonOpts struct {
	// dir holds its socket (s.sock), its state directory (state) and its
	// configuration file (sandboxd.toml); "": startDaemon makes one.
	dir string
	// sock and state, when set, are its socket and state directory
	// instead of dir's.
	sock, state string
	// config is the text of its configuration file; "": it has none.
	config string
	// containerd is the address of its containerd, or "managed"; "": the
	// suite's.
	containerd string
	// namespace is its containerd namespace; "": one named after its state
	// directory (namespaceOf), so that a restart finds it again. Daemons
	// sharing a namespace would clean up each other's sandboxes.
	namespace string
	args      []string // more flags
	env       []string // more environment, such as systemd's
	// launcher is a command that runs sandboxd, with its flags, such as
	// systemd-socket-activate's.
	launcher []string
	// noWait returns once the daemon is started, not once it serves.
	noWait bool
	// checkStop fails the test if the daemon does not stop cleanly when
	// the test ends; otherwise that is only logged.
	checkStop bool

	configFile string // where config was written, for reload and restart
}

// daemonProc is a running sandboxd.
type daemonProc struct {
	sock, state, ns string
	cmd             *exec.Cmd
	// logPath is the file the daemon writes its log to, as its standard
	// output and error themselves: a line it wrote before it answered a
	// request is there when the answer is (a pipe copied by a goroutine
	// could lag behind the answer). Read it with logged.
	logPath string
	done    chan error
	// stopOnce makes stop safe to call again, as a cleanup's stop after an
	// explicit one does; kill and awaitExit count as the stop.
	stopOnce sync.Once
	stopErr  error
	opts     daemonOpts // resolved, to restart it
}

// startDaemon starts a sandboxd of a test's own as o says, and stops it
// when the test ends (after the cleanups registered later, before those
// registered earlier), showing its log if the test failed.
func startDaemon(tb testing.TB, o daemonOpts) *daemonProc {
	tb.Helper()
	if o.dir == "" && (o.sock == "" || o.state == "" || o.config != "") {
		o.dir = testDir(tb, "sbxd")
	}
	d, err := launchDaemon(o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := d.stop(); err != nil {
			if d.opts.checkStop {
				tb.Errorf("sandboxd did not stop cleanly: %v", err)
			} else {
				tb.Logf("sandboxd did not stop cleanly: %v", err)
			}
		}
		if tb.Failed() {
			tb.Logf("sandboxd log:\n%s", d.logged())
			// A test that failed half-way may not have deleted its
			// sessions (its deletes can reach a daemon already stopped):
			// what its daemon kept must not fail the suite's check for
			// leaks as well, which is there for tests that passed.
			if d.opts.containerd == containerdAddr && d.ns == namespaceOf(d.state) {
				if n, err := sweepNamespace(containerdAddr, d.ns); n > 0 || err != nil {
					tb.Logf("removed %d containers the failed test left in namespace %s: %v", n, d.ns, err)
				}
			}
		}
	})
	return d
}

// sweepNamespace kills and deletes every container of namespace ns in the
// containerd at addr, with its task and root: how many it removed.
func sweepNamespace(addr, ns string) (int, error) {
	c, err := containerd.New(addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	ctrs, err := c.Containers(ctx)
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, ctr := range ctrs {
		if task, err := ctr.Task(ctx, nil); err == nil {
			if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil {
				errs = append(errs, err)
			}
		}
		if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			errs = append(errs, err)
		}
	}
	return len(ctrs), errors.Join(errs...)
}

// launchDaemon starts sandboxd as o says, under the umask of its unit
// (UMask=0077: what sandboxes must read may not depend on it), and unless
// o.noWait, waits until it serves. It touches no test: TestMain starts the
// suite's daemon with it.
func launchDaemon(o daemonOpts) (*daemonProc, error) {
	if o.sock == "" {
		o.sock = filepath.Join(o.dir, "s.sock")
	}
	if o.state == "" {
		o.state = filepath.Join(o.dir, "state")
	}
	if o.containerd == "" {
		o.containerd = containerdAddr
	}
	if o.namespace == "" {
		o.namespace = namespaceOf(o.state)
	}
	if o.config != "" {
		o.configFile = filepath.Join(o.dir, "sandboxd.toml")
		if err := os.WriteFile(o.configFile, []byte(o.config), 0o644); err != nil {
			return nil, err
		}
		o.config = "" // written: a restart reads the file as it is then
	}
	config := o.configFile
	if config == "" {
		config = "/nonexistent/sandboxd.toml"
	}
	args := append([]string{"--config", config, "--socket", o.sock, "--state-dir", o.state, "--namespace", o.namespace, "--containerd", o.containerd}, o.args...)
	argv := append(slices.Clip(o.launcher), append([]string{"/bin/sh", "-c", `umask 077 && exec "$0" "$@"`, filepath.Join(binDir, "sandboxd")}, args...)...)
	// The logs outlive the tests' directories: TestMain reads them all for
	// race reports.
	logDir := filepath.Join(suiteDir, "logs")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return nil, err
	}
	logFile, err := os.CreateTemp(logDir, "sandboxd-*.log")
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	d := &daemonProc{sock: o.sock, state: o.state, ns: o.namespace, logPath: logFile.Name(), done: make(chan error, 1), opts: o}
	d.cmd = exec.Command(argv[0], argv[1:]...)
	d.cmd.Env = append(os.Environ(), o.env...)
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	if err := startProc(d.cmd); err != nil {
		return nil, err
	}
	watchForRaces(d.logPath)
	go func() { d.done <- d.cmd.Wait() }()
	if o.noWait {
		return d, nil
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if status, _ := request(d.sock, "GET", "/v1/health", "", nil); status == 200 {
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
func (d *daemonProc) logged() string {
	b, _ := os.ReadFile(d.logPath)
	return string(b)
}

// pid is the daemon's process id.
func (d *daemonProc) pid() int { return d.cmd.Process.Pid }

// signal sends the daemon a signal, such as SIGHUP.
func (d *daemonProc) signal(sig os.Signal) { d.cmd.Process.Signal(sig) }

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

// kill ends the daemon with SIGKILL, as a crash would: it cleans up
// nothing. Its stop is then a no-op.
func (d *daemonProc) kill() {
	d.stopOnce.Do(func() {
		d.cmd.Process.Kill()
		<-d.done
	})
}

// awaitExit waits up to timeout for the daemon to exit by itself, and
// reports whether it did; its stop is then a no-op.
func (d *daemonProc) awaitExit(timeout time.Duration) bool {
	select {
	case err := <-d.done:
		d.stopOnce.Do(func() { d.stopErr = err })
		return true
	case <-time.After(timeout):
		return false
	}
}

// reload writes config as the daemon's configuration file and sends it
// SIGHUP.
func (d *daemonProc) reload(tb testing.TB, config string) {
	tb.Helper()
	if d.opts.configFile == "" {
		tb.Fatal("reload of a daemon started without a configuration file")
	}
	if err := os.WriteFile(d.opts.configFile, []byte(config), 0o644); err != nil {
		tb.Fatal(err)
	}
	d.signal(syscall.SIGHUP)
}

// restart starts another daemon as d was started, on its socket, state
// directory and configuration file, once d has stopped (a d still running
// is stopped first), and stops it when the test ends.
func (d *daemonProc) restart(tb testing.TB) *daemonProc {
	tb.Helper()
	if err := d.stop(); err != nil && d.opts.checkStop {
		tb.Errorf("sandboxd did not stop cleanly: %v", err)
	}
	return startDaemon(tb, d.opts)
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

// cli says how to run sandboxctl. The zero value runs it as root against
// the suite's daemon, with this process's environment and an empty
// standard input.
type cli struct {
	sock  string // SANDBOXD_SOCKET; "": the suite's daemon
	stdin string
	// env is its environment, SANDBOXD_SOCKET aside; nil: this process's.
	env  []string
	cred *syscall.Credential // the user it runs as; nil: root
	// combined sends its stderr to its stdout, as written.
	combined bool
}

// nobody is the credential of uid 65534.
var nobody = &syscall.Credential{Uid: 65534, Gid: 65534}

// command is sandboxctl with args, as c says, for a test that reads or
// writes it while it runs. Start it with startProc.
func (c cli) command(args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(binDir, "sandboxctl"), args...)
	env := c.env
	if env == nil {
		env = os.Environ()
	}
	sock := c.sock
	if sock == "" {
		sock = socket
	}
	cmd.Env = append(slices.Clip(env), "SANDBOXD_SOCKET="+sock)
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd
}

// try runs sandboxctl with args: what it printed and its exit code, or an
// error when it could not be run or waited for at all. It touches no test,
// so goroutines may call it.
func (c cli) try(args ...string) (stdout, stderr string, code int, err error) {
	cmd := c.command(args...)
	cmd.Stdin = strings.NewReader(c.stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if c.combined {
		cmd.Stderr = &out
	}
	code, err = exitCode(runProc(cmd))
	return out.String(), errb.String(), code, err
}

// run is try that fails the test when sandboxctl could not be run: a
// binary that cannot be started must not pass for exit 0.
func (c cli) run(tb testing.TB, args ...string) (stdout, stderr string, code int) {
	tb.Helper()
	stdout, stderr, code, err := c.try(args...)
	if err != nil {
		tb.Fatalf("sandboxctl %v: %v", args, err)
	}
	return stdout, stderr, code
}

// sandboxctl runs the CLI against the suite's daemon.
func sandboxctl(tb testing.TB, stdin string, args ...string) (stdout, stderr string, code int) {
	tb.Helper()
	return cli{stdin: stdin}.run(tb, args...)
}

// notRun is asUser's code when sandboxctl could not be run at all: no
// process exits with it (a process killed by a signal gives -1).
const notRun = -2

// asUser runs sandboxctl as uid 65534 against sock, with no environment
// but SANDBOXD_SOCKET: its combined output and exit code, or notRun and
// why when it could not be started or waited for. It touches no test.
func asUser(sock string, args ...string) (string, int) {
	out, _, code, err := cli{sock: sock, env: []string{}, cred: nobody, combined: true}.try(args...)
	if err != nil {
		return fmt.Sprintf("sandboxctl as uid 65534 did not run: %v\n%s", err, out), notRun
	}
	return out, code
}

// unixClient is an HTTP client of the daemon at sock. Without keepAlive,
// each request has a connection of its own, closed after its answer.
func unixClient(sock string, keepAlive bool) *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: !keepAlive, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
}

// keptClient is an HTTP client on sock that keeps its connections, as a
// program that sends many requests does.
func keptClient(sock string) *http.Client {
	c := unixClient(sock, true)
	c.Timeout = 2 * time.Minute
	return c
}

// send sends one request to the daemon at sock, on a connection of its
// own that it closes (a connection kept idle would count in the daemon's
// goroutines and descriptors, and against its cap of connections per
// uid). A Content-Length header sets the request's length, whatever the
// body holds. It touches no test.
func send(sock, method, path string, body io.Reader, header map[string]string) (int, []byte, error) {
	client := unixClient(sock, false)
	client.Timeout = 5 * time.Minute
	defer client.CloseIdleConnections()
	req, err := http.NewRequest(method, "http://sandboxd"+path, body)
	if err != nil {
		return 0, nil, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if cl, ok := header["Content-Length"]; ok {
		req.ContentLength, _ = strconv.ParseInt(cl, 10, 64)
		req.Header.Del("Content-Length")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// request is send with a JSON body held in a string (none when empty): an
// error that kept it from an answer is the body of status 0.
func request(sock, method, path, body string, header map[string]string) (int, []byte) {
	h := map[string]string{}
	if body != "" {
		h["Content-Type"] = "application/json"
	}
	maps.Copy(h, header)
	status, b, err := send(sock, method, path, strings.NewReader(body), h)
	if status == 0 {
		return 0, []byte(err.Error())
	}
	return status, b
}

// requestEarly sends a request and reads the answer while the body is
// still being sent, as curl does: a body refused by its length is
// answered before the daemon reads it, and Go's HTTP client may drop that
// answer when the daemon closes the connection under its write.
func requestEarly(sock, method, path, body string) (int, []byte) {
	return requestEarlyFrom(sock, method, path, strings.NewReader(body), int64(len(body)))
}

// requestEarlyFrom is requestEarly with a body of n bytes read from r.
func requestEarlyFrom(sock, method, path string, r io.Reader, n int64) (int, []byte) {
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	go func() {
		fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: sandboxd\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", method, path, n)
		io.Copy(conn, r) // cut short once the daemon has answered
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// post sends a JSON request with c and decodes a 2xx answer into out.
func post(c *http.Client, path string, req, out any) (int, error) {
	b, _ := json.Marshal(req)
	resp, err := c.Post("http://sandboxd"+path, "application/json", strings.NewReader(string(b)))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s", body)
	}
	return resp.StatusCode, json.Unmarshal(body, out)
}

// executeOn runs a request on the daemon at sock: its status, its result
// when that is 200, and its body. It touches no test, so goroutines may
// call it.
func executeOn(sock string, req api.ExecuteRequest) (int, *api.ExecuteResult, string) {
	b, _ := json.Marshal(req)
	status, body := request(sock, "POST", "/v1/execute", string(b), nil)
	var res api.ExecuteResult
	if status == 200 {
		json.Unmarshal(body, &res)
	}
	return status, &res, string(body)
}

// mustExecute runs a request on the daemon at sock and fails the test
// unless it is answered 200 with a result.
func mustExecute(tb testing.TB, sock string, req api.ExecuteRequest) *api.ExecuteResult {
	tb.Helper()
	status, res, body := executeOn(sock, req)
	if status != 200 || !json.Valid([]byte(body)) {
		tb.Fatalf("execute %.60q: %d %s", req.Code, status, body)
	}
	return res
}

// execute runs a request on the suite's daemon.
func execute(tb testing.TB, req api.ExecuteRequest) *api.ExecuteResult {
	tb.Helper()
	return mustExecute(tb, socket, req)
}

// createSession creates a session on the daemon at sock.
func createSession(tb testing.TB, sock string, req api.CreateSessionRequest) api.Session {
	tb.Helper()
	b, _ := json.Marshal(req)
	status, body := request(sock, "POST", "/v1/sessions", string(b), nil)
	var s api.Session
	if status != 201 || json.Unmarshal(body, &s) != nil {
		tb.Fatalf("create session %+v: %d %s", req, status, body)
	}
	return s
}

// showSession reads a session of the daemon at sock.
func showSession(tb testing.TB, sock, id string) api.Session {
	tb.Helper()
	status, body := request(sock, "GET", "/v1/sessions/"+id, "", nil)
	var s api.Session
	if status != 200 || json.Unmarshal(body, &s) != nil {
		tb.Fatalf("show session %s: %d %s", id, status, body)
	}
	return s
}

// info reads a daemon's GET /v1/info.
func info(tb testing.TB, sock string) api.Info {
	tb.Helper()
	status, body := request(sock, "GET", "/v1/info", "", nil)
	var i api.Info
	if err := json.Unmarshal(body, &i); status != 200 || err != nil {
		tb.Fatalf("info: %d %s", status, body)
	}
	return i
}

// metricValue reads a sample of a daemon's metrics: -1 if there is none.
func metricValue(tb testing.TB, sock, name string) float64 {
	tb.Helper()
	v, err := metricOf(sock, name)
	if err != nil {
		tb.Fatal(err)
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
	if v, ok := metricIn(body, name); ok {
		return v, nil
	}
	return -1, nil
}

// metricIn finds a sample, such as `name{label="value"}`, in the text of
// /metrics.
func metricIn(metrics []byte, name string) (float64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(metrics))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f, true
		}
	}
	return 0, false
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

// waitUntil polls cond every 100ms until it holds, or fails the test after
// timeout.
func waitUntil(tb testing.TB, what string, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitSettled reads a value every 100ms until two reads in a row agree,
// for at most 5 seconds.
func waitSettled(read func() float64) {
	last := read()
	waitFor(5*time.Second, func() bool {
		time.Sleep(100 * time.Millisecond)
		v := read()
		settled := v == last
		last = v
		return settled
	})
}

// waitInfo waits, for at most a minute, until a daemon's /v1/info meets
// cond: executions running or queued, sessions.
func waitInfo(tb testing.TB, sock, what string, cond func(api.Info) bool) {
	tb.Helper()
	var last api.Info
	if !waitFor(time.Minute, func() bool { last = info(tb, sock); return cond(last) }) {
		tb.Fatalf("waiting for %s: info is %+v", what, last)
	}
}

// waitLogged waits, for at most a minute, until a daemon has logged s at
// least n times in all.
func waitLogged(tb testing.TB, d *daemonProc, s string, n int) {
	tb.Helper()
	if !waitFor(time.Minute, func() bool { return strings.Count(d.logged(), s) >= n }) {
		tb.Fatalf("%q is not %d times in the daemon's log:\n%s", s, n, d.logged())
	}
}

// waitPoolFull waits until a daemon's pool holds as many sandboxes as the
// CPUs allow by default (2 per CPU), and containerd no container beyond
// those of the pool, the sessions and the executions running: no refill,
// and no sandbox an execution made for itself while the pool was empty,
// is under way.
func waitPoolFull(tb testing.TB, sock string) {
	tb.Helper()
	var want, ready, containers, cells float64
	var i api.Info
	full := waitFor(time.Minute, func() bool {
		want = metricValue(tb, sock, "sandboxd_pool_target")
		ready = metricValue(tb, sock, "sandboxd_pool_ready")
		containers = metricValue(tb, sock, "sandboxd_containers")
		cells = metricValue(tb, sock, "sandboxd_cells_idle")
		i = info(tb, sock)
		return want > 0 && ready >= want && containers <= ready+cells+float64(i.Sessions+i.Running)
	})
	if !full {
		tb.Fatalf("the pool did not fill to %v: %v ready, %v containers, %d sessions, %d running", want, ready, containers, i.Sessions, i.Running)
	}
}

// namespaceOf is the containerd namespace of a test daemon's state dir.
func namespaceOf(state string) string {
	return fmt.Sprintf("sandboxd-%x", sha256.Sum256([]byte(state)))[:24]
}

// containerdHolds is what a containerd holds, in one namespace or in all:
// what sandboxes may leave behind.
type containerdHolds struct {
	containers []string         // namespace/id
	tasks      []string         // namespace/id, of a container's task
	snapshots  []snapshots.Info // of the overlayfs snapshotter
	shims      []string         // the shim processes it started: pid and command line
}

// views counts the snapshot views, the roots of sandboxes, that are not an
// image's base.
func (h containerdHolds) views() int {
	n := 0
	for _, s := range h.snapshots {
		if s.Kind == snapshots.KindView && s.Labels["io.sandboxd.base"] == "" {
			n++
		}
	}
	return n
}

// bases counts the bases sandboxd made of images, on which their
// sandboxes' views sit.
func (h containerdHolds) bases() int {
	n := 0
	for _, s := range h.snapshots {
		if s.Labels["io.sandboxd.base"] != "" {
			n++
		}
	}
	return n
}

// holds reports whether a container of namespace ns is there.
func (h containerdHolds) holds(ns, id string) bool {
	return slices.Contains(h.containers, ns+"/"+id)
}

func (h containerdHolds) String() string {
	return fmt.Sprintf("%d containers %v, %d tasks %v, %d views, %d bases, %d shims %q",
		len(h.containers), h.containers, len(h.tasks), h.tasks, h.views(), h.bases(), len(h.shims), h.shims)
}

// probeContainerd lists what the containerd at addr holds in namespace ns,
// or in every namespace when ns is "": containers, tasks, snapshots, and
// the shim processes it started for them.
func probeContainerd(addr, ns string) (containerdHolds, error) {
	var h containerdHolds
	c, err := containerd.New(addr)
	if err != nil {
		return h, err
	}
	defer c.Close()
	nss := []string{ns}
	if ns == "" {
		if nss, err = c.NamespaceService().List(context.Background()); err != nil {
			return h, err
		}
	}
	for _, ns := range nss {
		ctx := namespaces.WithNamespace(context.Background(), ns)
		ctrs, err := c.Containers(ctx)
		if err != nil {
			return h, err
		}
		for _, ctr := range ctrs {
			h.containers = append(h.containers, ns+"/"+ctr.ID())
			if _, err := ctr.Task(ctx, nil); err == nil {
				h.tasks = append(h.tasks, ns+"/"+ctr.ID())
			}
		}
		err = c.SnapshotService("overlayfs").Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			h.snapshots = append(h.snapshots, info)
			return nil
		})
		if err != nil {
			return h, err
		}
	}
	h.shims = shimsOf(addr, ns)
	return h, nil
}

// mustProbeContainerd is probeContainerd that fails the test on an error.
func mustProbeContainerd(tb testing.TB, addr, ns string) containerdHolds {
	tb.Helper()
	h, err := probeContainerd(addr, ns)
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

// containerExistsIn reports whether the containerd at addr holds container
// id in namespace ns ("sandboxd": the suite's daemon's).
func containerExistsIn(tb testing.TB, addr, ns, id string) bool {
	tb.Helper()
	return mustProbeContainerd(tb, addr, ns).holds(ns, id)
}

// shimsOf lists the shim processes of the containerd at addr (their
// command line names it: -address ADDR), of namespace ns unless it is "".
func shimsOf(addr, ns string) []string {
	entries, _ := os.ReadDir("/proc")
	var shims []string
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte("containerd-shim")) {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
		if !hasFlag(args, "-address", addr) || ns != "" && !hasFlag(args, "-namespace", ns) {
			continue
		}
		shims = append(shims, e.Name()+" "+strings.Join(args, " "))
	}
	return shims
}

// hasFlag reports whether args hold flag followed by value.
func hasFlag(args []string, flag, value string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag && args[i+1] == value {
			return true
		}
	}
	return false
}

// pgrep reports whether a process whose command line contains s runs on
// the host.
func pgrep(s string) bool {
	return exec.Command("pgrep", "-f", s).Run() == nil
}

// statusKB reads a "Name: N kB" line, such as VmRSS of /proc/PID/status or
// MemAvailable of /proc/meminfo, in bytes. It touches no test.
func statusKB(path, name string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, name+":"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in %s", name, path)
}

// mustStatusKB is statusKB that fails the test on an error.
func mustStatusKB(tb testing.TB, path, name string) int64 {
	tb.Helper()
	v, err := statusKB(path, name)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// procStatusKB reads a "Name: N kB" line of a process's /proc/PID/status.
func procStatusKB(tb testing.TB, pid int, name string) int64 {
	tb.Helper()
	return mustStatusKB(tb, fmt.Sprintf("/proc/%d/status", pid), name)
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

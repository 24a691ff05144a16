//go:build integration

// What operators rely on, through the real daemon: the values of the
// metrics, a log that never holds what was submitted or printed, doctor's
// failures, a reload of limits under a live session, the shutdown grace
// running out, access through a supplementary group; and sessions adopted
// by a daemon started after the one before was killed with SIGKILL.
package main_test

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// marker is a random word to plant in what a test submits and then look
// for where it must not be.
func marker() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ndjsonStream is a streamed execution being read.
type ndjsonStream struct {
	body   io.ReadCloser
	dec    *json.Decoder
	id     string
	stdout strings.Builder
}

// openStream posts a streamed execution and reads its start event. It does
// not touch t.
func openStream(sock string, req api.ExecuteRequest) (*ndjsonStream, error) {
	b, _ := json.Marshal(req)
	hreq, _ := http.NewRequest("POST", "http://sandboxd/v1/execute", strings.NewReader(string(b)))
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", api.NDJSON)
	resp, err := unixClient(sock, false).Do(hreq)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	s := &ndjsonStream{body: resp.Body, dec: json.NewDecoder(bufio.NewReader(resp.Body))}
	ev, _, err := s.next()
	if err != nil {
		resp.Body.Close()
		return nil, err
	}
	if ev.Type != api.EventStart || ev.ID == "" {
		resp.Body.Close()
		return nil, fmt.Errorf("first event %+v, not the start", ev)
	}
	s.id = ev.ID
	return s, nil
}

// next reads one event; the result event's result comes with it.
func (s *ndjsonStream) next() (api.StreamEvent, *api.ExecuteResult, error) {
	var raw json.RawMessage
	if err := s.dec.Decode(&raw); err != nil {
		return api.StreamEvent{}, nil, fmt.Errorf("the stream ended without a result: %w", err)
	}
	var ev api.StreamEvent
	if err := json.Unmarshal(raw, &ev); err != nil {
		return ev, nil, err
	}
	switch ev.Type {
	case api.EventStdout:
		s.stdout.WriteString(ev.Data)
	case api.EventResult:
		var r api.ResultEvent
		err := json.Unmarshal(raw, &r)
		return ev, &r.ExecuteResult, err
	case api.EventError:
		return ev, nil, fmt.Errorf("error event: %s (%s)", ev.Error, ev.Code)
	}
	return ev, nil, nil
}

// untilStdout reads events until the stdout streamed so far holds want.
func (s *ndjsonStream) untilStdout(want string) error {
	for !strings.Contains(s.stdout.String(), want) {
		_, res, err := s.next()
		if err != nil {
			return err
		}
		if res != nil {
			return fmt.Errorf("the execution ended before printing %q: %+v", want, res)
		}
	}
	return nil
}

// result reads the rest of the stream, up to its result.
func (s *ndjsonStream) result() (*api.ExecuteResult, error) {
	defer s.body.Close()
	for {
		_, res, err := s.next()
		if err != nil || res != nil {
			return res, err
		}
	}
}

// TestOperatorMetricValues checks what each gauge and counter says against
// what is known to happen, on a daemon with one run slot, a pool of 3 and
// a containerd of its own, stopped and started again.
func TestOperatorMetricValues(t *testing.T) {
	dir := testDir(t, "sbxom")
	ctd, err := startContainerd(filepath.Join(dir, "ctd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctd.stop() }) // after the daemon's stop: it cleans up through containerd
	// Two pools of 3, of sandboxes and of cells; used cells wait a second
	// only, so that the pools' are then all the containers.
	const pool = 2 * 3
	sock := startDaemon(t, daemonOpts{dir: dir, config: "[pool]\nsize = 3\nidle = \"1s\"\nmax_age = \"1s\"\n", containerd: ctd.addr,
		args: []string{"--max-concurrent", "1"}, checkStop: true}).sock
	m := func(name string) float64 { return metricValue(t, sock, name) }
	poolFull := func() bool {
		return m("sandboxd_pool_target") == pool && m("sandboxd_pool_ready") >= pool && m("sandboxd_executions_running") == 0 &&
			m("sandboxd_cells_idle") == 0 && m("sandboxd_containers") == pool
	}

	// The pool, once full, holds its size; containerd holds the pool's
	// sandboxes and nothing else.
	waitUntil(t, "the pool fills", 2*time.Minute, poolFull)
	if got := m("sandboxd_pool_ready"); got != pool {
		t.Errorf("sandboxd_pool_ready %v, want the pool's size %d", got, pool)
	}
	if got := m("sandboxd_containerd_up"); got != 1 {
		t.Errorf("sandboxd_containerd_up %v with containerd serving", got)
	}

	// OOM kills: a memory bomb counts once; a plain SIGKILL does not.
	if got := m("sandboxd_oom_kills_total"); got != 0 {
		t.Errorf("sandboxd_oom_kills_total %v on a fresh daemon", got)
	}
	res := mustExecute(t, sock, api.ExecuteRequest{Language: "python", MemoryBytes: 64 << 20, Code: "x = []\nwhile True: x.append(bytearray(8 << 20))"})
	if !res.OOMKilled || res.Status != api.StatusOOMKilled {
		t.Fatalf("the memory bomb: %+v", res)
	}
	if got := m("sandboxd_oom_kills_total"); got != 1 {
		t.Errorf("sandboxd_oom_kills_total %v after one OOM kill", got)
	}
	if got := m(`sandboxd_executions_total{language="python",status="oom_killed"}`); got != 1 {
		t.Errorf("executions_total of python oom_killed: %v", got)
	}
	if res := mustExecute(t, sock, api.ExecuteRequest{Language: "bash", Code: "kill -9 $$"}); res.Status != api.StatusSignaled || res.OOMKilled {
		t.Fatalf("kill -9: %+v", res)
	}
	if got := m("sandboxd_oom_kills_total"); got != 1 {
		t.Errorf("sandboxd_oom_kills_total %v after a SIGKILL that was not the OOM killer's", got)
	}

	// One slot: the first execution runs, the next two wait. (A slot is
	// held until its sandbox is torn down, after the answer.)
	waitUntil(t, "nothing runs", 30*time.Second, func() bool {
		return m("sandboxd_executions_running") == 0 && m("sandboxd_queue_depth") == 0
	})
	type outcome struct {
		status int
		res    *api.ExecuteResult
		body   string
	}
	first := make(chan outcome, 1)
	go func() {
		s, r, b := executeOn(sock, api.ExecuteRequest{Language: "bash", Code: "sleep 120", TimeoutMS: 15000})
		first <- outcome{s, r, b}
	}()
	waitUntil(t, "the first execution runs", 30*time.Second, func() bool { return m("sandboxd_executions_running") == 1 })
	queued := make(chan outcome, 2)
	for i := range 2 {
		go func() {
			s, r, b := executeOn(sock, api.ExecuteRequest{Language: "bash", Code: fmt.Sprintf("echo queued %d", i)})
			queued <- outcome{s, r, b}
		}()
	}
	waitUntil(t, "two executions queued", 15*time.Second, func() bool { return m("sandboxd_queue_depth") == 2 })
	if got := m("sandboxd_executions_running"); got != 1 {
		t.Errorf("sandboxd_executions_running %v with --max-concurrent 1", got)
	}
	var info api.Info
	_, body := request(sock, "GET", "/v1/info", "", nil)
	if json.Unmarshal(body, &info); info.Running != 1 || info.Queued != 2 {
		t.Errorf("info while one runs and two wait: %s", body)
	}
	select {
	case o := <-queued:
		t.Fatalf("an execution counted as queued ran while the only slot was taken: %+v", o)
	default:
	}
	if o := <-first; o.status != 200 || !o.res.TimedOut {
		t.Errorf("the first execution: %d %s", o.status, o.body)
	}
	for range 2 {
		if o := <-queued; o.status != 200 || o.res.Status != api.StatusOK || !strings.HasPrefix(o.res.Stdout, "queued ") {
			t.Errorf("a queued execution: %d %s", o.status, o.body)
		}
	}
	waitUntil(t, "nothing runs or waits", 30*time.Second, func() bool {
		return m("sandboxd_executions_running") == 0 && m("sandboxd_queue_depth") == 0
	})

	// Sessions: counted as they are created and deleted.
	if got := m("sandboxd_sessions"); got != 0 {
		t.Errorf("sandboxd_sessions %v before any", got)
	}
	var ids []string
	for range 2 {
		ids = append(ids, createSession(t, sock, api.CreateSessionRequest{Language: "bash"}).ID)
	}
	if got := m("sandboxd_sessions"); got != 2 {
		t.Errorf("sandboxd_sessions %v after creating 2", got)
	}
	for i, id := range ids {
		if status, body := request(sock, "DELETE", "/v1/sessions/"+id, "", nil); status != 204 {
			t.Fatalf("delete: %d %s", status, body)
		}
		if got, want := m("sandboxd_sessions"), float64(len(ids)-i-1); got != want {
			t.Errorf("sandboxd_sessions %v after deleting %d, want %v", got, i+1, want)
		}
	}

	// containerd down, then back. Not in the middle of a refill: a create
	// cut short by containerd's death leaves a shim it no longer knows.
	waitUntil(t, "the pool refills", 2*time.Minute, poolFull)
	ctd.stop()
	waitUntil(t, "sandboxd_containerd_up 0 with containerd stopped", time.Minute, func() bool { return m("sandboxd_containerd_up") == 0 })
	if status, body := request(sock, "GET", "/v1/health", "", nil); status != 503 {
		t.Errorf("health with containerd stopped: %d %s", status, body)
	}
	if ctd, err = startContainerd(filepath.Join(dir, "ctd")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "sandboxd_containerd_up 1 with containerd back", time.Minute, func() bool { return m("sandboxd_containerd_up") == 1 })
	waitUntil(t, "health with containerd back", time.Minute, func() bool {
		status, _ := request(sock, "GET", "/v1/health", "", nil)
		return status == 200
	})
	if got := m("sandboxd_pool_ready"); got != pool {
		t.Errorf("sandboxd_pool_ready %v after containerd came back, want %d", got, pool)
	}
}

// TestOperatorExecutionLogKeepsSecrets runs executions of every kind with
// a random marker in their code, stdin, env values, arguments, files and
// output, on a daemon that logs at debug level, then searches its whole
// log: the marker is never there, while each execution's line is.
func TestOperatorExecutionLogKeepsSecrets(t *testing.T) {
	d := startDaemon(t, daemonOpts{dir: testDir(t, "sbxol"), config: "[pool]\nsize = 1\n", args: []string{"--log-level", "debug"}, checkStop: true})
	sock := d.sock
	secret := marker()
	code := "code-" + secret  // in the submitted code, in comments
	out := "out-" + secret    // printed, but never written whole in the code
	errOut := "err-" + secret // printed on stderr, likewise
	stdin := "stdin-" + secret
	env := map[string]string{"OP_VALUE": "env-" + secret}
	args := []string{"arg-" + secret}
	file := "file-" + secret
	// The programs print the output markers from two halves.
	half := func(s string) (string, string) { return s[:len(s)/2], s[len(s)/2:] }
	o1, o2 := half(out)
	e1, e2 := half(errOut)
	bashPrints := fmt.Sprintf("# %s\nprintf '%%s%%s\\n' %s %s; printf '%%s%%s\\n' %s %s >&2\n", code, o1, o2, e1, e2)
	var ids []string
	check := func(what string, res *api.ExecuteResult, status string) {
		t.Helper()
		if res.Status != status || !strings.Contains(res.Stdout+res.Stderr, secret) {
			t.Fatalf("%s: %+v", what, res)
		}
		ids = append(ids, res.ID)
	}

	// Successful, with every kind of input.
	check("python", mustExecute(t, sock, api.ExecuteRequest{Language: "python", Stdin: stdin + "\n", Env: env, Args: args,
		Files: []api.File{{Path: "data.txt", Content: file}},
		Code: fmt.Sprintf("# %s\nimport os, sys\nassert sys.stdin.read().startswith('stdin-')\nassert os.environ['OP_VALUE'].startswith('env-')\n"+
			"assert sys.argv[1].startswith('arg-')\nassert open('data.txt').read().startswith('file-')\nprint(%q + %q)\nprint(%q + %q, file=sys.stderr)\n",
			code, o1, o2, e1, e2)}), api.StatusOK)
	// Failing, with a non-zero exit.
	check("exit 3", mustExecute(t, sock, api.ExecuteRequest{Language: "bash", Stdin: stdin, Env: env, Args: args, Code: bashPrints + "exit 3"}), api.StatusFailed)
	// A compile error, whose message quotes the code.
	res := mustExecute(t, sock, api.ExecuteRequest{Language: "c", Code: fmt.Sprintf("int main(void) { /* %s */ return undeclared_%s; }\n", code, secret)})
	check("compile error", res, api.StatusCompileError)
	// Timed out.
	check("timeout", mustExecute(t, sock, api.ExecuteRequest{Language: "bash", Stdin: stdin, Env: env, Code: bashPrints + "sleep 30", TimeoutMS: 1000}), api.StatusTimedOut)
	// Streamed, with live stdin.
	st, err := openStream(sock, api.ExecuteRequest{Language: "bash", Stdin: stdin + "\n", StdinStream: true, Env: env, Args: args,
		Code: bashPrints + `read a; read b; echo "${#a} ${#b}"`})
	if err != nil {
		t.Fatal(err)
	}
	if status, body := request(sock, "POST", "/v1/executions/"+st.id+"/stdin", "live-"+stdin+"\n", nil); status/100 != 2 {
		t.Fatalf("live stdin: %d %s", status, body)
	}
	res, err = st.result()
	if err != nil {
		t.Fatal(err)
	}
	check("streamed", res, api.StatusOK)
	// In a session, with a file uploaded and downloaded, and session env.
	s := createSession(t, sock, api.CreateSessionRequest{Language: "bash", Env: map[string]string{"OP_SESSION": "env-session-" + secret}})
	if status, body := request(sock, "PUT", "/v1/sessions/"+s.ID+"/files/up.txt", file, nil); status/100 != 2 {
		t.Fatalf("upload: %d %s", status, body)
	}
	check("session", mustExecute(t, sock, api.ExecuteRequest{SessionID: s.ID, Stdin: stdin, Env: env, Code: bashPrints + "cat up.txt >/dev/null"}), api.StatusOK)
	if status, body := request(sock, "GET", "/v1/sessions/"+s.ID+"/files/up.txt", "", nil); status != 200 || string(body) != file {
		t.Fatalf("download: %d %q", status, body)
	}
	// Refused requests, whose errors are logged at debug level.
	for _, req := range []api.ExecuteRequest{
		{Language: "bash", Code: bashPrints, Env: map[string]string{"1BAD": "env-" + secret}},
		{Language: "no-such-language", Code: bashPrints, Stdin: stdin},
	} {
		if status, _, body := executeOn(sock, req); status != 400 {
			t.Errorf("a refused request: %d %s", status, body)
		}
	}
	if status, body := request(sock, "DELETE", "/v1/sessions/"+s.ID, "", nil); status != 204 {
		t.Errorf("delete: %d %s", status, body)
	}

	// Every execution has its line, with its id, status and exit code.
	waitUntil(t, "a log line for each execution", 30*time.Second, func() bool {
		log := d.logged()
		for _, id := range ids {
			if !regexp.MustCompile(`msg=execute id=` + id + ` .*status=\S+ exit_code=-?\d+ `).MatchString(log) {
				return false
			}
		}
		return true
	})
	log := d.logged()
	if !strings.Contains(log, "level=DEBUG") {
		t.Error("no debug line in the log: the test does not read what debug adds")
	}
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, secret) {
			t.Errorf("the log holds what was submitted or printed: %s", line)
		}
	}
}

// TestOperatorDoctorFailures runs doctor where it must fail (no socket, a
// socket nobody answers on, a socket the user may not open) and where a
// language cannot run, which is a warning.
func TestOperatorDoctorFailures(t *testing.T) {
	dir := testDir(t, "sbxod")
	has := func(out, re string) bool { return regexp.MustCompile(`(?m)` + re).MatchString(out) }
	// doctor runs sandboxctl doctor against sock, as root when cred is
	// nil, with no environment but PATH, and its stderr with its stdout.
	doctor := func(cred *syscall.Credential, sock string) (string, int) {
		t.Helper()
		out, _, code := cli{sock: sock, env: []string{"PATH=" + os.Getenv("PATH")}, cred: cred, combined: true}.run(t, "doctor")
		return out, code
	}

	// No daemon, no socket.
	missing := filepath.Join(dir, "missing.sock")
	out, code := doctor(nil, missing)
	if code != 1 || !has(out, `^FAIL\s+socket\s+.*no such file`) || !has(out, `^FAIL\s+daemon\s`) ||
		!has(out, `fix: start sandboxd`) || has(out, `runtime runc`) {
		t.Errorf("doctor with no socket: exit %d\n%s", code, out)
	}

	// A socket file left by a daemon that died: nobody answers.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	out, code = doctor(nil, stale)
	if code != 1 || !has(out, `^ok\s+socket\s`) || !has(out, `^FAIL\s+access\s+.*connection refused`) ||
		!has(out, `fix: is sandboxd running\?`) || !has(out, `^FAIL\s+daemon\s`) {
		t.Errorf("doctor with a socket nobody answers on: exit %d\n%s", code, out)
	}

	// A daemon with a language whose runtime is not installed: the
	// language and the runtime are warnings, named with the reason; doctor
	// passes.
	sock := startDaemon(t, daemonOpts{dir: dir, checkStop: true, config: `
[pool]
size = 1
[runtimes.ghost]
binary = "/nonexistent/ghost-runtime"
[[languages]]
name = "ghostsh"
file_name = "main.sh"
run = ["sh", "/sandbox/main.sh"]
runtime = "ghost"
`}).sock
	out, code = doctor(nil, sock)
	if code != 0 || has(out, `^FAIL`) || !has(out, `^ok\s+daemon\s`) || !has(out, `^ok\s+runtime runc\s`) ||
		!has(out, `^warn\s+language ghostsh\s+runtime ghost: /nonexistent/ghost-runtime is not installed`) ||
		!has(out, `^warn\s+runtime ghost\s`) {
		t.Errorf("doctor with a language that cannot run: exit %d\n%s", code, out)
	}

	// The socket's permissions (0660, root) keep uid 65534 out.
	out, code = doctor(nobody, sock)
	if code != 1 || !has(out, `^FAIL\s+access\s+.*permission denied`) || !has(out, `fix: add yourself to its group: usermod -aG sandboxd`) ||
		!has(out, `^FAIL\s+daemon\s`) {
		t.Errorf("doctor as a uid the socket keeps out: exit %d\n%s", code, out)
	}
}

// TestOperatorReloadLimitsWithSession reloads smaller limits while a
// session lives and one of its executions runs: the execution finishes
// with the limits it started with, the session keeps its sandbox's limits
// (memory) and goes on working, and new executions, in the session too,
// get the new per-execution limits (timeout, output cap); new sandboxes
// get the new memory.
func TestOperatorReloadLimitsWithSession(t *testing.T) {
	dir := testDir(t, "sbxor")
	const before = "[pool]\nsize = 1\n[limits]\ntimeout = '20s'\nmemory = '160MiB'\noutput = '64KiB'\n"
	const after = "[pool]\nsize = 1\n[limits]\ntimeout = '2s'\nmemory = '96MiB'\noutput = '1KiB'\n"
	d := startDaemon(t, daemonOpts{dir: dir, config: before, checkStop: true})
	sock := d.sock
	s := createSession(t, sock, api.CreateSessionRequest{Language: "bash"})
	t.Cleanup(func() { request(sock, "DELETE", "/v1/sessions/"+s.ID, "", nil) })
	if s.Limits.MemoryBytes != 160<<20 {
		t.Fatalf("the session's limits: %+v", s.Limits)
	}
	// 120 MiB fits in 160 MiB, not in 96 MiB. (In python itself: a shell
	// whose child is killed exits 137, which is no OOM kill of its own.)
	alloc := api.ExecuteRequest{Language: "python", Code: "b = b'x' * (120 << 20)\nprint(len(b))"}
	const allocated = "125829120\n"
	inSession := func(req api.ExecuteRequest, id string) api.ExecuteRequest { req.SessionID = id; return req }
	if res := mustExecute(t, sock, inSession(alloc, s.ID)); res.Stdout != allocated {
		t.Fatalf("120 MiB in the session: %+v", res)
	}

	// An execution runs across the reload: it waits for a line of live
	// stdin, sent once the reload is applied, then prints 3,000 bytes.
	st, err := openStream(sock, api.ExecuteRequest{SessionID: s.ID, StdinStream: true, TimeoutMS: 120000,
		Code: `echo waiting; read line; head -c 3000 /dev/zero | tr '\0' a`})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.untilStdout("waiting\n"); err != nil {
		t.Fatal(err)
	}
	reloads := strings.Count(d.logged(), "msg=reloaded")
	d.reload(t, after)
	waitUntil(t, "the reload applied", time.Minute, func() bool { return strings.Count(d.logged(), "msg=reloaded") > reloads })
	if strings.Contains(d.logged(), "reload refused") {
		t.Fatalf("the reload was refused:\n%s", d.logged())
	}
	if status, body := request(sock, "POST", "/v1/executions/"+st.id+"/stdin", "go\n", nil); status/100 != 2 {
		t.Fatalf("live stdin: %d %s", status, body)
	}
	res, err := st.result()
	if err != nil || res.Status != api.StatusOK || res.Stdout != "waiting\n"+strings.Repeat("a", 3000) || res.StdoutTruncated {
		t.Fatalf("the execution across the reload (64 KiB cap when it started): %v %+v", err, res)
	}

	var info api.Info
	_, body := request(sock, "GET", "/v1/info", "", nil)
	if json.Unmarshal(body, &info); info.Limits.TimeoutMS != 2000 || info.Limits.MemoryBytes != 96<<20 || info.Limits.OutputBytes != 1024 {
		t.Errorf("limits after the reload: %s", body)
	}
	// The session is alive, with the sandbox limits it was created with.
	if got := showSession(t, sock, s.ID); got.State != api.SessionRunning || got.Limits != s.Limits {
		t.Errorf("the session after the reload: %+v, created with %+v", got, s.Limits)
	}
	if res := mustExecute(t, sock, inSession(alloc, s.ID)); res.Stdout != allocated {
		t.Errorf("120 MiB in the session after the reload: %+v", res)
	}
	// Its new executions get the new timeout and output cap.
	res = mustExecute(t, sock, api.ExecuteRequest{SessionID: s.ID, Code: "sleep 30"})
	if !res.TimedOut || res.DurationMS > 15000 {
		t.Errorf("sleep 30 in the session under a default timeout of 2s: %+v", res)
	}
	res = mustExecute(t, sock, api.ExecuteRequest{SessionID: s.ID, Code: `head -c 5000 /dev/zero | tr '\0' a`})
	if len(res.Stdout) != 1024 || !res.StdoutTruncated {
		t.Errorf("5,000 bytes in the session under a cap of 1 KiB: %d bytes, truncated %v", len(res.Stdout), res.StdoutTruncated)
	}
	// A one-shot execution gets the new memory, pooled sandboxes made
	// before the reload notwithstanding; so does a new session.
	if res := mustExecute(t, sock, alloc); !res.OOMKilled {
		t.Errorf("120 MiB in a one-shot execution under 96 MiB: %+v", res)
	}
	s2 := createSession(t, sock, api.CreateSessionRequest{Language: "bash"})
	t.Cleanup(func() { request(sock, "DELETE", "/v1/sessions/"+s2.ID, "", nil) })
	if s2.Limits.MemoryBytes != 96<<20 {
		t.Errorf("a session created after the reload: %+v", s2.Limits)
	}
	if res := mustExecute(t, sock, inSession(alloc, s2.ID)); !res.OOMKilled {
		t.Errorf("120 MiB in a session created under 96 MiB: %+v", res)
	}
}

// TestOperatorShutdownGraceExpires stops a daemon with a 2s shutdown_grace
// while executions sleep for 30s on runc and on gVisor: it exits soon after
// the grace, their clients get an error or a killed result, and nothing of
// its namespace is left in containerd or on the host.
func TestOperatorShutdownGraceExpires(t *testing.T) {
	d := startDaemon(t, daemonOpts{dir: testDir(t, "sbxog"), config: "[pool]\nsize = 1\n", args: []string{"--shutdown-grace", "2s"}, checkStop: true})
	sock, ns := d.sock, d.ns
	type outcome struct {
		rt  string
		res *api.ExecuteResult
		err error
	}
	results := make(chan outcome, len(ociRuntimes))
	for _, rt := range ociRuntimes {
		st, err := openStream(sock, api.ExecuteRequest{Language: "bash", Runtime: rt, TimeoutMS: 120000, Code: "echo started; sleep 30.731; echo finished"})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.untilStdout("started\n"); err != nil {
			t.Fatalf("%s: %v", rt, err)
		}
		go func() {
			res, err := st.result()
			results <- outcome{rt, res, err}
		}()
	}
	if !pgrep("sleep 30.731") {
		t.Fatal("the runc execution's sleep is not a host process: the check that none is left means nothing")
	}
	start := time.Now()
	d.signal(syscall.SIGTERM)
	if !d.awaitExit(30 * time.Second) {
		t.Fatalf("sandboxd still runs 30s after SIGTERM with a 2s grace")
	}
	took := time.Since(start)
	t.Logf("exited %v after SIGTERM", took.Round(time.Millisecond))
	if took < 2*time.Second || took > 20*time.Second {
		t.Errorf("exited %v after SIGTERM with a grace of 2s", took.Round(time.Millisecond))
	}
	for range ociRuntimes {
		o := <-results
		if o.err == nil && (o.res.Status == api.StatusOK || !(o.res.TimedOut || o.res.Signal == "SIGKILL")) {
			t.Errorf("%s: the client of an execution killed at the end of the grace got %+v", o.rt, o.res)
		}
		t.Logf("%s: the client got %v %+v", o.rt, o.err, o.res)
	}
	log := d.logged()
	if !strings.Contains(log, "grace period over") {
		t.Errorf("no log line of the grace running out:\n%s", log)
	}
	if n := len(mustProbeContainerd(t, containerdAddr, ns).containers); n != 0 {
		t.Errorf("%d containers left in the namespace %s", n, ns)
	}
	// Shims exit a moment after their last task; gVisor's processes go
	// with them.
	waitUntil(t, "no process of the daemon's sandboxes left", 30*time.Second, func() bool {
		return !pgrep("sleep 30.731") && len(shimsOf(containerdAddr, ns)) == 0 && !pgrep("runsc.*"+ns)
	})
}

// TestOperatorAllowGIDsSupplementary allows a group that a client has
// only as a supplementary group: it is let in, and the same uid without
// that group is refused with 403.
func TestOperatorAllowGIDsSupplementary(t *testing.T) {
	const gid = 4242
	d := startDaemon(t, daemonOpts{dir: testDir(t, "sbxoa"), config: fmt.Sprintf("socket_mode = '0666'\n[pool]\nsize = 1\n[access]\nallow_gids = [%d]\n", gid), checkStop: true})
	sock := d.sock
	// ctlAs runs sandboxctl as cred, with no environment but PATH, and its
	// stderr with its stdout.
	ctlAs := func(cred *syscall.Credential, args ...string) (string, int) {
		t.Helper()
		out, _, code := cli{sock: sock, env: []string{"PATH=" + os.Getenv("PATH")}, cred: cred, combined: true}.run(t, args...)
		return out, code
	}
	statusAs := func(cred *syscall.Credential) string {
		cmd := exec.Command("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", sock, "http://sandboxd/v1/info")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("curl as %+v: %v %s", cred, err, out)
		}
		return string(out)
	}
	withGroup := &syscall.Credential{Uid: 65533, Gid: 65533, Groups: []uint32{100, gid}}
	without := &syscall.Credential{Uid: 65533, Gid: 65533, Groups: []uint32{100}}
	if got := statusAs(withGroup); got != "200" {
		t.Errorf("uid 65533 with group %d among its supplementary groups: %s", gid, got)
	}
	if got := statusAs(without); got != "403" {
		t.Errorf("uid 65533 without group %d: %s", gid, got)
	}
	if got := statusAs(&syscall.Credential{Uid: 65533, Gid: gid}); got != "200" {
		t.Errorf("uid 65533 with primary group %d: %s", gid, got)
	}
	if out, code := ctlAs(withGroup, "execute", "-l", "bash", "-c", "echo allowed; id -u"); code != 0 || out != "allowed\n65534\n" {
		t.Errorf("execute through the supplementary group: exit %d %q", code, out)
	}
	if out, code := ctlAs(without, "execute", "-l", "bash", "-c", "echo allowed"); code != 125 || !strings.Contains(out, "not allowed") {
		t.Errorf("execute without the group: exit %d %q", code, out)
	}
	if !regexp.MustCompile(`msg="caller refused by access control" uid=65533 gid=65533`).MatchString(d.logged()) {
		t.Error("no log line for the refused caller")
	}
}

// TestAdoptedSessionAfterSIGKILL kills a daemon with SIGKILL while a
// session lives, starts another on the same state directory, and checks
// in the session it adopted (on runc and on gVisor) what every session
// promises: a timeout kills double-forked children, stdin reaches the
// program with its end, the output caps hold, the files API works, and a
// memory bomb is reported as oom_killed.
func TestAdoptedSessionAfterSIGKILL(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, _ []string) {
		d := startDaemon(t, daemonOpts{dir: testDir(t, "sbxos"), config: "[pool]\nsize = 1\n", checkStop: true})
		sock, ns := d.sock, d.ns
		s := createSession(t, sock, api.CreateSessionRequest{Language: "bash", Runtime: rt, MemoryBytes: 128 << 20})
		t.Cleanup(func() { request(sock, "DELETE", "/v1/sessions/"+s.ID, "", nil) })
		if res := mustExecute(t, sock, api.ExecuteRequest{SessionID: s.ID, Code: "echo before > kept.txt"}); res.Status != api.StatusOK {
			t.Fatalf("before the kill: %+v", res)
		}
		// Not in the middle of a pool refill: a create cut short by the
		// daemon's death leaves a shim.
		waitUntil(t, "the pool full", 2*time.Minute, func() bool { return metricValue(t, sock, "sandboxd_pool_ready") >= 1 })
		d.kill()
		d = d.restart(t)
		if !regexp.MustCompile(`msg="adopted session" session_id=` + s.ID + ` .*alive=true`).MatchString(d.logged()) {
			t.Fatalf("the session was not adopted alive:\n%s", d.logged())
		}
		run := func(req api.ExecuteRequest) *api.ExecuteResult {
			t.Helper()
			req.SessionID = s.ID
			res := mustExecute(t, sock, req)
			if res.SessionID != s.ID || res.Runtime != rt {
				t.Fatalf("ran elsewhere: %+v", res)
			}
			return res
		}
		if res := run(api.ExecuteRequest{Code: "cat kept.txt"}); res.Stdout != "before\n" {
			t.Fatalf("the adopted session's workspace: %+v", res)
		}

		// A timeout kills what the execution started, double-forked and
		// session leaders too: none is left, seen from inside.
		res := run(api.ExecuteRequest{TimeoutMS: 1500, Code: "(setsid sleep 4242 &) ; (sleep 4243 &) ; nohup sleep 4244 >/dev/null 2>&1 & echo started; sleep 4245"})
		if !res.TimedOut || res.Status != api.StatusTimedOut || res.Stdout != "started\n" || res.DurationMS > 15000 {
			t.Errorf("timeout: %+v", res)
		}
		if res := run(api.ExecuteRequest{Code: sleepersLeft}); res.Stdout != "checked\n" {
			t.Errorf("left after the timeout: %q %q", res.Stdout, res.Stderr)
		}
		// So does a normal exit.
		if res := run(api.ExecuteRequest{Code: "(setsid sleep 4246 &); echo done"}); res.Stdout != "done\n" {
			t.Errorf("background child: %+v", res)
		}
		if res := run(api.ExecuteRequest{Code: sleepersLeft}); res.Stdout != "checked\n" {
			t.Errorf("left after a normal exit: %q %q", res.Stdout, res.Stderr)
		}

		// stdin reaches the program, and so does its end.
		res = run(api.ExecuteRequest{TimeoutMS: 30000, Stdin: "line one\nline two\n", Code: `cat; echo "[eof]"`})
		if res.Status != api.StatusOK || res.Stdout != "line one\nline two\n[eof]\n" || res.DurationMS > 15000 {
			t.Errorf("stdin: %+v", res)
		}
		res = run(api.ExecuteRequest{TimeoutMS: 30000, Code: `cat; echo "[eof]"`})
		if res.Status != api.StatusOK || res.Stdout != "[eof]\n" {
			t.Errorf("no stdin: %+v", res)
		}
		res = run(api.ExecuteRequest{Language: "python", TimeoutMS: 30000, Stdin: "abc",
			Code: "import sys\ndata = sys.stdin.read()\nprint(data[::-1], sys.stdin.read() == '')"})
		if res.Status != api.StatusOK || res.Stdout != "cba True\n" {
			t.Errorf("stdin in python: %+v", res)
		}

		// The output caps hold, and the program is not blocked past them.
		res = run(api.ExecuteRequest{Code: `head -c 3000000 /dev/zero | tr '\0' x; head -c 3000000 /dev/zero | tr '\0' y >&2; echo done >&2`})
		if res.Status != api.StatusOK || len(res.Stdout) != 1<<20 || !res.StdoutTruncated || len(res.Stderr) != 1<<20 || !res.StderrTruncated ||
			strings.Trim(res.Stdout, "x") != "" || strings.Trim(res.Stderr, "y") != "" {
			t.Errorf("output caps: status %s, stdout %d bytes (truncated %v), stderr %d bytes (truncated %v)",
				res.Status, len(res.Stdout), res.StdoutTruncated, len(res.Stderr), res.StderrTruncated)
		}

		// The files API: upload, list, download; a planted symlink is
		// refused.
		content := strings.Repeat("uploaded\n", 1000)
		if status, body := request(sock, "PUT", "/v1/sessions/"+s.ID+"/files/in/up.txt?mode=640", content, nil); status/100 != 2 {
			t.Fatalf("upload: %d %s", status, body)
		}
		if res := run(api.ExecuteRequest{Code: "wc -c < in/up.txt; echo made > out.txt; ln -s /etc/passwd pw"}); strings.TrimSpace(res.Stdout) != fmt.Sprint(len(content)) {
			t.Errorf("the uploaded file in the session: %+v", res)
		}
		status, body := request(sock, "GET", "/v1/sessions/"+s.ID+"/files/", "", nil)
		var list api.FilesResponse
		json.Unmarshal(body, &list)
		got := map[string]string{}
		for _, f := range list.Files {
			got[f.Path] = fmt.Sprintf("%s %d %o", f.Type, f.Size, f.Mode)
		}
		if status != 200 || got["in"] == "" || got["in/up.txt"] != fmt.Sprintf("file %d 640", len(content)) || !strings.HasPrefix(got["out.txt"], "file 5 ") ||
			!strings.HasPrefix(got["pw"], "symlink") || !strings.HasPrefix(got["kept.txt"], "file") {
			t.Errorf("list: %d %v", status, got)
		}
		for p, want := range map[string]string{"in/up.txt": content, "out.txt": "made\n"} {
			if status, body := request(sock, "GET", "/v1/sessions/"+s.ID+"/files/"+p, "", nil); status != 200 || string(body) != want {
				t.Errorf("download %s: %d %.80q", p, status, body)
			}
		}
		res = run(api.ExecuteRequest{Code: "echo collected > out2.txt", Collect: []string{"out*.txt", "pw"}})
		if len(res.Files) != 2 || res.Files[0].Path != "out.txt" || res.Files[0].Content != "made\n" || res.Files[1].Path != "out2.txt" || res.Files[1].Content != "collected\n" {
			t.Errorf("collect: %+v", res.Files)
		}
		if status, body := request(sock, "GET", "/v1/sessions/"+s.ID+"/files/pw", "", nil); status != 400 {
			t.Errorf("download through a symlink: %d %.80q", status, body)
		}
		if status, _ := request(sock, "GET", "/v1/sessions/"+s.ID+"/files/nothing", "", nil); status != 404 {
			t.Errorf("download of a missing file: %d", status)
		}

		// A memory bomb is reported as such; the session then is as the
		// README says: running, and serving, or dead, and 409.
		res = run(api.ExecuteRequest{Language: "python", Code: "x = []\nwhile True: x.append(bytearray(8 << 20))"})
		if !res.OOMKilled || res.Status != api.StatusOOMKilled {
			t.Errorf("memory bomb: %+v", res)
		}
		switch got := showSession(t, sock, s.ID); got.State {
		case api.SessionRunning:
			if res := run(api.ExecuteRequest{Code: "echo still here"}); res.Stdout != "still here\n" {
				t.Errorf("the running session after the bomb: %+v", res)
			}
			if res := run(api.ExecuteRequest{Code: "kill -9 $$"}); res.OOMKilled || res.Status != api.StatusSignaled {
				t.Errorf("a plain SIGKILL after the bomb: %+v", res)
			}
		case api.SessionDead:
			if status, _, body := executeOn(sock, api.ExecuteRequest{SessionID: s.ID, Code: "true"}); status != 409 {
				t.Errorf("execute in the dead session: %d %s", status, body)
			}
		default:
			t.Errorf("state after the bomb: %+v", got)
		}
		t.Logf("%s: the session after its memory bomb: %s", rt, showSession(t, sock, s.ID).State)
		if status, body := request(sock, "DELETE", "/v1/sessions/"+s.ID, "", nil); status != 204 {
			t.Errorf("delete: %d %s", status, body)
		}
		if mustProbeContainerd(t, containerdAddr, ns).holds(ns, "ses-"+s.ID) {
			t.Error("the session's container remains after its deletion")
		}
	})
}

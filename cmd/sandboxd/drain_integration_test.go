//go:build integration

package main_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// TestDrain drains a daemon through `sandboxctl drain`, as the DaemonSet's
// preStop does, while an execution runs: the running execution finishes
// with its output; new executions and sessions get 503 with Retry-After,
// through the API and through sandboxctl; the daemon stays alive but not
// ready; drain returns once the running execution has ended, and the
// session alive before it is adopted by the next daemon.
func TestDrain(t *testing.T) {
	d := startDaemon(t, daemonOpts{checkStop: true})
	s := createSession(t, d.sock, api.CreateSessionRequest{Language: "bash"})
	mustExecute(t, d.sock, api.ExecuteRequest{SessionID: s.ID, Code: "echo kept > kept.txt"})
	waitUntil(t, "ready", 2*time.Minute, func() bool {
		_, _, code := cli{sock: d.sock}.run(t, "health", "--ready")
		return code == 0
	})

	type answer struct {
		status int
		res    *api.ExecuteResult
		body   string
		at     time.Time
	}
	running := make(chan answer, 1)
	go func() {
		status, res, body := executeOn(d.sock, api.ExecuteRequest{Language: "bash", Code: "sleep 8; echo finished", TimeoutMS: 60000})
		running <- answer{status, res, body, time.Now()}
	}()
	waitInfo(t, d.sock, "the execution running", func(i api.Info) bool { return i.Running == 1 })

	drain := cli{sock: d.sock}.command("drain", "--timeout", "2m")
	var drainOut strings.Builder
	drain.Stdout, drain.Stderr = &drainOut, &drainOut
	if err := startProc(drain); err != nil {
		t.Fatal(err)
	}
	drained := make(chan error, 1)
	go func() { drained <- drain.Wait() }()
	waitUntil(t, "draining", time.Minute, func() bool {
		_, body := request(d.sock, "GET", "/v1/health", "", nil)
		return strings.Contains(string(body), `"draining":true`)
	})

	status, body, err := send(d.sock, "POST", "/v1/execute", strings.NewReader(`{"language":"bash","code":"echo new"}`), map[string]string{"Content-Type": "application/json"})
	var e api.Error
	json.Unmarshal(body, &e)
	if err != nil || status != 503 || e.Code != api.CodeUnavailable || !strings.Contains(e.Message, "draining") {
		t.Errorf("a new execution while draining: %d %s %v", status, body, err)
	}
	if status, body := request(d.sock, "POST", "/v1/sessions", `{"language":"bash"}`, nil); status != 503 || !strings.Contains(string(body), "draining") {
		t.Errorf("a new session while draining: %d %s", status, body)
	}
	if status, body := request(d.sock, "POST", "/v1/execute", `{"session_id":"`+s.ID+`","code":"cat kept.txt"}`, nil); status != 503 {
		t.Errorf("an execution in a session while draining: %d %s", status, body)
	}
	if _, errOut, code := (cli{sock: d.sock}).run(t, "execute", "-l", "bash", "-c", "echo new"); code != 125 || !strings.Contains(errOut, "draining") {
		t.Errorf("sandboxctl execute while draining: exit %d, %q", code, errOut)
	}
	if out, _, code := (cli{sock: d.sock}).run(t, "health", "--ready"); code != 1 || !strings.Contains(out, "draining") {
		t.Errorf("health --ready while draining: exit %d, %q", code, out)
	}
	for _, args := range [][]string{{"health"}, {"health", "--live"}} {
		if out, _, code := (cli{sock: d.sock}).run(t, args...); code != 0 {
			t.Errorf("%v while draining (the daemon is alive): exit %d, %q", args, code, out)
		}
	}
	select {
	case err := <-drained:
		t.Fatalf("drain returned while the execution runs: %v %q", err, drainOut.String())
	default:
	}

	a := <-running
	if a.status != 200 || a.res.Status != api.StatusOK || a.res.Stdout != "finished\n" {
		t.Errorf("the execution under way: %d %s", a.status, a.body)
	}
	select {
	case err := <-drained:
		if err != nil || !strings.Contains(drainOut.String(), "drained: nothing under way; 1 sessions stay") {
			t.Errorf("drain: %v %q", err, drainOut.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("drain still waits a minute after the execution ended: %q", drainOut.String())
	}
	if got := metricValue(t, d.sock, "sandboxd_draining"); got != 1 {
		t.Errorf("sandboxd_draining = %v", got)
	}

	// The next daemon, as after the pod's replacement, adopts the session.
	d = d.restart(t)
	if res := mustExecute(t, d.sock, api.ExecuteRequest{SessionID: s.ID, Code: "cat kept.txt"}); res.Stdout != "kept\n" {
		t.Errorf("the session after the drain and a restart: %+v", res)
	}
	request(d.sock, "DELETE", "/v1/sessions/"+s.ID, "", nil)
}

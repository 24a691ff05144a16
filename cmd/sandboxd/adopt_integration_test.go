//go:build integration

package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// TestAdoptedSessionsUseTheAgent: after a SIGKILL of the daemon, in the
// middle of an execution, the next daemon attaches to each session's agent
// again and runs programs through it as before the restart: what was
// running is ended, signals and exit codes are told apart, live stdin
// streams, timeouts end only the execution, files upload, download, list
// and collect, symlinks are refused. On runc and on gVisor.
func TestAdoptedSessionsUseTheAgent(t *testing.T) {
	d := startDaemon(t, daemonOpts{dir: testDir(t, "adopt")})
	sock := d.sock
	ids := map[string]string{}
	for _, rt := range []string{"runc", "runsc"} {
		status, body := request(sock, "POST", "/v1/sessions", fmt.Sprintf(`{"language":"bash","runtime":%q}`, rt), nil)
		var s api.Session
		if status != 201 || json.Unmarshal(body, &s) != nil {
			t.Fatalf("create on %s: %d %s", rt, status, body)
		}
		ids[rt] = s.ID
		if status, body := request(sock, "POST", "/v1/execute", fmt.Sprintf(`{"session_id":%q,"code":"echo kept > kept.txt"}`, s.ID), nil); status != 200 {
			t.Fatalf("execute: %d %s", status, body)
		}
	}
	// An execution runs, with output the daemon has not read, when the
	// daemon dies.
	running := make(chan struct{})
	for _, id := range ids {
		go func() {
			request(sock, "POST", "/v1/execute", fmt.Sprintf(`{"session_id":%q,"code":"yes running | head -c 200000; exec sleep 600","timeout_ms":600000}`, id), nil)
			running <- struct{}{}
		}()
	}
	time.Sleep(2 * time.Second)
	waitPoolFull(t, sock)
	d.kill()
	<-running
	<-running

	d = d.restart(t)
	defer func() {
		for _, id := range ids {
			if status, body := request(sock, "DELETE", "/v1/sessions/"+id, "", nil); status != 204 {
				t.Errorf("delete: %d %s", status, body)
			}
		}
	}()
	if log := d.logged(); strings.Contains(log, "does not answer") {
		t.Fatalf("an adopted agent did not answer:\n%s", log)
	}
	run := func(t *testing.T, req api.ExecuteRequest) api.ExecuteResult {
		t.Helper()
		b, _ := json.Marshal(req)
		status, body := request(sock, "POST", "/v1/execute", string(b), nil)
		var res api.ExecuteResult
		if status != 200 || json.Unmarshal(body, &res) != nil {
			t.Fatalf("execute: %d %s", status, body)
		}
		return res
	}
	for rt, id := range ids {
		t.Run(rt, func(t *testing.T) {
			// What the dead daemon's execution started is gone.
			if res := run(t, api.ExecuteRequest{SessionID: id, Code: "cat kept.txt; for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr '\\0' ' '; echo; done | grep -c -e '^sleep ' -e '^yes '"}); res.Stdout != "kept\n0\n" {
				t.Errorf("before the restart's execution: %+v", res)
			}
			// Exit codes and signals are told apart.
			if res := run(t, api.ExecuteRequest{SessionID: id, Code: "exit 3"}); res.ExitCode != 3 || res.Signal != "" {
				t.Errorf("exit 3: %+v", res)
			}
			if res := run(t, api.ExecuteRequest{SessionID: id, Code: "kill -KILL $$"}); res.Signal != "SIGKILL" || res.OOMKilled {
				t.Errorf("killed by a signal: %+v", res)
			}
			if res := run(t, api.ExecuteRequest{SessionID: id, Code: "exit 137"}); res.ExitCode != 137 || res.Signal != "" {
				t.Errorf("exit 137: %+v", res)
			}
			// A timeout ends the execution, not the session.
			if res := run(t, api.ExecuteRequest{SessionID: id, Code: "sleep 600 & sleep 600", TimeoutMS: 1000}); !res.TimedOut {
				t.Errorf("timeout: %+v", res)
			}
			// Collect.
			res := run(t, api.ExecuteRequest{SessionID: id, Code: "mkdir -p out; echo c > out/c.txt; ln -sf /etc/passwd out/evil", Collect: []string{"out/*"}})
			if len(res.Files) != 1 || res.Files[0].Path != "out/c.txt" || res.Files[0].Content != "c\n" {
				t.Errorf("collect: %+v", res)
			}
			// Files through the API.
			if status, body := request(sock, "PUT", "/v1/sessions/"+id+"/files/up/x.txt", "uploaded", nil); status != 200 {
				t.Errorf("upload: %d %s", status, body)
			}
			if status, body := request(sock, "GET", "/v1/sessions/"+id+"/files/up/x.txt", "", nil); status != 200 || string(body) != "uploaded" {
				t.Errorf("download: %d %q", status, body)
			}
			if status, body := request(sock, "GET", "/v1/sessions/"+id+"/files/out/evil", "", nil); status != 400 {
				t.Errorf("download through a symlink: %d %q", status, body)
			}
			if status, _ := request(sock, "GET", "/v1/sessions/"+id+"/files/none", "", nil); status != 404 {
				t.Errorf("download of a missing file: %d", status)
			}
			status, body := request(sock, "GET", "/v1/sessions/"+id+"/files/", "", nil)
			var list api.FilesResponse
			json.Unmarshal(body, &list)
			paths := map[string]string{}
			for _, f := range list.Files {
				paths[f.Path] = f.Type
			}
			if status != 200 || paths["kept.txt"] != "file" || paths["up/x.txt"] != "file" || paths["out/evil"] != "symlink" {
				t.Errorf("listing: %d %v", status, paths)
			}
			// Live stdin, line by line.
			cmd := exec.Command(filepath.Join(binDir, "sandboxctl"), "--socket", sock, "execute", "--session", id, "-c", "while read -r l; do echo \"got $l\"; done", "-i", "-")
			cmd.Stdin = strings.NewReader("a\nb\n")
			var out, errOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			if err := cmd.Run(); err != nil || out.String() != "got a\ngot b\n" {
				t.Errorf("live stdin: %v %q %q", err, out.String(), errOut.String())
			}
		})
	}
}

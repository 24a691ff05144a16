//go:build integration

package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// newSession creates a session through the CLI and deletes it at the end
// of the test.
func newSession(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := sandboxctl(t, "", append([]string{"session", "create"}, args...)...)
	id := strings.TrimSpace(out)
	if code != 0 || len(id) != 32 {
		t.Fatalf("session create: exit %d, %q, %q", code, out, errOut)
	}
	t.Cleanup(func() { request(socket, "DELETE", "/v1/sessions/"+id, "", nil) })
	return id
}

func TestSessionKeepsFilesAcrossLanguages(t *testing.T) {
	id := newSession(t, "-l", "python")
	out, errOut, code := sandboxctl(t, "", "execute", "--session", id, "-c", "open('notes.txt', 'w').write('from python\\n')")
	if code != 0 {
		t.Fatalf("write: exit %d, %q", code, errOut)
	}
	out, _, code = sandboxctl(t, "", "execute", "--session", id, "-l", "bash", "-c", "cat notes.txt; pwd")
	if code != 0 || out != "from python\n/workspace\n" {
		t.Fatalf("read from bash: exit %d, %q", code, out)
	}
	// A compiled language runs in the session too.
	out, _, code = sandboxctl(t, "", "execute", "--session", id, "-l", "c", "-c", "#include <stdio.h>\nint main(void){FILE*f=fopen(\"notes.txt\",\"r\");char b[64];fgets(b,64,f);printf(\"c read %s\",b);}")
	if code != 0 || out != "c read from python\n" {
		t.Fatalf("read from c: exit %d, %q", code, out)
	}
	stdout, _, _ := sandboxctl(t, "", "-o", "json", "session", "show", id)
	var s api.Session
	if err := json.Unmarshal([]byte(stdout), &s); err != nil || s.Executions != 3 || s.State != api.SessionRunning || s.MemoryUsageBytes == 0 {
		t.Fatalf("show: %v %q", err, stdout)
	}
	res := execute(t, api.ExecuteRequest{SessionID: id, Code: "print('x')"})
	if res.SessionID != id || res.Language != "python" || res.Stdout != "x\n" {
		t.Fatalf("result: %+v", res)
	}
}

func TestSessionTimeoutKillsOnlyTheExecution(t *testing.T) {
	id := newSession(t, "-l", "bash")
	out, _, code := sandboxctl(t, "", "execute", "--session", id, "-t", "1", "-c", "(setsid sleep 4270 &); (sleep 4271 &); echo started; sleep 4272")
	if code != 124 || out != "started\n" {
		t.Fatalf("exit %d, %q", code, out)
	}
	for _, s := range []string{"sleep 4270", "sleep 4271", "sleep 4272"} {
		if pgrep(s) {
			t.Errorf("%q outlived its execution", s)
		}
	}
	// A normal exit ends the execution's background processes too.
	sandboxctl(t, "", "execute", "--session", id, "-c", "(setsid sleep 4273 &); echo bg")
	if pgrep("sleep 4273") {
		t.Error("a background process outlived its execution")
	}
	out, _, code = sandboxctl(t, "", "execute", "--session", id, "-c", "ps -e -o pid=,comm=")
	// PID 1 (the init), this script's bash and ps: nothing else.
	var comms []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			comms = append(comms, f[1])
		}
	}
	if code != 0 || strings.Join(comms, " ") != "init bash ps" {
		t.Fatalf("processes in the session: %q", out)
	}
}

func TestSessionMemoryBomb(t *testing.T) {
	id := newSession(t, "-l", "python", "--memory", "96m")
	res := execute(t, api.ExecuteRequest{SessionID: id, Code: "x = []\nwhile True: x.append(bytearray(8 << 20))"})
	if !res.OOMKilled || res.Status != api.StatusOOMKilled {
		t.Fatalf("bomb: %+v", res)
	}
	status, body := request(socket, "GET", "/v1/sessions/"+id, "", nil)
	var s api.Session
	json.Unmarshal(body, &s)
	switch {
	case status != 200:
		t.Fatalf("show after bomb: %d %s", status, body)
	case s.State == api.SessionRunning:
		if r := execute(t, api.ExecuteRequest{SessionID: id, Code: "print('still here')"}); r.Stdout != "still here\n" {
			t.Fatalf("running session after bomb: %+v", r)
		}
		// A later, smaller run is not blamed for the earlier OOM kill.
		if r := execute(t, api.ExecuteRequest{SessionID: id, Code: "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"}); r.OOMKilled {
			t.Fatalf("a plain SIGKILL reported as OOM: %+v", r)
		}
	case s.State == api.SessionDead:
		st, b := request(socket, "POST", "/v1/execute", `{"session_id":"`+id+`","code":"1"}`, nil)
		if st != 409 {
			t.Fatalf("execute in a dead session: %d %s", st, b)
		}
	default:
		t.Fatalf("state %q", s.State)
	}
}

func TestSessionFiles(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		id := newSession(t, append([]string{"-l", "python"}, ctl...)...)
		dir := t.TempDir()
		local := filepath.Join(dir, "blob.bin")
		blob := make([]byte, 300<<10)
		for i := range blob {
			blob[i] = byte(i * 7)
		}
		os.WriteFile(local, blob, 0o640)
		if _, errOut, code := sandboxctl(t, "", "session", "upload", id, local, "in/blob.bin"); code != 0 {
			t.Fatalf("upload: %d %q", code, errOut)
		}
		res := execute(t, api.ExecuteRequest{SessionID: id, Code: "import hashlib, os\nb = open('in/blob.bin','rb').read()\nprint(len(b), oct(os.stat('in/blob.bin').st_mode & 0o777))\nopen('out.bin','wb').write(b[::-1])"})
		if res.Stdout != fmt.Sprintf("%d 0o640\n", len(blob)) {
			t.Fatalf("in the sandbox: %+v", res)
		}
		back := filepath.Join(dir, "back.bin")
		if _, errOut, code := sandboxctl(t, "", "session", "download", id, "out.bin", back); code != 0 {
			t.Fatalf("download: %d %q", code, errOut)
		}
		got, _ := os.ReadFile(back)
		want := bytes.Clone(blob)
		for i, j := 0, len(want)-1; i < j; i, j = i+1, j-1 {
			want[i], want[j] = want[j], want[i]
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("round trip: %d bytes back", len(got))
		}
		out, _, code := sandboxctl(t, "", "session", "download", id, "in/blob.bin", "-")
		if code != 0 || out != string(blob) {
			t.Fatalf("download to stdout: %d, %d bytes", code, len(out))
		}
		out, _, _ = sandboxctl(t, "", "session", "files", id)
		if !strings.Contains(out, "in/blob.bin") || !strings.Contains(out, "out.bin") {
			t.Fatalf("files: %q", out)
		}
		if status, body := request(socket, "GET", "/v1/sessions/"+id+"/files/nothing/here", "", nil); status != 404 {
			t.Errorf("download of a missing file: %d %s", status, body)
		}

		// Symlinks planted by the sandboxed code are never followed, to a
		// place outside /workspace or inside it: a path through one is
		// refused as invalid. A sentinel outside /workspace stays as it was.
		execute(t, api.ExecuteRequest{SessionID: id, Language: "bash", Code: "echo sentinel > /tmp/sentinel; ln -s /etc/passwd passwd; ln -s /proc/1/root root1; ln -s /proc/self/root self; ln -s ../.. up; ln -s / slash; mkdir d; ln -s ../../.. d/upup; ln -s in alias; ln -s alias chain; ln -s /tmp/sentinel s"})
		for _, p := range []string{"passwd", "root1/etc/passwd", "self/etc/passwd", "up/etc/passwd", "slash/etc/passwd", "d/upup/etc/passwd", "root1/usr/bin/python3",
			"slash/tmp/sentinel", "s", "alias/blob.bin", "chain/blob.bin", "self/tmp/new", "slash/tmp/new"} {
			status, body := request(socket, "GET", "/v1/sessions/"+id+"/files/"+p, "", nil)
			if status != 400 || !strings.Contains(string(body), "invalid_argument") {
				t.Errorf("download %s: %d, %d bytes: %.80q", p, status, len(body), body)
			}
			status, body = request(socket, "PUT", "/v1/sessions/"+id+"/files/"+p, "owned", nil)
			if status != 400 || !strings.Contains(string(body), "invalid_argument") {
				t.Errorf("upload %s: %d %s", p, status, body)
			}
		}
		// Paths that name places outside are refused, or land inside.
		for _, p := range []string{"../etc/passwd", "/etc/passwd", "%2Fetc%2Fpasswd", "..%2F..%2Fetc%2Fpasswd"} {
			status, body := request(socket, "GET", "/v1/sessions/"+id+"/files/"+p, "", nil)
			if status == 200 && strings.Contains(string(body), "root:") {
				t.Errorf("download %s read a passwd file", p)
			}
			request(socket, "PUT", "/v1/sessions/"+id+"/files/"+p, "owned", nil)
		}
		hostPasswd, _ := os.ReadFile("/etc/passwd")
		if strings.Contains(string(hostPasswd), "owned") {
			t.Fatal("the host's /etc/passwd was written")
		}
		res = execute(t, api.ExecuteRequest{SessionID: id, Language: "bash", Code: "cat /etc/passwd /tmp/sentinel; [ -e /tmp/new ] && echo /tmp/new; true"})
		if strings.Contains(res.Stdout, "owned") || !strings.HasSuffix(res.Stdout, "\nsentinel\n") {
			t.Fatalf("a file outside /workspace was written: %q", res.Stdout)
		}
		// The listing shows the symlinks as symlinks, and descends into
		// real directories only.
		status, body := request(socket, "GET", "/v1/sessions/"+id+"/files/", "", nil)
		var list api.FilesResponse
		json.Unmarshal(body, &list)
		types := map[string]string{}
		for _, f := range list.Files {
			types[f.Path] = f.Type
		}
		wantTypes := map[string]string{"in": "dir", "in/blob.bin": "file", "out.bin": "file", "d": "dir"}
		for _, l := range []string{"passwd", "root1", "self", "up", "slash", "d/upup", "alias", "chain", "s"} {
			wantTypes[l] = "symlink"
		}
		// A path named outside may have landed inside, as etc/passwd.
		delete(types, "etc")
		delete(types, "etc/passwd")
		if status != 200 || !maps.Equal(types, wantTypes) {
			t.Errorf("listing: %d %v", status, types)
		}
		// Oversized uploads are refused.
		status, _ = requestEarly(socket, "PUT", "/v1/sessions/"+id+"/files/big", strings.Repeat("x", 33<<20))
		if status != 413 {
			t.Errorf("oversized upload: %d", status)
		}
	})
}

func TestSessionIDsAndOwnership(t *testing.T) {
	for _, bad := range []string{"..%2F..%2Fetc", "x", strings.Repeat("a", 300), "ABCDEF0123456789ABCDEF0123456789", "%00"} {
		status, body := request(socket, "GET", "/v1/sessions/"+bad, "", nil)
		if status != 400 {
			t.Errorf("id %.20q: %d %s", bad, status, body)
		}
	}
	status, _ := request(socket, "GET", "/v1/sessions/0123456789abcdef0123456789abcdef", "", nil)
	if status != 404 {
		t.Errorf("unknown id: %d", status)
	}
	id := newSession(t, "-l", "bash")
	// Another user may use the socket here, but not root's session.
	os.Chmod(socket, 0o666)
	defer os.Chmod(socket, 0o660)
	asNobody := func(args ...string) (string, int) { return asUser(socket, args...) }
	if out, code := asNobody("session", "list"); code != 0 || strings.Contains(out, id) {
		t.Errorf("nobody lists root's session: %d %q", code, out)
	}
	for _, args := range [][]string{{"session", "show", id}, {"session", "delete", id}, {"session", "files", id}, {"execute", "--session", id, "-c", "echo hi"}} {
		if out, code := asNobody(args...); code == 0 || !strings.Contains(out, "not found") {
			t.Errorf("nobody %v: %d %q", args, code, out)
		}
	}
	// nobody's own session is nobody's; root sees it.
	out, code := asNobody("session", "create", "-l", "bash")
	theirs := strings.TrimSpace(out)
	if code != 0 || len(theirs) != 32 {
		t.Fatalf("nobody creates: %d %q", code, out)
	}
	defer request(socket, "DELETE", "/v1/sessions/"+theirs, "", nil)
	if out, code := asNobody("execute", "--session", theirs, "-c", "id -u"); code != 0 || out != "65534\n" {
		t.Errorf("nobody runs in its session: %d %q", code, out)
	}
	out, _, _ = sandboxctl(t, "", "session", "list")
	if !strings.Contains(out, theirs) || !strings.Contains(out, id) {
		t.Errorf("root does not see every session: %q", out)
	}
	stdout, _, _ := sandboxctl(t, "", "-o", "json", "session", "show", theirs)
	if !strings.Contains(stdout, `"owner_uid": 65534`) {
		t.Errorf("owner: %s", stdout)
	}
}

func TestSessionCapsAndExpiry(t *testing.T) {
	var ids []string
	for i := range 9 {
		status, body := request(socket, "POST", "/v1/sessions", `{"language":"bash"}`, nil)
		if i < 8 {
			var s api.Session
			if status != 201 || json.Unmarshal(body, &s) != nil {
				t.Fatalf("session %d: %d %s", i, status, body)
			}
			ids = append(ids, s.ID)
			continue
		}
		if status != 429 || !strings.Contains(string(body), "resource_exhausted") {
			t.Errorf("ninth session: %d %s", status, body)
		}
	}
	for _, id := range ids {
		if status, _ := request(socket, "DELETE", "/v1/sessions/"+id, "", nil); status != 204 {
			t.Errorf("delete %s: %d", id, status)
		}
	}
	created := time.Now()
	status, body := request(socket, "POST", "/v1/sessions", `{"language":"bash","idle_timeout_ms":1500}`, nil)
	var s api.Session
	if status != 201 || json.Unmarshal(body, &s) != nil {
		t.Fatalf("create: %d %s", status, body)
	}
	if !containerExistsIn(t, containerdAddr, "sandboxd", "ses-"+s.ID) {
		t.Fatal("no container for the session")
	}
	// Watched through containerd: a request for the session could count
	// as use.
	if !waitFor(30*time.Second, func() bool { return !containerExistsIn(t, containerdAddr, "sandboxd", "ses-"+s.ID) }) {
		t.Fatal("the idle session's container is still in containerd 30s after its idle timeout of 1.5s")
	}
	if d := time.Since(created); d < 1500*time.Millisecond {
		t.Errorf("the session expired after %v, before its idle timeout of 1.5s", d)
	}
	if status, _ := request(socket, "GET", "/v1/sessions/"+s.ID, "", nil); status != 404 {
		t.Errorf("expired session answers %d", status)
	}
}

// TestSessionSurvivesRestart stops a daemon (cleanly, then by SIGKILL) and
// starts another on the same containerd: sessions, their files and clocks
// are there, and expired ones are gone.
func TestSessionSurvivesRestart(t *testing.T) {
	d := startDaemon(t, daemonOpts{dir: testDir(t, "sbxr")})
	sock, ns := d.sock, d.ns
	status, body := request(sock, "POST", "/v1/sessions", `{"language":"python"}`, nil)
	var s api.Session
	if status != 201 || json.Unmarshal(body, &s) != nil {
		t.Fatalf("create: %d %s", status, body)
	}
	defer request(sock, "DELETE", "/v1/sessions/"+s.ID, "", nil)
	status, body = request(sock, "POST", "/v1/sessions", `{"language":"bash","max_lifetime_ms":2500}`, nil)
	var short api.Session
	if status != 201 || json.Unmarshal(body, &short) != nil {
		t.Fatalf("create short: %d %s", status, body)
	}
	// And one on gVisor.
	status, body = request(sock, "POST", "/v1/sessions", `{"language":"bash","runtime":"runsc"}`, nil)
	var gv api.Session
	if status != 201 || json.Unmarshal(body, &gv) != nil || gv.Runtime != "runsc" {
		t.Fatalf("create on gVisor: %d %s", status, body)
	}
	defer request(sock, "DELETE", "/v1/sessions/"+gv.ID, "", nil)
	runIn := func(id, code string) string {
		status, body := request(sock, "POST", "/v1/execute", fmt.Sprintf(`{"session_id":%q,"code":%q}`, id, code), nil)
		var res api.ExecuteResult
		json.Unmarshal(body, &res)
		if status != 200 {
			t.Fatalf("execute: %d %s", status, body)
		}
		return res.Stdout
	}
	run := func(code string) string { return runIn(s.ID, code) }
	run("open('kept.txt','w').write('before restart')")
	runIn(gv.ID, "echo gvisor > kept.txt")

	for _, stop := range []string{"SIGTERM", "SIGKILL"} {
		if stop == "SIGTERM" {
			if err := d.stop(); err != nil {
				t.Fatalf("stop: %v", err)
			}
		} else {
			// Not in the middle of a pool refill: a create cut short by
			// the daemon's death leaves a shim (see the closing note).
			waitPoolFull(t, sock)
			d.kill()
		}
		// The short session's lifetime ends while no daemon runs.
		ends, err := time.Parse(time.RFC3339Nano, short.CreatedAt)
		if err != nil {
			t.Fatalf("created_at %q: %v", short.CreatedAt, err)
		}
		time.Sleep(time.Until(ends.Add(2500*time.Millisecond + 100*time.Millisecond)))
		d = d.restart(t)
		status, body := request(sock, "GET", "/v1/sessions/"+s.ID, "", nil)
		var got api.Session
		json.Unmarshal(body, &got)
		if status != 200 || got.State != api.SessionRunning || got.CreatedAt != s.CreatedAt || got.Executions < 1 {
			t.Fatalf("after %s: %d %s", stop, status, body)
		}
		if out := run("print(open('kept.txt').read())"); out != "before restart\n" {
			t.Fatalf("after %s: file %q", stop, out)
		}
		if out := runIn(gv.ID, "cat kept.txt; uname -r"); !strings.HasPrefix(out, "gvisor\n4.4.0") {
			t.Fatalf("after %s: the gVisor session says %q", stop, out)
		}
		if status, _ := request(sock, "GET", "/v1/sessions/"+short.ID, "", nil); status != 404 {
			t.Errorf("after %s: the expired session answers %d", stop, status)
		}
		if containerExistsIn(t, containerdAddr, ns, "ses-"+short.ID) {
			t.Errorf("after %s: the expired session's container remains", stop)
		}
	}
	for _, id := range []string{s.ID, gv.ID} {
		if status, _ := request(sock, "DELETE", "/v1/sessions/"+id, "", nil); status != 204 {
			t.Errorf("delete: %d", status)
		}
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
}

//go:build integration

package main_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// TestPodLayout runs sandboxd as the DaemonSet of deploy/kubernetes runs
// it, short of a cluster: from a root filesystem laid out as
// deploy/Containerfile lays the image out (its own assembly step, run
// here), in a mount namespace and a PID namespace of its own, with the
// DaemonSet's host paths bind-mounted at the same paths (the node's /usr
// and /etc/alternatives read-only, the cgroups, the containerd socket's
// directory, the state, cache and socket directories), its flags, and
// deploy/kubernetes/sandboxd.toml as its configuration. The daemon finds
// the node's languages through the mounted /usr; the sandboxes, made by
// the node's containerd and runc from the paths the daemon names, run
// them; a session keeps its files; the socket, used from outside as a
// client pod would, has the manifests' group and mode; drain and SIGTERM
// end it as a pod's preStop and stop would, leaving nothing running.
func TestPodLayout(t *testing.T) {
	dir := testDir(t, "pod")
	ctd, err := startContainerd(filepath.Join(dir, "ctd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctd.stop)
	tree := imageTree(t, filepath.Join(dir, "image"))
	sockDir, state := filepath.Join(dir, "run-sandboxd"), filepath.Join(dir, "state")
	sock := filepath.Join(sockDir, "sandboxd.sock")
	config, err := os.ReadFile("../../deploy/kubernetes/sandboxd.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "etc/sandboxd/sandboxd.toml"), config, 0o644); err != nil {
		t.Fatal(err)
	}
	// The DaemonSet's host paths, each at the same path in the pod; the
	// state and socket directories are the test's, /var/cache/sandboxd the
	// host's (the suite's daemons share it), /dev a privileged pod's.
	script := "set -e\nmount --make-rprivate /\n"
	for _, m := range []struct {
		path     string
		readOnly bool
	}{
		{"/usr", true}, {"/etc/alternatives", true}, {"/sys/fs/cgroup", false}, {"/dev", false},
		{filepath.Dir(ctd.addr), true}, {sockDir, false}, {state, false}, {"/var/cache/sandboxd", false},
	} {
		if err := os.MkdirAll(m.path, 0o755); err != nil {
			t.Fatal(err)
		}
		in := tree + m.path
		script += fmt.Sprintf("mkdir -p %q\nmount --rbind %q %q\n", in, m.path, in)
		if m.readOnly {
			script += fmt.Sprintf("mount -o remount,bind,ro %q\n", in)
		}
	}
	script += fmt.Sprintf("mkdir -p %[1]q/proc\nmount -t proc proc %[1]q/proc\n", tree)
	// The DaemonSet's command and flags, then the test's paths.
	script += fmt.Sprintf("exec chroot %q /opt/sandboxd/bin/sandboxd --config=/etc/sandboxd/sandboxd.toml --containerd=%s --namespace=sandboxd "+
		"--socket=%s --state-dir=%s --metrics-address=\n", tree, ctd.addr, sock, state)
	cmd := exec.Command("/bin/sh", "-c", script)
	// A PID namespace of its own, as without hostPID: sandboxd is its PID 1.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID}
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = lockedWriter{&log}, lockedWriter{&log}
	if err := startProc(cmd); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("sandboxd log:\n%s", lockedString(&log))
		}
	})

	c := cli{sock: sock}
	waitUntil(t, "ready", 3*time.Minute, func() bool {
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("sandboxd exited at start: %v", err)
		default:
		}
		_, _, code := c.run(t, "health", "--ready")
		return code == 0
	})
	if fi, err := os.Stat(sock); err != nil || fi.Sys().(*syscall.Stat_t).Gid != 61000 || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket: %v %+v", err, fi)
	}
	out, _, code := c.run(t, "-o", "json", "languages")
	var langs api.LanguagesResponse
	if err := json.Unmarshal([]byte(out), &langs); code != 0 || err != nil {
		t.Fatalf("languages: exit %d, %v: %s", code, err, out)
	}
	found := map[string]bool{}
	for _, l := range langs.Languages {
		found[l.Name] = l.Unavailable == "" && l.Version != "unknown"
	}
	if !found["python"] || !found["bash"] {
		t.Errorf("the node's languages, found through the mounted /usr: %+v", langs.Languages)
	}
	if res := mustExecute(t, sock, api.ExecuteRequest{Language: "python", Code: "import sys; print(sys.executable)"}); res.Status != api.StatusOK || !strings.HasPrefix(res.Stdout, "/usr/") {
		t.Errorf("python: %+v", res)
	}
	// The sandbox's root: the image's merged-/usr links, over the node's /usr.
	res := mustExecute(t, sock, api.ExecuteRequest{Language: "bash", Code: "readlink /lib64 /bin; test -x /.sandboxd/init && echo init; echo $(id -u)"})
	if res.Status != api.StatusOK || res.Stdout != "usr/lib64\nusr/bin\ninit\n65534\n" {
		t.Errorf("bash: %+v", res)
	}
	s := createSession(t, sock, api.CreateSessionRequest{Language: "python"})
	mustExecute(t, sock, api.ExecuteRequest{SessionID: s.ID, Code: "open('kept.txt', 'w').write('kept')"})
	if res := mustExecute(t, sock, api.ExecuteRequest{SessionID: s.ID, Code: "print(open('kept.txt').read())"}); res.Stdout != "kept\n" {
		t.Errorf("session: %+v", res)
	}
	if status, body := request(sock, "DELETE", "/v1/sessions/"+s.ID, "", nil); status != 204 {
		t.Errorf("delete session: %d %s", status, body)
	}

	// The pod's end: preStop, then SIGTERM.
	if out, errOut, code := c.run(t, "drain", "--timeout", "1m"); code != 0 || !strings.HasPrefix(out, "drained:") {
		t.Errorf("drain: exit %d, %q %q", code, out, errOut)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("sandboxd's exit: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("sandboxd still runs a minute after SIGTERM")
	}
	if h := mustProbeContainerd(t, ctd.addr, "sandboxd"); len(h.tasks) > 0 || len(h.shims) > 0 {
		t.Errorf("left running: %v", h)
	}
	if !strings.Contains(lockedString(&log), `"msg":"serving"`) {
		t.Errorf("the log is not JSON (log_format of sandboxd.toml)")
	}
}

// imageTree lays out under dir the daemon's image as deploy/Containerfile
// does: the binaries in /opt/sandboxd/bin, then the Containerfile's own
// assembly step (its RUN that starts with "set -eux"), run with its /out
// moved to dir.
func imageTree(t *testing.T, dir string) string {
	t.Helper()
	f, err := os.Open("../../deploy/Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var step strings.Builder
	sc := bufio.NewScanner(f)
	for in := false; sc.Scan(); {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "RUN set -eux;"); ok {
			in, line = true, "set -eux;"+rest
		}
		if !in {
			continue
		}
		step.WriteString(strings.TrimSuffix(line, "\\") + "\n")
		if !strings.HasSuffix(line, "\\") {
			break
		}
	}
	if step.Len() == 0 {
		t.Fatal("deploy/Containerfile has no RUN set -eux step")
	}
	bin := filepath.Join(dir, "opt/sandboxd/bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sandboxd", "sandboxctl", "sandboxd-init"} {
		data, err := os.ReadFile(filepath.Join(binDir, name))
		if err == nil {
			err = os.WriteFile(filepath.Join(bin, name), data, 0o755)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	run := exec.Command("/bin/sh", "-c", strings.ReplaceAll(step.String(), "/out", dir))
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("the Containerfile's assembly step: %v\n%s", err, out)
	}
	return dir
}

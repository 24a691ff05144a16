//go:build integration

package main_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// busyboxApplets are linked to busybox in the test image.
var busyboxApplets = []string{"sh", "echo", "cat", "id", "touch", "grep", "sleep", "tr", "env", "sort", "head", "pwd", "test", "ls", "wc", "mkdir", "rm"}

// busyboxImage builds, with no registry and no network, an image holding
// Debian's static busybox and nothing else, with PATH=/bin.
func busyboxImage(t *testing.T) v1.Image {
	t.Helper()
	bin, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("static busybox (apt-get install busybox-static): %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))})
	tw.Write(bin)
	for _, a := range busyboxApplets {
		tw.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
	}
	// An /etc of the image's own, to tell it from the host's.
	passwd := "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"
	tw.WriteHeader(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(passwd))})
	tw.Write([]byte(passwd))
	tw.Close()
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goruntime.GOARCH
	cf.Config.Env = []string{"PATH=/bin", "IMAGE_SAYS=hello"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// dockerArchive writes img as `docker save` would.
func dockerArchive(t *testing.T, img v1.Image, ref string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "image.tar")
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		t.Fatal(err)
	}
	return path
}

// ociArchive writes img as a tarball of an OCI image layout.
func ociArchive(t *testing.T, img v1.Image, ref string) string {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(filepath.Join(dir, "layout"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref})); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "oci.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	root := filepath.Join(dir, "layout")
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, _ := d.Info()
		hdr, _ := tar.FileInfoHeader(info, "")
		hdr.Name = rel
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		tw.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

const (
	busyboxRef    = "localhost/sandboxd-test/busybox:1"
	busyboxOCIRef = "localhost/sandboxd-test/busybox:oci"
)

// TestImageLanguages runs a language from an image the test built and
// imported: unavailable before, then the same hardening as the host's
// runtimes, a session, gVisor, and nothing left after.
func TestImageLanguages(t *testing.T) {
	img := busyboxImage(t)
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	dir := testDir(t, "sbxi")
	d := startDaemon(t, daemonOpts{dir: dir, config: fmt.Sprintf(`
socket_mode = "0666"
[images]
pull = false
[runtimes.runsc]
binary = "runsc"
[runtimes.missing]
binary = "/nonexistent/runsc"
[pool]
size = 1
[[languages]]
name = "bbsh"
image = %q
file_name = "main.sh"
run = ["sh", "/sandbox/main.sh"]
[[languages]]
name = "bbsh-oci"
image = %q
file_name = "main.sh"
run = ["sh", "/sandbox/main.sh"]
runtime = "runsc"
[[languages]]
name = "bbpinned"
image = "localhost/sandboxd-test/busybox@%s"
file_name = "main.sh"
run = ["sh", "/sandbox/main.sh"]
`, busyboxRef, busyboxOCIRef, digest)})
	sock, ns := d.sock, d.ns
	ctl := func(stdin string, args ...string) (string, string, int) {
		t.Helper()
		return cli{sock: sock, stdin: stdin}.run(t, args...)
	}
	run := func(req api.ExecuteRequest) api.ExecuteResult {
		t.Helper()
		return *mustExecute(t, sock, req)
	}

	// Before the import: listed as unavailable, with the fix; a request
	// gets a clear error at once.
	out, _, code := ctl("", "languages")
	if code != 0 || !strings.Contains(out, "bbsh (unavailable)") || !strings.Contains(out, "sandboxctl image import") {
		t.Fatalf("languages before import: exit %d\n%s", code, out)
	}
	_, errOut, code := ctl("", "execute", "-l", "bbsh", "-c", "echo hi")
	if code == 0 || !strings.Contains(errOut, busyboxRef) || !strings.Contains(errOut, "not in containerd") || !strings.Contains(errOut, "sandboxctl image import") {
		t.Fatalf("execute before import: exit %d, %q", code, errOut)
	}
	status, body := request(sock, "POST", "/v1/execute", `{"language":"bbsh","code":"echo hi"}`, nil)
	if status != 503 {
		t.Fatalf("API before import: %d %s", status, body)
	}
	out, _, _ = ctl("", "doctor")
	if !strings.Contains(out, "language bbsh") {
		t.Errorf("doctor does not name the unavailable language:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^warn\s+runtime missing\s+.*not installed`).MatchString(out) || !regexp.MustCompile(`(?m)^ok\s+runtime runsc`).MatchString(out) {
		t.Errorf("doctor's runtime checks:\n%s", out)
	}
	// Pulling is disabled here; images come only by import, for root.
	if _, errOut, code := ctl("", "image", "pull", busyboxRef); code == 0 || !strings.Contains(errOut, "pulling is disabled") {
		t.Errorf("pull while disabled: exit %d %q", code, errOut)
	}
	docker, oci := dockerArchive(t, img, busyboxRef), ociArchive(t, img, busyboxOCIRef)
	// Where uid 65534 can read it, to be refused for who it is.
	shared := filepath.Join(dir, "image.tar")
	if b, err := os.ReadFile(docker); err != nil || os.WriteFile(shared, b, 0o644) != nil {
		t.Fatal(err)
	}
	if out, code := asUser(sock, "image", "import", shared); code == 0 || !strings.Contains(out, "for root") {
		t.Errorf("import by uid 65534: exit %d %q", code, out)
	}
	if _, errOut, code := ctl("not a tarball", "image", "import", "-"); code == 0 || !strings.Contains(errOut, "tarball") {
		t.Errorf("import of garbage: exit %d %q", code, errOut)
	}
	if out, errOut, code := ctl("", "image", "import", docker); code != 0 || !strings.Contains(out, busyboxRef) {
		t.Fatalf("import docker-archive: exit %d %q %q", code, out, errOut)
	}
	f, _ := os.Open(oci)
	defer f.Close()
	b, _ := io.ReadAll(f)
	if out, errOut, code := ctl(string(b), "image", "import", "-"); code != 0 || !strings.Contains(out, busyboxOCIRef) {
		t.Fatalf("import OCI layout from stdin: exit %d %q %q", code, out, errOut)
	}
	out, _, code = ctl("", "-o", "json", "image", "list")
	var list api.ImagesResponse
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Images) != 2 {
		t.Fatalf("image list: exit %d %s", code, out)
	}
	for _, im := range list.Images {
		want := "bbsh"
		if im.Ref == busyboxOCIRef {
			want = "bbpinned,bbsh-oci" // the OCI layout keeps the manifest's digest, which bbpinned pins
		}
		if !strings.HasPrefix(im.Digest, "sha256:") || strings.Join(im.Languages, ",") != want {
			t.Errorf("image %+v, want languages %s", im, want)
		}
	}
	if out, errOut, code := ctl("", "execute", "-l", "bbpinned", "-c", "echo pinned"); code != 0 || out != "pinned\n" {
		t.Errorf("a language pinned by digest: exit %d %q %q", code, out, errOut)
	}
	out, _, _ = ctl("", "languages")
	if strings.Contains(out, "unavailable") || !strings.Contains(out, busyboxRef) || !strings.Contains(out, "runsc") {
		t.Errorf("languages after import:\n%s", out)
	}

	// The image's root, PATH and environment; ours on top of them.
	res := run(api.ExecuteRequest{Language: "bbsh", Code: "echo $PATH $IMAGE_SAYS $HOME; cat /etc/passwd | head -1; test -e /usr/bin/python3 || echo no host"})
	if res.Status != api.StatusOK || res.Stdout != "/bin hello /workspace\nroot:x:0:0:root:/root:/bin/sh\nno host\n" {
		t.Fatalf("image root: %+v", res)
	}
	// The same hardening as the host's runtimes, on runc and on gVisor.
	for _, lang := range []string{"bbsh", "bbsh-oci"} {
		t.Run(lang, func(t *testing.T) {
			res := run(api.ExecuteRequest{Language: lang, Code: identityProgram})
			want := []string{"Uid:\t65534\t65534\t65534\t65534", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "Seccomp:\t2", "\n65534\n"}
			for _, w := range want {
				if !strings.Contains(res.Stdout, w) {
					t.Errorf("identity: missing %q in %q (%q)", w, res.Stdout, res.Stderr)
				}
			}
			res = run(api.ExecuteRequest{Language: lang, Code: "cd /sys/class/net && echo *; cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '"})
			if res.Stdout != "lo\nlo\n" {
				t.Errorf("network: %q %q", res.Stdout, res.Stderr)
			}
			res = run(api.ExecuteRequest{Language: lang, Code: readOnlyProgram})
			if res.Stdout != "tmp ok\nworkspace ok\n/workspace\n" {
				t.Errorf("read-only root: %q %q", res.Stdout, res.Stderr)
			}
			// Writes of one run are gone for the next: they never reach the image.
			run(api.ExecuteRequest{Language: lang, Code: "echo x > /tmp/left; echo y > /workspace/left"})
			if res = run(api.ExecuteRequest{Language: lang, Code: "cat /tmp/left /workspace/left 2>&1 | wc -l; cat /tmp/left || echo gone"}); !strings.HasSuffix(res.Stdout, "gone\n") {
				t.Errorf("a run's files outlived it: %q", res.Stdout)
			}
			// Limits: the pids limit stops a fork loop; the timeout kills.
			res = run(api.ExecuteRequest{Language: lang, Code: "i=0; while [ $i -lt 300 ]; do sleep 30 & i=$((i+1)); done; echo looped", TimeoutMS: 20000})
			limited := strings.Contains(res.Stderr, "fork") || strings.Contains(res.Message, "process limit")
			if !limited {
				t.Errorf("300 processes under a pids limit of 128: %+v", res)
			}
			res = run(api.ExecuteRequest{Language: lang, Code: "sleep 30", TimeoutMS: 500})
			if res.Status != api.StatusTimedOut {
				t.Errorf("timeout: %+v", res)
			}
		})
	}
	status, body = request(sock, "POST", "/v1/execute", `{"language":"bbsh-oci","code":"echo hi","runtime":"runc"}`, nil)
	if status != 403 || !strings.Contains(string(body), "always runs on runsc") {
		t.Errorf("runsc language asked for runc: %d %s", status, body)
	}

	// A session on the image: files persist between executions; a host
	// language does not run in it.
	id, errOut, code := ctl("", "session", "create", "-l", "bbsh")
	id = strings.TrimSpace(id)
	if code != 0 || len(id) != 32 {
		t.Fatalf("session create: exit %d %q %q", code, id, errOut)
	}
	run(api.ExecuteRequest{SessionID: id, Code: "echo kept > /workspace/note"})
	if res := run(api.ExecuteRequest{SessionID: id, Code: "cat note"}); res.Stdout != "kept\n" {
		t.Errorf("session file: %+v", res)
	}
	if out, _, code := ctl("", "session", "download", id, "note", "-"); code != 0 || out != "kept\n" {
		t.Errorf("session download: exit %d %q", code, out)
	}
	status, body = request(sock, "POST", "/v1/execute", fmt.Sprintf(`{"session_id":%q,"language":"python","code":"print(1)"}`, id), nil)
	if status != 400 || !strings.Contains(string(body), "image "+busyboxRef) {
		t.Errorf("host language in an image session: %d %s", status, body)
	}
	if _, _, code := ctl("", "session", "delete", id); code != 0 {
		t.Errorf("session delete: exit %d", code)
	}

	// Removing an image makes its language unavailable again; its base
	// goes once no sandbox sits on it (the pool's go with the daemon).
	if out, errOut, code := ctl("", "image", "rm", busyboxOCIRef); code != 0 {
		t.Fatalf("image rm: exit %d %q %q", code, out, errOut)
	}
	if _, errOut, code := ctl("", "image", "rm", busyboxOCIRef); code == 0 || !strings.Contains(errOut, "no image") {
		t.Errorf("second image rm: exit %d %q", code, errOut)
	}
	out, _, _ = ctl("", "languages")
	if !strings.Contains(out, "bbsh-oci (unavailable)") {
		t.Errorf("languages after rm:\n%s", out)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	left := mustProbeContainerd(t, containerdAddr, ns)
	if n := len(left.containers); n != 0 {
		t.Errorf("%d containers left in %s", n, ns)
	}
	if views, bases := left.views(), left.bases(); views != 0 || bases != 1 {
		t.Errorf("after the daemon stopped: %d views (want 0), %d bases (want 1, the remaining image's)", views, bases)
	}

	// At its next start, a daemon removes the bases of images that are gone.
	d = d.restart(t)
	if _, _, code := ctl("", "image", "rm", busyboxRef); code != 0 {
		t.Errorf("image rm %s: exit %d", busyboxRef, code)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	d = d.restart(t)
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	left = mustProbeContainerd(t, containerdAddr, ns)
	if views, bases := left.views(), left.bases(); views != 0 || bases != 0 {
		t.Errorf("with no image left: %d views, %d bases", views, bases)
	}
}

// TestImagePull pulls from a registry the test runs on loopback (an
// in-memory one, with the image the test built): a language whose image is
// missing is pulled in the background at start, with progress logged, and
// becomes available; sandboxctl image pull pulls on demand.
func TestImagePull(t *testing.T) {
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close) // after the daemon's stop
	host := strings.TrimPrefix(reg.URL, "http://")
	img := busyboxImage(t)
	for _, tag := range []string{"lang", "ondemand"} {
		ref, err := name.NewTag(host + "/test/busybox:" + tag)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
	}
	d := startDaemon(t, daemonOpts{config: fmt.Sprintf(`
[pool]
size = 0
[[languages]]
name = "pulled"
image = "%s/test/busybox:lang"
file_name = "main.sh"
run = ["sh", "/sandbox/main.sh"]
`, host)})
	ctl := cli{sock: d.sock}
	deadline := time.Now().Add(time.Minute)
	for {
		out, _, _ := ctl.run(t, "languages")
		if strings.Contains(out, "pulled") && !strings.Contains(out, "unavailable") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the language's image was not pulled:\n%s\n%s", out, d.logged())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, errOut, code := ctl.run(t, "execute", "-l", "pulled", "-c", "echo $IMAGE_SAYS"); code != 0 || out != "hello\n" {
		t.Fatalf("execute: exit %d %q %q", code, out, errOut)
	}
	if log := d.logged(); !strings.Contains(log, `msg="pulling image"`) || !strings.Contains(log, "digest=sha256:") || !strings.Contains(log, `msg="pulled image"`) {
		t.Errorf("no pull progress in the log:\n%s", log)
	}
	ref := host + "/test/busybox:ondemand"
	if out, errOut, code := ctl.run(t, "image", "pull", ref); code != 0 || !strings.Contains(out, ref) {
		t.Fatalf("image pull: exit %d %q %q", code, out, errOut)
	}
	if _, errOut, code := ctl.run(t, "image", "pull", host+"/test/nothing:1"); code == 0 || !strings.Contains(errOut, "not found") {
		t.Errorf("pull of a missing image: exit %d %q", code, errOut)
	}
	if _, errOut, code := ctl.run(t, "image", "pull", "Not A Ref"); code == 0 || !strings.Contains(errOut, "not an image reference") {
		t.Errorf("pull of a bad reference: exit %d %q", code, errOut)
	}
	for _, r := range []string{ref, host + "/test/busybox:lang"} {
		if _, errOut, code := ctl.run(t, "image", "rm", r); code != 0 {
			t.Errorf("image rm %s: exit %d %q", r, code, errOut)
		}
	}
}

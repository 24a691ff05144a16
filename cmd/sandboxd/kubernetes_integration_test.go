//go:build integration

package main_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/sandboxd/sandboxd/daemon/api"
	sbxruntime "github.com/sandboxd/sandboxd/runtime"
)

// kubeletNamespace is the containerd namespace of a Kubernetes node's pods.
const kubeletNamespace = "k8s.io"

// TestKubernetesNodeContainersUntouched runs sandboxd as the DaemonSet of
// deploy/kubernetes does, in namespace "sandboxd", on a containerd that
// also holds a running container in namespace k8s.io, as a node's pods
// are, labelled as sandboxd's own one-shot sandboxes are, so that only the
// namespace keeps sandboxd off it. Through executions, a session, a
// graceful stop, a crash, the start-up clean-ups and an expired session's
// sweep, the container, its task, its process, its snapshot and its image
// stay as they were. The socket gets the numeric group the manifests give.
func TestKubernetesNodeContainersUntouched(t *testing.T) {
	dir := testDir(t, "k8s")
	ctd, err := startContainerd(filepath.Join(dir, "ctd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctd.stop)
	pod := startPodContainer(t, ctd.addr)

	const socketGID = 61000 // deploy/kubernetes/sandboxd.toml's
	d := startDaemon(t, daemonOpts{containerd: ctd.addr, namespace: "sandboxd", checkStop: true,
		config: "socket_group = '61000'\n[sessions]\nidle_timeout = '3s'\n"})
	if fi, err := os.Stat(d.sock); err != nil || fi.Sys().(*syscall.Stat_t).Gid != socketGID || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket: %v %+v", err, fi)
	}
	if res := mustExecute(t, d.sock, api.ExecuteRequest{Language: "bash", Code: "echo one-shot"}); res.Stdout != "one-shot\n" {
		t.Errorf("one-shot: %+v", res)
	}
	s := createSession(t, d.sock, api.CreateSessionRequest{Language: "bash"})
	if res := mustExecute(t, d.sock, api.ExecuteRequest{SessionID: s.ID, Code: "echo in-session"}); res.Stdout != "in-session\n" {
		t.Errorf("session: %+v", res)
	}
	pod.check(t, "with sandboxd serving")
	for _, m := range []string{"sandboxd_leaked_containers", "sandboxd_containers"} {
		if v := metricValue(t, d.sock, m); m == "sandboxd_leaked_containers" && v != 0 {
			t.Errorf("%s = %v: the pod's container is counted as sandboxd's", m, v)
		}
	}
	if h := mustProbeContainerd(t, ctd.addr, "sandboxd"); h.holds("sandboxd", pod.id) {
		t.Errorf("namespace sandboxd holds the pod's container: %v", h)
	}

	// A graceful stop (its shutdown clean-up), a start (its start-up
	// clean-up and adoption), a crash and a start again.
	d = d.restart(t)
	pod.check(t, "after a stop and a start")
	waitPoolFull(t, d.sock) // a create cut short by the crash would leave a shim
	d.kill()
	d = d.restart(t)
	pod.check(t, "after a crash and a start")
	// The session, idle past its timeout, is swept: its container goes.
	waitUntil(t, "the idle session swept", time.Minute, func() bool {
		return !containerExistsIn(t, ctd.addr, "sandboxd", "ses-"+s.ID)
	})
	mustExecute(t, d.sock, api.ExecuteRequest{Language: "bash", Code: "true"})
	if err := d.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	pod.check(t, "after the sweep and the last stop")
	if h := mustProbeContainerd(t, ctd.addr, "sandboxd"); len(h.tasks) > 0 {
		t.Errorf("sandboxd left tasks behind: %v", h)
	}
}

// podContainer is a container that a test runs in namespace k8s.io.
type podContainer struct {
	addr, id, image, snapshot string
	pid                       uint32
	labels                    map[string]string
}

// startPodContainer imports the busybox test image into namespace k8s.io
// of the containerd at addr and runs `sleep` from it, labelled as a
// one-shot sandbox of sandboxd's; it is removed when the test ends.
func startPodContainer(t *testing.T, addr string) *podContainer {
	t.Helper()
	p := &podContainer{addr: addr, id: "kube-pod-sleeper", image: "localhost/sandboxd-test/kube-pod:1", snapshot: "kube-pod-sleeper-rootfs",
		labels: map[string]string{sbxruntime.LabelManaged: "true", sbxruntime.LabelKind: "pool"}}
	archive, err := os.Open(dockerArchive(t, busyboxImage(t), p.image))
	if err != nil {
		t.Fatal(err)
	}
	defer archive.Close()
	c, err := containerd.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := namespaces.WithNamespace(context.Background(), kubeletNamespace)
	if _, err := c.Import(ctx, archive); err != nil {
		t.Fatalf("import into %s: %v", kubeletNamespace, err)
	}
	img, err := c.GetImage(ctx, p.image)
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Unpack(ctx, "overlayfs"); err != nil {
		t.Fatal(err)
	}
	ctr, err := c.NewContainer(ctx, p.id, containerd.WithImage(img), containerd.WithSnapshotter("overlayfs"),
		containerd.WithNewSnapshot(p.snapshot, img), containerd.WithContainerLabels(p.labels),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("sleep", "3600")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.remove)
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	p.pid = task.Pid()
	// runc's init becomes sleep a moment after Start.
	waitUntil(t, "the pod's sleep started", 30*time.Second, func() bool { return strings.HasPrefix(p.cmdline(), "sleep\x003600") })
	p.check(t, "at start")
	return p
}

// check fails the test unless the container, its labels, its running task
// with the same process, its snapshot and its image are all there.
func (p *podContainer) check(t *testing.T, when string) {
	t.Helper()
	c, err := containerd.New(p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := namespaces.WithNamespace(context.Background(), kubeletNamespace)
	ctr, err := c.LoadContainer(ctx, p.id)
	if err != nil {
		t.Fatalf("%s: the k8s.io container: %v", when, err)
	}
	if labels, err := ctr.Labels(ctx); err != nil || labels[sbxruntime.LabelManaged] != "true" || labels[sbxruntime.LabelKind] != "pool" {
		t.Errorf("%s: its labels: %v %v", when, labels, err)
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		t.Fatalf("%s: its task: %v", when, err)
	}
	st, err := task.Status(ctx)
	if err != nil || st.Status != containerd.Running || task.Pid() != p.pid {
		t.Errorf("%s: its task: %+v %v, pid %d (was %d)", when, st, err, task.Pid(), p.pid)
	}
	if err := syscall.Kill(int(p.pid), 0); err != nil {
		t.Errorf("%s: its process %d: %v", when, p.pid, err)
	}
	if cmdline := p.cmdline(); !strings.HasPrefix(cmdline, "sleep\x003600") {
		t.Errorf("%s: process %d is %q", when, p.pid, cmdline)
	}
	if _, err := c.SnapshotService("overlayfs").Stat(ctx, p.snapshot); err != nil {
		t.Errorf("%s: its snapshot: %v", when, err)
	}
	if _, err := c.ImageService().Get(ctx, p.image); err != nil {
		t.Errorf("%s: its image: %v", when, err)
	}
	if h := mustProbeContainerd(t, p.addr, kubeletNamespace); len(h.containers) != 1 || len(h.tasks) != 1 {
		t.Errorf("%s: namespace k8s.io holds %v", when, h)
	}
}

func (p *podContainer) cmdline() string {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.FormatUint(uint64(p.pid), 10), "cmdline"))
	return string(b)
}

// remove kills and deletes the container, its snapshot and its image.
func (p *podContainer) remove() {
	c, err := containerd.New(p.addr)
	if err != nil {
		return
	}
	defer c.Close()
	ctx := namespaces.WithNamespace(context.Background(), kubeletNamespace)
	if ctr, err := c.LoadContainer(ctx, p.id); err == nil {
		if task, err := ctr.Task(ctx, nil); err == nil {
			task.Delete(ctx, containerd.WithProcessKill)
		}
		ctr.Delete(ctx, containerd.WithSnapshotCleanup)
	}
	c.ImageService().Delete(ctx, p.image, images.SynchronousDelete())
}

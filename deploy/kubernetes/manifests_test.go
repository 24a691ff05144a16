// Package kubernetes_test checks the manifests of deploy/kubernetes
// without a cluster: kustomize renders them as `kubectl apply -k` would,
// every object decodes strictly into the Kubernetes API's types (an unknown
// field is an error), and what docs/kubernetes.md promises of them holds:
// the daemon's flags and configuration (parsed by sandboxd's own config
// package), its mounts at the same paths as on the node, its probes and
// preStop through the socket, and the socket shared with the example
// client. A module of its own, so that sandboxd's go.mod stays free of
// Kubernetes modules.
package kubernetes_test

import (
	"flag"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/sandboxd/sandboxd/daemon"
	"github.com/sandboxd/sandboxd/daemon/config"
)

// objects are the rendered objects of a kustomization, decoded.
type objects struct {
	namespaces  []corev1.Namespace
	configMaps  []corev1.ConfigMap
	daemonSets  []appsv1.DaemonSet
	deployments []appsv1.Deployment
	podMonitors []monitoringv1.PodMonitor
}

// decodeStrict decodes one object into its type, refusing unknown fields.
func decodeStrict(t *testing.T, name string, data []byte, into *objects) {
	t.Helper()
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(data, &meta); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var err error
	switch meta.APIVersion + " " + meta.Kind {
	case "v1 Namespace":
		var o corev1.Namespace
		err = yaml.UnmarshalStrict(data, &o)
		into.namespaces = append(into.namespaces, o)
	case "v1 ConfigMap":
		var o corev1.ConfigMap
		err = yaml.UnmarshalStrict(data, &o)
		into.configMaps = append(into.configMaps, o)
	case "apps/v1 DaemonSet":
		var o appsv1.DaemonSet
		err = yaml.UnmarshalStrict(data, &o)
		into.daemonSets = append(into.daemonSets, o)
	case "apps/v1 Deployment":
		var o appsv1.Deployment
		err = yaml.UnmarshalStrict(data, &o)
		into.deployments = append(into.deployments, o)
	case "monitoring.coreos.com/v1 PodMonitor":
		var o monitoringv1.PodMonitor
		err = yaml.UnmarshalStrict(data, &o)
		into.podMonitors = append(into.podMonitors, o)
	default:
		t.Fatalf("%s: an object of a kind this test does not know: %s %s", name, meta.APIVersion, meta.Kind)
	}
	if err != nil {
		t.Fatalf("%s (%s): %v", name, meta.Kind, err)
	}
}

// render builds the kustomization in dir (relative to deploy/kubernetes)
// as kubectl apply -k does, on a copy of deploy/kubernetes in memory whose
// top kustomization lists components too, as its comments tell an
// operator to.
func render(t *testing.T, dir string, components ...string) objects {
	t.Helper()
	mem := filesys.MakeFsInMemory()
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, ".go") || strings.HasPrefix(p, "go.") {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if p == "kustomization.yaml" && len(components) > 0 {
			data = append(data, "components:\n"...)
			for _, c := range components {
				data = append(data, "- "+c+"\n"...)
			}
		}
		return mem.WriteFile(path.Join("/k", filepath.ToSlash(p)), data)
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(mem, path.Join("/k", dir))
	if err != nil {
		t.Fatalf("kustomize %s %v: %v", dir, components, err)
	}
	var out objects
	for _, r := range res.Resources() {
		data, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		decodeStrict(t, dir+": "+r.GetKind()+" "+r.GetName(), data, &out)
	}
	return out
}

// Every manifest and kustomization file decodes strictly as it is, before
// kustomize touches it: a misspelt field is not silently dropped.
func TestFilesDecodeStrictly(t *testing.T) {
	var n int
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
			return err
		}
		n++
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if filepath.Base(p) == "kustomization.yaml" {
			var k types.Kustomization
			if err := yaml.UnmarshalStrict(data, &k); err != nil {
				t.Errorf("%s: %v", p, err)
			}
			return nil
		}
		decodeStrict(t, p, data, &objects{})
		return nil
	})
	if err != nil || n < 9 {
		t.Fatalf("%d YAML files: %v", n, err)
	}
}

// TestDaemonSet checks the DaemonSet against its configuration as sandboxd
// itself reads it: the ConfigMap's sandboxd.toml under the DaemonSet's
// flags.
func TestDaemonSet(t *testing.T) {
	objs := render(t, ".")
	if len(objs.daemonSets) != 1 || len(objs.configMaps) != 1 || len(objs.namespaces) != 1 {
		t.Fatalf("want a DaemonSet, a ConfigMap and a Namespace: %+v", objs)
	}
	ds, cm, ns := objs.daemonSets[0], objs.configMaps[0], objs.namespaces[0]
	if ds.Namespace != "sandboxd" || cm.Namespace != "sandboxd" || ns.Name != "sandboxd" {
		t.Errorf("namespaces: DaemonSet %q, ConfigMap %q, Namespace %q", ds.Namespace, cm.Namespace, ns.Name)
	}
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Errorf("namespace labels %v: Pod Security would refuse a privileged pod", ns.Labels)
	}
	pod := ds.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("containers: %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	s := settingsOf(t, pod, cm)

	// containerd: the node's, in namespace sandboxd, never the kubelet's.
	if s.Namespace != "sandboxd" || s.Containerd != config.SystemContainerd {
		t.Errorf("namespace %q, containerd %q", s.Namespace, s.Containerd)
	}
	for _, a := range append(slices.Clone(c.Args), envValues(c)...) {
		if strings.Contains(a, "k8s.io") {
			t.Errorf("%q names the kubelet's containerd namespace", a)
		}
	}

	// Host paths at the same paths in the pod: the node's containerd and
	// runc open them by the names the daemon gives.
	mounts := hostMounts(t, pod, c)
	for _, m := range []struct {
		path     string
		readOnly bool
	}{
		{filepath.Dir(s.Containerd), true},
		{filepath.Dir(s.Socket), false},
		{s.StateDir, false},
		{s.CacheDir, false},
		{"/sys/fs/cgroup", false},
		{"/usr", true},
		{"/etc/alternatives", true},
	} {
		got, ok := mounts[m.path]
		if !ok {
			t.Errorf("no hostPath %s mounted at the same path (mounts: %v)", m.path, mounts)
			continue
		}
		if got != m.readOnly {
			t.Errorf("hostPath %s: read-only %v, want %v", m.path, got, m.readOnly)
		}
	}
	if s.Socket != "/run/sandboxd/sandboxd.sock" || env(c, "SANDBOXD_SOCKET") != s.Socket {
		t.Errorf("socket %q, SANDBOXD_SOCKET %q", s.Socket, env(c, "SANDBOXD_SOCKET"))
	}
	if s.SocketMode != "0660" {
		t.Errorf("socket_mode %q", s.SocketMode)
	}
	if _, err := strconv.ParseUint(s.SocketGroup, 10, 31); err != nil {
		t.Errorf("socket_group %q: a pod's supplementalGroups are numbers: %v", s.SocketGroup, err)
	}

	// Probes and preStop run sandboxctl, from the image, on the socket.
	ctl := "/opt/sandboxd/bin/sandboxctl"
	probes := map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe}
	want := map[string][]string{"startup": {ctl, "health", "--live"}, "liveness": {ctl, "health", "--live"}, "readiness": {ctl, "health", "--ready"}}
	for name, p := range probes {
		if p == nil || p.Exec == nil || !slices.Equal(p.Exec.Command, want[name]) {
			t.Errorf("%s probe: %+v, want exec %q", name, p, want[name])
		}
	}
	if c.StartupProbe != nil && time.Duration(c.StartupProbe.PeriodSeconds*c.StartupProbe.FailureThreshold)*time.Second < time.Duration(s.ContainerdWait) {
		t.Errorf("the startup probe gives up before containerd_wait (%v) is over", time.Duration(s.ContainerdWait))
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil {
		t.Fatalf("no preStop exec: %+v", c.Lifecycle)
	}
	pre := c.Lifecycle.PreStop.Exec.Command
	timeout, ok := strings.CutPrefix(pre[len(pre)-1], "--timeout=")
	drainWait, err := time.ParseDuration(timeout)
	if len(pre) != 3 || pre[0] != ctl || pre[1] != "drain" || !ok || err != nil {
		t.Fatalf("preStop %q: want %s drain --timeout=D", pre, ctl)
	}
	if drainWait < time.Duration(s.Limits.MaxTimeout) {
		t.Errorf("the drain waits %v, less than an execution may run (limits.max_timeout %v)", drainWait, time.Duration(s.Limits.MaxTimeout))
	}
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	if grace < drainWait+time.Duration(s.ShutdownGrace) {
		t.Errorf("terminationGracePeriodSeconds %v < the drain's %v + shutdown_grace %v", grace, drainWait, time.Duration(s.ShutdownGrace))
	}
	checkImageLayout(t, c, ctl)

	// Privileges as documented: privileged, no host namespaces, no token.
	if sc := c.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged || sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Errorf("security context %+v", sc)
	}
	if pod.HostPID || pod.HostNetwork || pod.HostIPC || pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("hostPID %v, hostNetwork %v, hostIPC %v, automountServiceAccountToken %v", pod.HostPID, pod.HostNetwork, pod.HostIPC, pod.AutomountServiceAccountToken)
	}

	// Only the chosen nodes: their label, and a toleration of their taint.
	checkChosenNodes(t, "DaemonSet", pod)
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ru == nil || ru.MaxSurge == nil || ru.MaxSurge.IntValue() != 0 || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 1 {
		t.Errorf("update strategy %+v: one node at a time, the old daemon gone first", ds.Spec.UpdateStrategy)
	}

	// /metrics on [metrics] address, which the port and the annotations name.
	_, port, err := net.SplitHostPort(s.Metrics.Address)
	if err != nil {
		t.Fatalf("[metrics] address %q: %v", s.Metrics.Address, err)
	}
	ann := ds.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != port || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations %v, metrics port %s", ann, port)
	}
	if p := containerPort(c, "metrics"); strconv.Itoa(int(p)) != port {
		t.Errorf("container port metrics %d, [metrics] address %s", p, s.Metrics.Address)
	}

	// The daemon's own resources: requested, memory capped, CPU not.
	r := c.Resources
	if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().Cmp(*r.Requests.Memory()) < 0 || !r.Limits.Cpu().IsZero() {
		t.Errorf("resources %+v", r)
	}
	if !strings.HasPrefix(cm.Name, "sandboxd-config-") || len(cm.Name) <= len("sandboxd-config-") {
		t.Errorf("ConfigMap %s: its name carries no hash of its content, so a change would not roll the pods", cm.Name)
	}
}

// The example client reaches the socket its node's daemon serves: the same
// host directory, SANDBOXD_SOCKET naming the socket in it, the socket's
// group, a uid that is not root, and the same nodes.
func TestExampleClient(t *testing.T) {
	base := render(t, ".")
	s := settingsOf(t, base.daemonSets[0].Spec.Template.Spec, base.configMaps[0])
	objs := render(t, "example-client")
	if len(objs.deployments) != 1 || len(objs.namespaces) != 1 {
		t.Fatalf("want a Deployment and a Namespace: %+v", objs)
	}
	d := objs.deployments[0]
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	if got := hostMounts(t, pod, c); len(got) != 1 || !got[filepath.Dir(s.Socket)] {
		t.Errorf("client host mounts %v, want %s read-only at the same path", got, filepath.Dir(s.Socket))
	}
	if env(c, "SANDBOXD_SOCKET") != s.Socket {
		t.Errorf("SANDBOXD_SOCKET %q, the daemon's socket %q", env(c, "SANDBOXD_SOCKET"), s.Socket)
	}
	gid, _ := strconv.ParseInt(s.SocketGroup, 10, 64)
	psc := pod.SecurityContext
	if psc == nil || !slices.Contains(psc.SupplementalGroups, gid) {
		t.Errorf("the client's groups %+v lack socket_group %s", psc, s.SocketGroup)
	}
	if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser == 0 || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("the client runs as %+v: root passes every access list", psc)
	}
	if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("client container security context %+v", sc)
	}
	checkChosenNodes(t, "example client", pod)
	if !strings.Contains(strings.Join(c.Command, " "), "sandboxctl execute") {
		t.Errorf("the client does not call sandboxctl: %q", c.Command)
	}
}

// The optional components render with the DaemonSet: the PodMonitor
// scrapes its metrics port, and image languages get the containerd root at
// the same path.
func TestComponents(t *testing.T) {
	objs := render(t, ".", "components/podmonitor", "components/image-languages")
	if len(objs.podMonitors) != 1 || len(objs.daemonSets) != 1 {
		t.Fatalf("want a PodMonitor and the DaemonSet: %+v", objs)
	}
	pm, ds := objs.podMonitors[0], objs.daemonSets[0]
	if pm.Namespace != ds.Namespace {
		t.Errorf("PodMonitor in %q, DaemonSet in %q", pm.Namespace, ds.Namespace)
	}
	for k, v := range pm.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("the PodMonitor selects %s=%s, which the daemon's pods lack", k, v)
		}
	}
	c := ds.Spec.Template.Spec.Containers[0]
	if len(pm.Spec.PodMetricsEndpoints) != 1 || pm.Spec.PodMetricsEndpoints[0].Port == nil || containerPort(c, *pm.Spec.PodMetricsEndpoints[0].Port) == 0 || pm.Spec.PodMetricsEndpoints[0].Path != "/metrics" {
		t.Errorf("PodMonitor endpoints %+v", pm.Spec.PodMetricsEndpoints)
	}
	if ro, ok := hostMounts(t, ds.Spec.Template.Spec, c)["/var/lib/containerd"]; !ok || ro {
		t.Errorf("image-languages: /var/lib/containerd mounted %v, read-only %v", ok, ro)
	}
	// The base alone has neither.
	base := render(t, ".")
	if len(base.podMonitors) != 0 {
		t.Error("the default kustomization has a PodMonitor: clusters without the Prometheus Operator would refuse it")
	}
	if _, ok := hostMounts(t, base.daemonSets[0].Spec.Template.Spec, base.daemonSets[0].Spec.Template.Spec.Containers[0])["/var/lib/containerd"]; ok {
		t.Error("the default DaemonSet mounts containerd's root")
	}
}

// settingsOf is what sandboxd makes of its ConfigMap's sandboxd.toml under
// the container's flags, as its main does: parsed by the daemon's config
// package, validated, the languages applied.
func settingsOf(t *testing.T, pod corev1.PodSpec, cm corev1.ConfigMap) config.Settings {
	t.Helper()
	c := pod.Containers[0]
	if len(c.Command) != 1 || c.Command[0] != "/opt/sandboxd/bin/sandboxd" {
		t.Fatalf("command %q", c.Command)
	}
	toml, ok := cm.Data["sandboxd.toml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no sandboxd.toml: %v", cm.Name, cm.Data)
	}
	def := config.Defaults(4)
	fs := flag.NewFlagSet("sandboxd", flag.ContinueOnError)
	configPath := fs.String("config", config.DefaultPath, "")
	config.AddFlags(fs, def)
	if err := fs.Parse(c.Args); err != nil || fs.NArg() > 0 {
		t.Fatalf("sandboxd's flags %q: %v", c.Args, err)
	}
	// The ConfigMap is mounted where --config names it.
	mounted := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.MountPath == filepath.Dir(*configPath) && slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool {
			return v.Name == m.Name && v.ConfigMap != nil && v.ConfigMap.Name == cm.Name
		})
	})
	if !mounted || filepath.Base(*configPath) != "sandboxd.toml" {
		t.Errorf("--config %s: ConfigMap %s is not mounted at its directory", *configPath, cm.Name)
	}
	file := filepath.Join(t.TempDir(), "sandboxd.toml")
	if err := os.WriteFile(file, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := config.Source{Path: file, Defaults: def, Flags: fs}.Load()
	if err != nil {
		t.Fatalf("sandboxd.toml under the DaemonSet's flags: %v", err)
	}
	if _, err := s.LanguageSpecs(daemon.Languages); err != nil {
		t.Fatalf("sandboxd.toml's languages: %v", err)
	}
	return s
}

// hostMounts maps each hostPath volume the container mounts at the same
// path as on the node to whether it is read-only; one mounted elsewhere
// fails the test.
func hostMounts(t *testing.T, pod corev1.PodSpec, c corev1.Container) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, m := range c.VolumeMounts {
		i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 {
			t.Errorf("volume mount %s has no volume", m.Name)
			continue
		}
		hp := pod.Volumes[i].HostPath
		if hp == nil {
			continue
		}
		if hp.Path != m.MountPath || m.SubPath != "" {
			t.Errorf("hostPath %s mounted at %s: sandboxd names host paths, so they must be at the same place", hp.Path, m.MountPath)
			continue
		}
		out[hp.Path] = m.ReadOnly
	}
	return out
}

// checkChosenNodes fails unless the pod goes only to nodes labelled
// sandboxd.io/sandboxes=true, and tolerates their NoSchedule taint.
func checkChosenNodes(t *testing.T, what string, pod corev1.PodSpec) {
	t.Helper()
	if pod.NodeSelector["sandboxd.io/sandboxes"] != "true" {
		t.Errorf("%s: node selector %v", what, pod.NodeSelector)
	}
	if !slices.ContainsFunc(pod.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Key == "sandboxd.io/sandboxes" && tol.Effect == corev1.TaintEffectNoSchedule
	}) {
		t.Errorf("%s: tolerations %+v", what, pod.Tolerations)
	}
}

// checkImageLayout fails unless deploy/Containerfile puts the binaries
// where the DaemonSet runs them.
func checkImageLayout(t *testing.T, c corev1.Container, ctl string) {
	t.Helper()
	cf, err := os.ReadFile("../Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(ctl)
	if filepath.Dir(c.Command[0]) != dir || !strings.Contains(string(cf), "-o /out"+dir+"/ ./cmd/sandboxd ./cmd/sandboxctl ./cmd/sandboxd-init") ||
		!strings.Contains(string(cf), "COPY --from=build /out/ /") {
		t.Errorf("deploy/Containerfile does not build sandboxd and sandboxctl into %s", dir)
	}
}

func env(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func envValues(c corev1.Container) []string {
	var out []string
	for _, e := range c.Env {
		out = append(out, e.Value)
	}
	return out
}

func containerPort(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

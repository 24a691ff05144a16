package config

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sandboxd.toml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadEveryKey(t *testing.T) {
	p := writeConfig(t, `
socket = "/run/x.sock"
socket_mode = "0600"
socket_group = "wheel"
containerd = "managed"
containerd_wait = "1m"
namespace = "sbx-test"
state_dir = "/srv/sbx"
shutdown_grace = "5s"
log_level = "debug"
log_format = "json"

[limits]
timeout = "10s"
max_timeout = "1m"
memory = "128MiB"
max_memory = "1g"
cpus = 0.5
pids = 64
tmpfs = "32m"
output = "64KiB"
max_code = "100k"
max_stdin = "200k"
max_concurrent = 3
max_queued = 5
max_concurrent_per_uid = 2

[server]
header_timeout = "5s"
body_timeout = "20s"
idle_timeout = "2m"
max_connections = 300
max_connections_per_uid = 40
root_reserve = 8
max_body_memory = "256MiB"
body_wait = "3s"

[sessions]
idle_timeout = "1m"
max_lifetime = "2h"
max_lifetime_cap = "3h"
max = 4
max_per_uid = 2
max_file = "1MiB"

[access]
allow_uids = [1000, 1001]
allow_gids = [50]

[metrics]
address = "127.0.0.1:9464"

[[languages]]
name = "ruby"
disabled = true

[[languages]]
name = "python"
env = ["X=1"]

[images]
pull = false

[runtimes.gvisor-kvm]
binary = "/usr/bin/runsc"
flags = ["--platform=kvm"]

[[languages]]
name = "awk"
extensions = [".awk"]
file_name = "main.awk"
run = ["awk", "-f", "/sandbox/main.awk"]

[[languages]]
name = "py312"
image = "python:3.12-slim"
runtime = "gvisor-kvm"
file_name = "main.py"
run = ["python3", "/sandbox/main.py"]
`)
	s, err := Load(p, Defaults(2))
	if err != nil {
		t.Fatal(err)
	}
	l := s.DaemonConfig().Limits
	if s.Socket != "/run/x.sock" || s.SocketMode != "0600" || s.SocketGroup != "wheel" || s.Containerd != "managed" ||
		time.Duration(s.ContainerdWait) != time.Minute || s.Namespace != "sbx-test" || s.StateDir != "/srv/sbx" || time.Duration(s.ShutdownGrace) != 5*time.Second ||
		s.LogLevel != "debug" || s.LogFormat != "json" || s.Metrics.Address != "127.0.0.1:9464" {
		t.Errorf("top level: %+v", s)
	}
	if l.DefaultTimeout != 10*time.Second || l.MaxTimeout != time.Minute || l.DefaultMemory != 128<<20 || l.MaxMemory != 1<<30 ||
		l.CPUs != 0.5 || l.Pids != 64 || l.TmpfsBytes != 32<<20 || l.OutputBytes != 64<<10 || l.MaxCodeBytes != 100<<10 ||
		l.MaxStdinBytes != 200<<10 || l.MaxConcurrent != 3 || l.MaxQueued != 5 || l.MaxConcurrentPerUID != 2 {
		t.Errorf("limits: %+v", l)
	}
	if l.SessionIdleTimeout != time.Minute || l.SessionMaxLifetime != 2*time.Hour || l.MaxSessionLifetime != 3*time.Hour ||
		l.MaxSessions != 4 || l.MaxSessionsPerUser != 2 || l.MaxFileBytes != 1<<20 {
		t.Errorf("sessions: %+v", l)
	}
	if sv := s.Server; time.Duration(sv.HeaderTimeout) != 5*time.Second || time.Duration(sv.IdleTimeout) != 2*time.Minute || sv.MaxBodyMemory != 256<<20 ||
		l.BodyTimeout != 20*time.Second || l.BodyWait != 3*time.Second || s.ConnLimits() != (daemon.ConnLimits{Max: 300, PerUID: 40, RootReserve: 8}) {
		t.Errorf("server: %+v %+v", sv, l)
	}
	if len(s.Access.AllowUIDs) != 2 || s.Access.AllowGIDs[0] != 50 {
		t.Errorf("access: %+v", s.Access)
	}
	if c := s.DaemonConfig(); !slices.Equal(c.Access.UIDs, []uint32{1000, 1001}) || !slices.Equal(c.Access.GIDs, []uint32{50}) ||
		c.BodyBudget != 256<<20 || c.PullImages || !slices.Equal(c.OCIRuntimes, []string{"gvisor-kvm", "runsc"}) {
		t.Errorf("the daemon's configuration: %+v", c)
	}
	specs, err := s.LanguageSpecs(daemon.Languages)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]daemon.LanguageSpec{}
	for _, l := range specs {
		names[l.Name] = l
	}
	if _, ok := names["ruby"]; ok {
		t.Error("ruby is not disabled")
	}
	if py := names["python"]; strings.Join(py.Env, " ") != "X=1" || py.FileName != "main.py" {
		t.Errorf("python override: %+v", py)
	}
	if awk := names["awk"]; awk.FileName != "main.awk" || awk.Run[0] != "awk" {
		t.Errorf("awk: %+v", awk)
	}
	if py := names["py312"]; py.Image != "python:3.12-slim" || py.Runtime != "gvisor-kvm" {
		t.Errorf("py312: %+v", py)
	}
	if rt := s.Runtimes["gvisor-kvm"]; s.Images.Pull || rt.Binary != "/usr/bin/runsc" || rt.Flags[0] != "--platform=kvm" || s.Runtimes["runsc"].Binary != "runsc" {
		t.Errorf("images and runtimes: %+v %+v", s.Images, s.Runtimes)
	}
}

// The example shipped with the units loads as it is.
func TestExampleConfigLoads(t *testing.T) {
	s, err := Load("../../systemd/sandboxd.toml.example", Defaults(2))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LanguageSpecs(daemon.Languages); err != nil {
		t.Fatal(err)
	}
}

func TestLoadErrors(t *testing.T) {
	for body, want := range map[string]string{
		"socket = \"/x\"\n[limits]\ntimout = \"1s\"\n":            ":3:1: unknown key \"limits.timout\"",
		"[limits]\ntimeout = \"soon\"\n":                          "not a duration",
		"[limits]\nmemory = \"lots\"\n":                           "not a size",
		"[limits]\ntimeout = \"10m\"\n":                           "at most limits.max_timeout",
		"[[languages]]\nname = \"new\"\n":                         "needs file_name and run",
		"log_format = \"xml\"\n":                                  "log_format",
		"[limits]\nmax_concurrent = 0\n":                          "max_concurrent",
		"[sessions]\nidle_timeout = \"100h\"\n":                   "max_lifetime_cap",
		"[[languages]]\nname = \"python\"\nruntime = \"kata\"\n":  "neither runc nor one of [runtimes]",
		"[[languages]]\nname = \"python\"\nimage = \"Bad Ref\"\n": "not an image reference",
		"[runtimes.runc]\nbinary = \"/bin/true\"\n":               "not runc",
		"[runtimes.x]\nflags = [\"-v\"]\n":                        "binary is required",
		"[server]\nbody_timeout = \"0s\"\n":                       "must be positive",
		"[server]\nmax_connections = 8\nroot_reserve = 8\n":       "root_reserve",
		"[server]\nmax_connections_per_uid = -1\n":                "max_connections_per_uid",
		"[server]\nmax_body_memory = \"64k\"\n":                   "at least 1MiB",
		"namespace = \"k8s.io\"\n":                                "namespace \"k8s.io\" is Kubernetes'",
		"namespace = \"moby\"\n":                                  "one of its own",
	} {
		s, err := Load(writeConfig(t, body), Defaults(2))
		if err == nil {
			_, err = s.LanguageSpecs(daemon.Languages)
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", body, err, want)
		}
	}
	s, err := Load(filepath.Join(t.TempDir(), "missing.toml"), Defaults(2))
	if err != nil || s.Socket != Defaults(2).Socket {
		t.Errorf("a missing file: %v", err)
	}
}

func TestSettingsRoundTrip(t *testing.T) {
	out, err := Defaults(2).Encode()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Load(writeConfig(t, string(out)), Settings{})
	if err != nil {
		t.Fatalf("the printed defaults do not load back: %v\n%s", err, out)
	}
	if s.DaemonConfig().Limits != Defaults(2).DaemonConfig().Limits {
		t.Errorf("round trip changed the limits")
	}
}

// Flags override the file, and only the flags given do: a flag's default
// is not a setting.
func TestSourceFlagsOverTheFile(t *testing.T) {
	p := writeConfig(t, "namespace = \"from-file\"\n[limits]\nmax_concurrent = 3\nmax_queued = 1\n")
	def := Defaults(2)
	fs := flag.NewFlagSet("sandboxd", flag.ContinueOnError)
	AddFlags(fs, def)
	if got := fs.Lookup("max-concurrent").DefValue; got != "4" {
		t.Errorf("--max-concurrent shows the default %s, want the built-in 4", got)
	}
	if err := fs.Parse([]string{"--max-concurrent", "5", "--shutdown-grace", "7s", "--socket", "/run/f.sock"}); err != nil {
		t.Fatal(err)
	}
	s, err := Source{Path: p, Defaults: def, Flags: fs}.Load()
	if err != nil {
		t.Fatal(err)
	}
	if s.Limits.MaxConcurrent != 5 || s.Limits.MaxQueued != 1 || s.Namespace != "from-file" ||
		time.Duration(s.ShutdownGrace) != 7*time.Second || s.Socket != "/run/f.sock" || s.LogLevel != def.LogLevel {
		t.Errorf("defaults < file < flags given: %+v", s)
	}

	// Every flag reaches its setting.
	fs = flag.NewFlagSet("sandboxd", flag.ContinueOnError)
	AddFlags(fs, def)
	err = fs.Parse([]string{"--socket", "/s", "--containerd", "managed", "--state-dir", "/st", "--namespace", "ns",
		"--log-level", "debug", "--log-format", "json", "--max-concurrent", "6", "--max-queued", "7",
		"--shutdown-grace", "8s", "--containerd-wait", "9s", "--metrics-address", "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	s, err = Source{Path: filepath.Join(t.TempDir(), "missing.toml"), Defaults: def, Flags: fs}.Load()
	if err != nil {
		t.Fatal(err)
	}
	if s.Socket != "/s" || s.Containerd != "managed" || s.StateDir != "/st" || s.Namespace != "ns" || s.LogLevel != "debug" ||
		s.LogFormat != "json" || s.Limits.MaxConcurrent != 6 || s.Limits.MaxQueued != 7 || time.Duration(s.ShutdownGrace) != 8*time.Second ||
		time.Duration(s.ContainerdWait) != 9*time.Second || s.Metrics.Address != "127.0.0.1:1" {
		t.Errorf("every flag: %+v", s)
	}
}

func TestRestartOnly(t *testing.T) {
	old := Defaults(2)
	s := old
	s.Limits.MaxConcurrent++
	if w := s.RestartOnly(old); len(w) != 0 {
		t.Errorf("limits apply at reload: %q", w)
	}
	s.Namespace, s.Server.IdleTimeout = "other", Duration(time.Hour)
	if w := s.RestartOnly(old); len(w) != 2 || !strings.Contains(w[0], "namespace") || !strings.Contains(w[1], "idle_timeout") {
		t.Errorf("a namespace and an idle timeout changed: %q", w)
	}
}

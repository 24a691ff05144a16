package sandboxd_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/sandboxd/sandboxd"

// TestDependencyGraph keeps the design's package graph true: the wire types
// stand alone, the CLI never links the daemon or containerd, the daemon
// never links the runtime (only the values both speak of, runtime/sandbox),
// containerd's client or the configuration file's TOML (package config
// reads it, and imports the daemon), the runtime never links the daemon,
// the agent links nothing of ours but its protocol, and the tests' fake
// runtime links only the values it speaks of (so that the daemon's own
// tests can import it).
func TestDependencyGraph(t *testing.T) {
	for _, tc := range []struct {
		pkg       string
		forbidden []string
		allowed   []string // exceptions to forbidden
		stdOnly   bool
	}{
		{pkg: "daemon/api", stdOnly: true},
		{pkg: "runtime/agentproto", stdOnly: true},
		{pkg: "runtime/sandbox", stdOnly: true},
		{pkg: "runtime/drivers", stdOnly: true},
		{pkg: "runtime/sandbox/sandboxtest", stdOnly: true, allowed: []string{module + "/runtime/sandbox", "github.com/containerd/errdefs"}},
		{pkg: "ctl/client", stdOnly: true, allowed: []string{module + "/daemon/api"}},
		{pkg: "ctl", forbidden: []string{module + "/daemon", module + "/runtime", module + "/systemd", "github.com/containerd/"}},
		{pkg: "ctl/mcp", forbidden: []string{module + "/daemon", module + "/runtime", module + "/systemd", "github.com/containerd/"}},
		{pkg: "cmd/sandboxctl", forbidden: []string{module + "/daemon", module + "/runtime", "github.com/containerd/"}},
		{pkg: "daemon", forbidden: []string{module + "/runtime", module + "/ctl", "github.com/containerd/containerd", "github.com/pelletier/go-toml"}, allowed: []string{module + "/runtime/sandbox"}},
		{pkg: "daemon/config", forbidden: []string{module + "/runtime", module + "/ctl", "github.com/containerd/containerd"}, allowed: []string{module + "/runtime/sandbox"}},
		{pkg: "runtime", forbidden: []string{module + "/daemon", module + "/ctl"}},
		{pkg: "systemd", forbidden: []string{module + "/", "github.com/containerd/", "github.com/prometheus/"}},
		{pkg: "cmd/sandboxd-init", forbidden: []string{module + "/", "github.com/"}, allowed: []string{module + "/runtime/agentproto"}},
	} {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./"+tc.pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", tc.pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			if dep == module+"/"+tc.pkg {
				continue
			}
			if tc.stdOnly && !slices.Contains(tc.allowed, dep) {
				t.Errorf("%s must import only the standard library, imports %s", tc.pkg, dep)
			}
			for _, f := range tc.forbidden {
				if dep == f || strings.HasPrefix(dep, f+"/") || (strings.HasSuffix(f, "/") && strings.HasPrefix(dep, f)) {
					if dep == module+"/daemon/api" || slices.Contains(tc.allowed, dep) {
						continue
					}
					t.Errorf("%s must not import %s", tc.pkg, dep)
				}
			}
		}
	}
}

// TestFakeRuntimeOnlyInTests keeps the tests' fake runtime out of what
// ships: no package imports it but from its tests.
func TestFakeRuntimeOnlyInTests(t *testing.T) {
	const fake = module + "/runtime/sandbox/sandboxtest"
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	listed := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, " ")
		if slices.Contains(strings.Fields(imports), fake) {
			t.Errorf("%s imports %s, which is for tests only", pkg, fake)
		}
		if pkg == fake {
			listed++
		}
	}
	if listed != 1 {
		t.Fatalf("go list ./... listed %s %d times: the check looks at the wrong packages", fake, listed)
	}
}

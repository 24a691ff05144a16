package runtime

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func testSpecConfig() SpecConfig {
	return SpecConfig{
		ID:         "sbx-test",
		RootPath:   "/var/lib/sandboxd/rootfs",
		RootMounts: []specs.Mount{{Destination: "/usr", Type: "bind", Source: "/usr", Options: []string{"rbind", "ro", "nosuid", "nodev"}}},
		FilesDir:   "/var/lib/sandboxd/sandboxes/sbx-test",
		InitArgs:   []string{InitPath},
		UID:        65534,
		GID:        65534,
		Env:        []string{"PATH=/usr/bin:/bin", "HOME=/workspace"},
		Limits:     sandbox.Limits{MemoryBytes: 256 << 20, CPUs: 1, Pids: 128, TmpfsBytes: 64 << 20, NoFile: 1024, FileSizeBytes: 64 << 20},
		SwapLimit:  true,
		CgroupNS:   true,
	}
}

// TestSpecGolden pins the whole sandbox spec; refresh with -update and read
// the diff as a security review.
func TestSpecGolden(t *testing.T) {
	s, err := GenerateSpec("sandboxd", testSpecConfig())
	if err != nil {
		t.Fatal(err)
	}
	s.Linux.Seccomp = nil // pinned by TestSeccompGolden; it varies by architecture
	got, _ := json.MarshalIndent(s, "", "  ")
	golden := filepath.Join("testdata", "spec.golden.json")
	if *update {
		if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != string(got)+"\n" {
		t.Errorf("spec differs from %s (run go test -update and review the diff):\n%s", golden, got)
	}
}

func TestSpecHardening(t *testing.T) {
	s, err := GenerateSpec("sandboxd", testSpecConfig())
	if err != nil {
		t.Fatal(err)
	}
	p := s.Process
	if p.User.UID == 0 || p.User.GID == 0 || !p.NoNewPrivileges || !s.Root.Readonly {
		t.Errorf("user %+v, no_new_privileges %v, readonly root %v", p.User, p.NoNewPrivileges, s.Root.Readonly)
	}
	c := p.Capabilities
	if len(c.Bounding)+len(c.Effective)+len(c.Permitted)+len(c.Inheritable)+len(c.Ambient) != 0 {
		t.Errorf("capabilities: %+v", c)
	}
	var types []specs.LinuxNamespaceType
	for _, ns := range s.Linux.Namespaces {
		if ns.Path != "" {
			t.Errorf("namespace %s joins %s", ns.Type, ns.Path)
		}
		types = append(types, ns.Type)
	}
	for _, want := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.NetworkNamespace, specs.MountNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.CgroupNamespace} {
		if !slices.Contains(types, want) {
			t.Errorf("no %s namespace", want)
		}
	}
	r := s.Linux.Resources
	if *r.Memory.Limit != 256<<20 || *r.Memory.Swap != *r.Memory.Limit || *r.Pids.Limit != 128 || *r.CPU.Quota != 100000 {
		t.Errorf("resources: memory %d swap %d pids %d quota %d", *r.Memory.Limit, *r.Memory.Swap, *r.Pids.Limit, *r.CPU.Quota)
	}
	for _, m := range s.Mounts {
		if m.Type == "bind" && !slices.Contains(m.Options, "ro") {
			t.Errorf("bind mount %s is writable", m.Destination)
		}
		if m.Type == "tmpfs" && !slices.ContainsFunc(m.Options, func(o string) bool { return len(o) > 5 && o[:5] == "size=" }) {
			t.Errorf("tmpfs %s has no size", m.Destination)
		}
	}
	if len(s.Linux.MaskedPaths) == 0 || len(s.Linux.ReadonlyPaths) == 0 {
		t.Error("containerd's masked and read-only paths are gone")
	}
	if s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction == specs.ActAllow {
		t.Error("seccomp is not default-deny")
	}
}

// Under gVisor, the host's pids limit leaves gVisor's own tasks room, and
// RLIMIT_NPROC holds the programs to the pids limit inside its kernel;
// gVisor's extra devices are covered. Its seccomp profile is compared with
// runc's by TestSeccompAppKernelRules.
func TestSpecForAppKernel(t *testing.T) {
	c := testSpecConfig()
	c.Limits.Pids = 77
	runc, err := GenerateSpec("sandboxd", c)
	if err != nil {
		t.Fatal(err)
	}
	c.AppKernel = true
	s, err := GenerateSpec("sandboxd", c)
	if err != nil {
		t.Fatal(err)
	}
	if *s.Linux.Resources.Pids.Limit != c.Limits.Pids*appKernelTasksPerProcess {
		t.Errorf("pids %d", *s.Linux.Resources.Pids.Limit)
	}
	nproc := func(s *specs.Spec) []specs.POSIXRlimit {
		return slices.DeleteFunc(slices.Clone(s.Process.Rlimits), func(r specs.POSIXRlimit) bool { return r.Type != "RLIMIT_NPROC" })
	}
	if got := nproc(s); len(got) != 1 || got[0].Soft != 77 || got[0].Hard != 77 {
		t.Errorf("gVisor: RLIMIT_NPROC %+v, want 77, the pids limit", got)
	}
	// Under runc every sandbox's user is the same host uid: an RLIMIT_NPROC
	// would count them all together.
	if got := nproc(runc); len(got) != 0 {
		t.Errorf("runc: RLIMIT_NPROC %+v", got)
	}
	covers := map[string]specs.Mount{}
	for _, m := range s.Mounts {
		if m.Destination == "/dev/net" || m.Destination == "/dev/fuse" {
			covers[m.Destination] = m
		}
	}
	for dest, mode := range map[string]string{"/dev/net": "mode=755", "/dev/fuse": "mode=000"} {
		if m := covers[dest]; m.Type != "tmpfs" || !slices.Contains(m.Options, "ro") || !slices.Contains(m.Options, mode) {
			t.Errorf("%s: %+v, want a read-only tmpfs, %s", dest, m, mode)
		}
	}
	for _, m := range runc.Mounts {
		if m.Destination == "/dev/net" || m.Destination == "/dev/fuse" {
			t.Errorf("runc: %+v", m)
		}
	}
}

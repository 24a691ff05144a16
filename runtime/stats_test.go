package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// The counters are read where runc puts the sandbox's cgroup: the path
// the spec names.
func TestCgroupStatsPathIsTheSpecs(t *testing.T) {
	s, err := GenerateSpec("sandboxd", testSpecConfig())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Linux.CgroupsPath, CgroupsPath("sandboxd", testSpecConfig().ID); got != want {
		t.Fatalf("spec cgroupsPath %q, stats read from %q", got, want)
	}
}

func TestReadCgroupStats(t *testing.T) {
	write := func(root string, files map[string]string) {
		for name, content := range files {
			p := filepath.Join(root, name)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	old := cgroupRoot
	defer func() { cgroupRoot = old }()

	cgroupRoot = t.TempDir()
	write(cgroupRoot, map[string]string{
		"cpuacct/ns/x/cpuacct.usage":            "1500000\n",
		"memory/ns/x/memory.usage_in_bytes":     "4096\n",
		"memory/ns/x/memory.max_usage_in_bytes": "8192\n",
		"memory/ns/x/memory.oom_control":        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
	})
	st, err := readCgroupStats(false, counterFilesOf(false, "/ns/x"), os.ReadFile)
	if err != nil || st != (sandbox.Stats{CPUNanos: 1500000, MemoryUsageBytes: 4096, MemoryPeakBytes: 8192, OOMKills: 2}) {
		t.Errorf("v1: %+v, %v", st, err)
	}

	cgroupRoot = t.TempDir()
	write(cgroupRoot, map[string]string{
		"ns/x/cpu.stat":       "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
		"ns/x/memory.current": "4096\n",
		"ns/x/memory.peak":    "8192\n",
		"ns/x/memory.events":  "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
	})
	st, err = readCgroupStats(true, counterFilesOf(true, "/ns/x"), os.ReadFile)
	if err != nil || st != (sandbox.Stats{CPUNanos: 1500000, MemoryUsageBytes: 4096, MemoryPeakBytes: 8192, OOMKills: 1}) {
		t.Errorf("v2: %+v, %v", st, err)
	}

	// Another layout: the caller must hear of it, to ask containerd.
	if _, err := readCgroupStats(true, counterFilesOf(true, "/ns/missing"), os.ReadFile); err == nil {
		t.Error("no error for a missing cgroup")
	}
}

// A sandbox's counter files, held open, read what they hold at each read;
// closed, they are read by path again.
func TestCgroupFilesReadAnew(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cpuacct.usage")
	var c cgroupFiles
	for _, want := range []string{"1500\n", "2500\n", strings.Repeat("x", 2000)} {
		if err := os.WriteFile(p, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := c.read(p); err != nil || string(got) != want {
			t.Fatalf("read %q, %v; want %q", got, err, want)
		}
	}
	if len(c.files) != 1 {
		t.Fatalf("%d files held open, want 1", len(c.files))
	}
	c.close()
	os.WriteFile(p, []byte("3500\n"), 0o644)
	if got, err := c.read(p); err != nil || string(got) != "3500\n" || c.files != nil {
		t.Fatalf("after close: read %q, %v; %d files held", got, err, len(c.files))
	}
	if _, err := c.read(p + ".missing"); err == nil {
		t.Fatal("no error for a missing file")
	}
}

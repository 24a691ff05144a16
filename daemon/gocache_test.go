package daemon

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

// fakeGo writes a go tool that builds a one-file cache, or fails.
func fakeGo(t *testing.T, ok bool) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "go")
	script := "#!/bin/sh\n[ \"$*\" = 'build std' ] || exit 3\nmkdir -p \"$GOCACHE/00\" && echo obj > \"$GOCACHE/00/a-d\"\n"
	if !ok {
		script = "#!/bin/sh\necho 'cannot build' >&2\nexit 1\n"
	}
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func goLanguage(bin string) Language {
	return Language{LanguageSpec: LanguageSpec{Name: "go", FileName: "main.go",
		Compile: []string{bin, "build", "-o", "/tmp/main", "/sandbox/main.go"}, Run: []string{"/tmp/main"},
		Env: []string{"GOCACHE=/workspace/.cache/go-build", "CGO_ENABLED=0"}}, Version: "1.26.8"}
}

func TestGoCache(t *testing.T) {
	defer syscall.Umask(syscall.Umask(0o077)) // as under the unit
	g := NewGoCache(t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	langs := []Language{goLanguage(fakeGo(t, true)), testLanguages[0]}
	if got := g.Apply(langs); !slices.EqualFunc(got, langs, func(a, b Language) bool { return slices.Equal(a.Env, b.Env) && slices.Equal(a.HostPaths, b.HostPaths) }) {
		t.Errorf("before the cache is built, languages changed: %+v", got)
	}
	if !g.Warm(context.Background(), langs) {
		t.Fatal("Warm built nothing")
	}
	got := g.Apply(langs)
	dir := g.path(langs[0])
	if !slices.Contains(got[0].Env, "GOCACHE="+dir) || slices.Contains(got[0].Env, "GOCACHE=/workspace/.cache/go-build") || !slices.Equal(got[0].HostPaths, []string{dir}) {
		t.Errorf("go after the build: env %v, host paths %v; want GOCACHE and a mount of %s", got[0].Env, got[0].HostPaths, dir)
	}
	if len(got[1].HostPaths) != 0 || slices.ContainsFunc(got[1].Env, func(kv string) bool { return kv == "GOCACHE="+dir }) {
		t.Errorf("python got the Go cache: %+v", got[1])
	}
	if g.path(got[0]) != dir {
		t.Error("the cache's name depends on the GOCACHE it sets")
	}
	// The sandbox user reads it whatever the daemon's umask.
	for p, want := range map[string]os.FileMode{dir: 0o755, filepath.Join(dir, "00"): 0o755, filepath.Join(dir, "00", "a-d"): 0o644} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v, mode %v; want %v", p, err, fi.Mode().Perm(), want)
		}
	}
	if g.Warm(context.Background(), g.Apply(langs)) {
		t.Error("Warm built a cache that was there")
	}
	if leftovers, _ := filepath.Glob(filepath.Join(g.dir, ".tmp-*")); len(leftovers) > 0 {
		t.Errorf("left behind: %v", leftovers)
	}

	// A build that fails leaves nothing, and the language as it was.
	failing := []Language{goLanguage(fakeGo(t, false))}
	if g.Warm(context.Background(), failing) {
		t.Error("a failed build reported built")
	}
	if got := g.Apply(failing); len(got[0].HostPaths) != 0 {
		t.Errorf("a failed build is used: %+v", got[0])
	}
	if leftovers, _ := filepath.Glob(filepath.Join(g.dir, ".tmp-*")); len(leftovers) > 0 {
		t.Errorf("a failed build left: %v", leftovers)
	}

	// No cache directory: nothing is built or changed.
	none := NewGoCache("", g.log)
	if none.Warm(context.Background(), langs) || len(none.Apply(langs)[0].HostPaths) != 0 {
		t.Error("an empty cache_dir still caches")
	}
}

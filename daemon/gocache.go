package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// GoCache keeps a Go build cache of the standard library, built once per
// host and toolchain and mounted read-only in sandboxes. Without it every
// Go execution compiles the standard library from nothing, which takes
// longer than an execution's default timeout under a sandbox's limits.
//
// The go tool reads a read-only cache and skips its writes: nothing a
// sandbox does can change what another one reads, so they share it. It is
// built by sandboxd itself, from the toolchain alone, before any code of a
// request is compiled with it.
type GoCache struct {
	dir string // one cache per toolchain and environment below it; "" for none
	log *slog.Logger
}

// NewGoCache returns the Go caches kept under dir (none when dir is "").
func NewGoCache(dir string, log *slog.Logger) *GoCache {
	return &GoCache{dir: dir, log: log}
}

// serves reports whether a language builds with the host's go tool.
func (g *GoCache) serves(l Language) bool {
	return g.dir != "" && l.Image == "" && l.Missing == "" && len(l.Compile) > 0 && filepath.Base(l.Compile[0]) == "go"
}

// path is where the cache of a language's toolchain and environment is,
// once built: its name depends on all that makes the cache's content.
func (g *GoCache) path(l Language) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", l.Compile[0], l.Version)
	for _, kv := range l.Env {
		if !strings.HasPrefix(kv, "GOCACHE=") {
			fmt.Fprintf(h, "%s\n", kv)
		}
	}
	return filepath.Join(g.dir, "go-build-"+hex.EncodeToString(h.Sum(nil))[:16])
}

// Apply points the Go languages whose cache is built at it: their GOCACHE
// and a read-only mount of it. The others are returned as they are.
func (g *GoCache) Apply(langs []Language) []Language {
	out := slices.Clone(langs)
	for i, l := range out {
		if !g.serves(l) {
			continue
		}
		dir := g.path(l)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		l.Env = append(slices.DeleteFunc(slices.Clone(l.Env), func(kv string) bool { return strings.HasPrefix(kv, "GOCACHE=") }), "GOCACHE="+dir)
		l.HostPaths = append(slices.Clone(l.HostPaths), dir)
		out[i] = l
	}
	return out
}

// Warm builds the caches the Go languages lack, at the lowest CPU
// priority, and reports whether it built any. Daemons of one host share
// the caches: one builds while the others wait.
func (g *GoCache) Warm(ctx context.Context, langs []Language) bool {
	built := false
	for _, l := range langs {
		if !g.serves(l) {
			continue
		}
		dir := g.path(l)
		if _, err := os.Stat(dir); err == nil {
			continue
		}
		start := time.Now()
		g.log.Info("building the Go standard library's cache", "language", l.Name, "dir", dir)
		if err := g.build(ctx, l, dir); err != nil {
			if ctx.Err() == nil {
				g.log.Warn("Go cache not built: Go programs build their standard library at every run", "language", l.Name, "err", err)
			}
			continue
		}
		g.log.Info("Go cache ready", "language", l.Name, "dir", dir, "took", time.Since(start).Round(time.Millisecond))
		built = true
	}
	return built
}

func (g *GoCache) build(ctx context.Context, l Language, dir string) error {
	if err := os.MkdirAll(g.dir, 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(g.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	for unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if _, err := os.Stat(dir); err == nil {
		return nil // another daemon built it meanwhile
	}
	// Under the lock, what a build cut short left is garbage.
	old, _ := filepath.Glob(filepath.Join(g.dir, ".tmp-*"))
	for _, o := range old {
		os.RemoveAll(o)
	}
	tmp, err := os.MkdirTemp(g.dir, ".tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cache := filepath.Join(tmp, "cache")
	env := slices.DeleteFunc(slices.Clone(l.Env), func(kv string) bool {
		return strings.HasPrefix(kv, "GOCACHE=") || strings.HasPrefix(kv, "GOPATH=") || strings.HasPrefix(kv, "HOME=")
	})
	env = append(env, "GOCACHE="+cache, "GOPATH="+filepath.Join(tmp, "gopath"), "HOME="+tmp, "TMPDIR="+tmp, "GOPROXY=off", baseEnv[0])
	args := []string{l.Compile[0], "build", "std"}
	if nice, err := exec.LookPath("nice"); err == nil {
		args = append([]string{nice, "-n", "19"}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env, cmd.Dir = env, tmp
	// A build cut short (the daemon stops) takes its compilers with it:
	// under the unit's KillMode=process they would outlive the daemon.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build std: %w: %s", err, lastLines(out, 5))
	}
	// The sandbox user reads it, whatever the daemon's umask.
	err = filepath.WalkDir(cache, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if d.IsDir() {
			mode = 0o755
		}
		return os.Chmod(p, mode)
	})
	if err != nil {
		return err
	}
	return os.Rename(cache, dir)
}

// lastLines returns the last n lines of out.
func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

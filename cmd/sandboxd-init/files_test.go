package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
)

// The file functions are tested on a root of the test's own, without
// root privileges, on both ways of resolving a path: openat2, and the walk
// used where openat2 is missing (Debian 12's gVisor). Each test plants a
// sentinel outside the root and checks it is never read nor changed.

const sentinel = "SENTINEL outside the root\n"

// layout makes a root directory and, beside it, a directory holding a
// sentinel file; it returns their paths.
func layout(t *testing.T) (dir, outside string) {
	t.Helper()
	tmp := t.TempDir()
	dir, outside = filepath.Join(tmp, "root"), filepath.Join(tmp, "outside")
	for _, d := range []string{dir, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "sentinel"), []byte(sentinel), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, outside
}

// checkOutside fails the test if the directory outside the root holds
// anything but the untouched sentinel.
func checkOutside(t *testing.T, outside string, mtime time.Time) {
	t.Helper()
	ents, err := os.ReadDir(outside)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "sentinel" {
		var names []string
		for _, e := range ents[:min(len(ents), 10)] {
			names = append(names, e.Name())
		}
		t.Errorf("the directory outside the root holds %d entries: %q…", len(ents), names)
	}
	fi, err := os.Stat(filepath.Join(outside, "sentinel"))
	data, _ := os.ReadFile(filepath.Join(outside, "sentinel"))
	if err != nil || string(data) != sentinel || !fi.ModTime().Equal(mtime) {
		t.Errorf("the sentinel was changed: %q %v", data, err)
	}
}

func mtimeOf(t *testing.T, p string) time.Time {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.ModTime()
}

// resolvers are the two ways a root resolves paths; walk is forced on a
// kernel that has openat2.
var resolvers = []struct {
	name string
	walk bool
}{{"openat2", false}, {"walk", true}}

// forEachResolver runs test once per resolver; open opens a root on dir
// with that resolver, closed at the end of the test.
func forEachResolver(t *testing.T, test func(t *testing.T, open func(dir string) *root)) {
	for _, res := range resolvers {
		t.Run(res.name, func(t *testing.T) {
			test(t, func(dir string) *root {
				t.Helper()
				r, err := openRoot(dir)
				if err != nil {
					t.Fatal(err)
				}
				if r.walk && !res.walk {
					t.Fatal("openat2 does not work on this kernel: its resolver cannot be tested here")
				}
				r.walk = res.walk
				t.Cleanup(func() { r.close() })
				return r
			})
		})
	}
}

func readAll(r *root, p string) (string, error) {
	f, err := r.openFile(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	return string(b), err
}

func TestWriteReadList(t *testing.T) {
	forEachResolver(t, func(t *testing.T, open func(string) *root) {
		dir, _ := layout(t)
		r := open(dir)
		if err := r.writeFile("a/b/c.txt", 0o640, strings.NewReader("hello, world")); err != nil {
			t.Fatal(err)
		}
		if err := r.writeFile("a/b/c.txt", 0o640, strings.NewReader("hello")); err != nil {
			t.Fatal(err)
		}
		if err := r.writeFile("top.sh", 0o755, strings.NewReader("#!/bin/sh\n")); err != nil {
			t.Fatal(err)
		}
		if got, err := readAll(r, "a/b/c.txt"); err != nil || got != "hello" {
			t.Fatalf("read back: %q %v", got, err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "a", "b", "c.txt")); err != nil || string(b) != "hello" {
			t.Fatalf("on disk: %q %v", b, err)
		}
		if fi, err := os.Stat(filepath.Join(dir, "top.sh")); err != nil || fi.Mode().Perm() != 0o755 {
			t.Fatalf("mode: %v %v", fi.Mode(), err)
		}
		var got []string
		if err := r.list(func(e entry) { got = append(got, fmt.Sprintf("%s %s %d %o", e.Path, e.Type, e.Size, e.Mode)) }); err != nil {
			t.Fatal(err)
		}
		want := []string{"a dir 0 755", "a/b dir 0 755", "a/b/c.txt file 5 640", "top.sh file 10 755"}
		if !slices.Equal(got, want) {
			t.Fatalf("list: %q, want %q", got, want)
		}
		// Not found, not a regular file, not a directory: each its exit code.
		for p, code := range map[string]string{"missing": agentproto.CodeNotFound, "a/missing": agentproto.CodeNotFound, "a": agentproto.CodeInvalid, "top.sh/x": agentproto.CodeInvalid} {
			if _, err := r.openFile(p); err == nil || errorCode(err) != code {
				t.Errorf("open %s: %v, code %q, want %q", p, err, errorCode(err), code)
			}
		}
		if err := r.writeFile("a", 0o644, strings.NewReader("x")); err == nil || errorCode(err) != agentproto.CodeInvalid {
			t.Errorf("write over a directory: %v", err)
		}
	})
}

func TestPathsRefused(t *testing.T) {
	forEachResolver(t, func(t *testing.T, open func(string) *root) {
		dir, outside := layout(t)
		mtime := mtimeOf(t, filepath.Join(outside, "sentinel"))
		r := open(dir)
		rel, _ := filepath.Rel(dir, filepath.Join(outside, "sentinel"))
		for _, p := range []string{"", ".", "..", "../x", rel, "a/../../x", "./..", "/etc/passwd", filepath.Join(outside, "sentinel"), "a\x00b"} {
			if _, err := r.openFile(p); !errors.Is(err, errInvalid) || errorCode(err) != agentproto.CodeInvalid {
				t.Errorf("open %q: %v", p, err)
			}
			if err := r.writeFile(p, 0o644, strings.NewReader("owned")); !errors.Is(err, errInvalid) {
				t.Errorf("write %q: %v", p, err)
			}
		}
		// The resolver itself refuses what is not a plain relative path,
		// whatever its callers checked before.
		os.Mkdir(filepath.Join(dir, "a"), 0o755)
		for _, p := range []string{"", ".", "a/..", "a/../b", "a//b", "a/./b", "/etc/passwd", rel, "a\x00"} {
			if fd, err := r.open(p, unix.O_RDONLY); !errors.Is(err, errInvalid) {
				unix.Close(fd)
				t.Errorf("resolve %q: %v", p, err)
			}
		}
		checkOutside(t, outside, mtime)
	})
}

func TestSymlinksRefused(t *testing.T) {
	forEachResolver(t, func(t *testing.T, open func(string) *root) {
		dir, outside := layout(t)
		mtime := mtimeOf(t, filepath.Join(outside, "sentinel"))
		os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
		os.WriteFile(filepath.Join(dir, "sub", "inner.txt"), []byte("inner"), 0o644)
		od, err := os.Open(outside)
		if err != nil {
			t.Fatal(err)
		}
		defer od.Close()
		tmpBase := filepath.Base(filepath.Dir(dir))
		links := map[string]string{
			"passwd":   "/etc/passwd",               // absolute, to a host file
			"abs":      outside,                     // absolute, to a directory outside
			"up":       "../outside",                // relative, out of the root
			"upup":     "../..",                     // relative, far out
			"chain1":   "chain2",                    // a chain that ends outside
			"chain2":   "up",                        //
			"sentinel": outside + "/sentinel",       // the last component
			"inner":    "sub",                       // relative, inside the root
			"sub/back": "../sub",                    // relative, inside, from a subdirectory
			"self":     "/proc/self/root",           // a magic link
			"fds":      "/proc/self/fd",             // through /proc/self/fd
			"dangling": "sub/nothing",               // to nothing yet
			"loop":     "loop",                      // to itself
			"sub/abs":  outside + "/sentinel",       // deeper
			"cwd":      "/proc/self/cwd/../outside", // a magic link inside the target
		}
		for name, target := range links {
			if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
		r := open(dir)
		fdPath := fmt.Sprintf("fds/%d", od.Fd())
		outsideAbs := strings.TrimPrefix(outside, "/")
		for _, p := range []string{"passwd", "abs/sentinel", "up/sentinel", "upup/" + tmpBase + "/outside/sentinel", "chain1/sentinel",
			"sentinel", "inner/inner.txt", "sub/back/inner.txt", "self/etc/passwd", "self/" + outsideAbs + "/sentinel",
			fdPath + "/sentinel", "dangling", "loop", "loop/x", "sub/abs", "cwd/sentinel"} {
			got, err := readAll(r, p)
			if !errors.Is(err, unix.ELOOP) || errorCode(err) != agentproto.CodeInvalid {
				t.Errorf("read %s: %q, %v (code %q)", p, got, err, errorCode(err))
			}
		}
		for _, p := range []string{"abs/new", "up/new", "upup/" + tmpBase + "/outside/new", "chain1/new", "sentinel", "inner/new",
			"sub/back/new", "self/" + outsideAbs + "/new", fdPath + "/new", "dangling", "loop", "sub/abs", "cwd/new", "abs/d/new", "inner/d/new"} {
			if err := r.writeFile(p, 0o644, strings.NewReader("owned")); !errors.Is(err, unix.ELOOP) || errorCode(err) != agentproto.CodeInvalid {
				t.Errorf("write %s: %v", p, err)
			}
		}
		if ents, _ := os.ReadDir(filepath.Join(dir, "sub")); len(ents) != 3 {
			t.Errorf("a file was written through a symlink inside the root: %v", ents)
		}
		if _, err := os.Lstat(filepath.Join(dir, "sub", "nothing")); err == nil {
			t.Error("a dangling symlink was written through")
		}
		checkOutside(t, outside, mtime)
		// The listing shows each symlink as one and never descends into it;
		// collect returns none of what they point to.
		types := map[string]string{}
		if err := r.list(func(e entry) { types[e.Path] = e.Type }); err != nil {
			t.Fatal(err)
		}
		for name := range links {
			if types[name] != "symlink" {
				t.Errorf("list: %s is %q", name, types[name])
			}
		}
		if len(types) != len(links)+2 {
			t.Errorf("list: %v", types)
		}
		files, err := r.collect([]string{"*", "*/*", "*/*/*", "*/*/*/*"}, 1<<20)
		if err != nil || len(files) != 1 || files[0].Path != "sub/inner.txt" || string(files[0].Data) != "inner" {
			t.Errorf("collect: %+v %v", files, err)
		}
	})
}

// TestMagicLinksInProc uses /proc/self as the root: its entries root, cwd,
// exe and fd/N are magic links, which must not be followed either.
func TestMagicLinksInProc(t *testing.T) {
	forEachResolver(t, func(t *testing.T, open func(string) *root) {
		_, outside := layout(t)
		mtime := mtimeOf(t, filepath.Join(outside, "sentinel"))
		t.Chdir(outside)
		od, err := os.Open(outside)
		if err != nil {
			t.Fatal(err)
		}
		defer od.Close()
		r := open("/proc/self")
		fd := fmt.Sprintf("fd/%d", od.Fd())
		outsideAbs := strings.TrimPrefix(outside, "/")
		for _, p := range []string{"root/etc/passwd", "root/" + outsideAbs + "/sentinel", "cwd/sentinel", fd + "/sentinel", fd, "exe",
			fmt.Sprintf("task/%d/cwd/sentinel", syscall.Gettid())} {
			got, err := readAll(r, p)
			if !errors.Is(err, unix.ELOOP) {
				t.Errorf("read %s: %q, %v", p, got, err)
			}
		}
		for _, p := range []string{"root/" + outsideAbs + "/new", "cwd/new", fd + "/new", "cwd/d/new"} {
			if err := r.writeFile(p, 0o644, strings.NewReader("owned")); !errors.Is(err, unix.ELOOP) {
				t.Errorf("write %s: %v", p, err)
			}
		}
		checkOutside(t, outside, mtime)
	})
}

// TestSwapRace swaps a directory of the root and a symlink to a directory
// outside it, atomically and without pause, while files are read, written
// and collected through the directory's path. Each attempt must work
// inside the root or fail; none may reach the sentinel.
func TestSwapRace(t *testing.T) {
	forEachResolver(t, func(t *testing.T, open func(string) *root) {
		dir, outside := layout(t)
		mtime := mtimeOf(t, filepath.Join(outside, "sentinel"))
		d, link := filepath.Join(dir, "d"), filepath.Join(dir, "link")
		os.Mkdir(d, 0o755)
		os.WriteFile(filepath.Join(d, "sentinel"), []byte("inside"), 0o644)
		if err := os.Symlink(outside, link); err != nil {
			t.Fatal(err)
		}
		r := open(dir)
		var stop atomic.Bool
		var wg sync.WaitGroup
		swapErr := make(chan error, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if err := unix.Renameat2(unix.AT_FDCWD, d, unix.AT_FDCWD, link, unix.RENAME_EXCHANGE); err != nil {
					swapErr <- err
					return
				}
			}
		}()
		var ok, failed int
		start := time.Now()
		for i := 0; ; i++ {
			if i >= 300 && ok > 0 && failed > 0 || time.Since(start) > 10*time.Second {
				break
			}
			var err error
			switch i % 4 {
			case 0:
				var got string
				if got, err = readAll(r, "d/sentinel"); err == nil && got != "inside" {
					t.Errorf("read through the swapped directory: %q", got)
				}
			case 1:
				err = r.writeFile("d/sentinel", 0o644, strings.NewReader("inside"))
			case 2:
				err = r.writeFile(fmt.Sprintf("d/sub%d/new", i), 0o644, strings.NewReader("new"))
			case 3:
				files, cerr := r.collect([]string{"d/*"}, 1<<20)
				for _, f := range files {
					if bytes.Equal(f.Data, []byte(sentinel)) {
						t.Errorf("collected the sentinel as %s", f.Path)
					}
				}
				err = cerr
			}
			if err == nil {
				ok++
			} else {
				failed++
			}
		}
		stop.Store(true)
		wg.Wait()
		select {
		case err := <-swapErr:
			t.Fatalf("swap: %v", err)
		default:
		}
		t.Logf("%d attempts worked, %d failed", ok, failed)
		if ok == 0 || failed == 0 {
			t.Errorf("the race was not exercised: %d attempts worked, %d failed", ok, failed)
		}
		checkOutside(t, outside, mtime)
	})
}

func TestCollect(t *testing.T) {
	forEachResolver(t, func(t *testing.T, open func(string) *root) {
		dir, outside := layout(t)
		mtime := mtimeOf(t, filepath.Join(outside, "sentinel"))
		os.MkdirAll(filepath.Join(dir, "out", "deep"), 0o755)
		os.WriteFile(filepath.Join(dir, "out", "a.txt"), []byte("text\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "out", "b.bin"), []byte{0xff, 0}, 0o644)
		os.WriteFile(filepath.Join(dir, "out", "deep", "c.txt"), []byte("deeper\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "other.txt"), []byte("skip"), 0o644)
		os.Symlink("/etc/passwd", filepath.Join(dir, "out", "evil"))
		os.Symlink("../..", filepath.Join(dir, "out", "up"))
		os.Symlink("deep", filepath.Join(dir, "out", "alias"))
		os.Symlink(outside, filepath.Join(dir, "out", "ext"))
		r := open(dir)
		files, err := r.collect([]string{"out/*", "out/*/*.txt", "out/up/*", "out/alias/*", "out/ext/*"}, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, f := range files {
			got = append(got, fmt.Sprintf("%s %d %q %v", f.Path, f.Size, f.Data, f.Truncated))
		}
		want := []string{`out/a.txt 5 "text\n" false`, `out/b.bin 2 "\xff\x00" false`, `out/deep/c.txt 7 "deeper\n" false`}
		if !slices.Equal(got, want) {
			t.Fatalf("collected %q, want %q", got, want)
		}
		// The cap counts content in order; what does not fit is listed.
		files, err = r.collect([]string{"out/*", "out/*/*"}, 6)
		got = got[:0]
		for _, f := range files {
			got = append(got, fmt.Sprintf("%s %d %q %v", f.Path, f.Size, f.Data, f.Truncated))
		}
		want = []string{`out/a.txt 5 "text\n" false`, `out/b.bin 2 "" true`, `out/deep/c.txt 7 "" true`}
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("collected under a cap: %q %v, want %q", got, err, want)
		}
		checkOutside(t, outside, mtime)
	})
}

// TestCollectFailsLoudly: a matched file that cannot be read is an error,
// never a file silently left out of the answer.
func TestCollectFailsLoudly(t *testing.T) {
	forEachResolver(t, func(t *testing.T, open func(string) *root) {
		dir, outside := layout(t)
		os.WriteFile(filepath.Join(dir, "ok.txt"), []byte("ok"), 0o644)
		os.Symlink(outside+"/sentinel", filepath.Join(dir, "now-a-link.txt"))
		os.Mkdir(filepath.Join(dir, "now-a-dir.txt"), 0o755)
		r := open(dir)
		// As listed before something changed them.
		for _, e := range []entry{
			{Path: "gone.txt", Type: "file", Size: 1},
			{Path: "now-a-link.txt", Type: "file", Size: 1},
			{Path: "now-a-dir.txt", Type: "file", Size: 1},
		} {
			files, err := r.read([]entry{{Path: "ok.txt", Type: "file", Size: 2}, e}, 1<<20)
			if err == nil || !strings.Contains(err.Error(), e.Path) || files != nil {
				t.Errorf("%s: %+v %v", e.Path, files, err)
			}
		}
		// A file its owner cannot read (root reads it anyway).
		os.WriteFile(filepath.Join(dir, "locked.txt"), []byte("locked"), 0o000)
		files, err := r.collect([]string{"*.txt"}, 1<<20)
		if os.Geteuid() != 0 {
			if err == nil || !errors.Is(err, unix.EACCES) || !strings.Contains(err.Error(), "locked.txt") {
				t.Errorf("collect with an unreadable file: %+v %v", files, err)
			}
		} else if err != nil || len(files) != 2 {
			t.Errorf("collect as root: %+v %v", files, err)
		}
		// A directory that cannot be listed is an error too, for the
		// listing and for collect (it may hold a matching file).
		os.Remove(filepath.Join(dir, "locked.txt"))
		os.Mkdir(filepath.Join(dir, "sealed"), 0o755)
		os.WriteFile(filepath.Join(dir, "sealed", "in.txt"), []byte("in"), 0o644)
		os.Chmod(filepath.Join(dir, "sealed"), 0o000)
		defer os.Chmod(filepath.Join(dir, "sealed"), 0o755)
		var listed []string
		listErr := r.list(func(e entry) { listed = append(listed, e.Path) })
		files, err = r.collect([]string{"*/*.txt"}, 1<<20)
		if os.Geteuid() != 0 {
			if !errors.Is(listErr, unix.EACCES) || !strings.Contains(listErr.Error(), "sealed") || !errors.Is(err, unix.EACCES) {
				t.Errorf("an unreadable directory: list %q %v, collect %+v %v", listed, listErr, files, err)
			}
		} else if listErr != nil || !slices.Contains(listed, "sealed/in.txt") || err != nil || len(files) != 1 {
			t.Errorf("an unreadable directory, as root: list %q %v, collect %+v %v", listed, listErr, files, err)
		}
	})
}

func TestErrorCodes(t *testing.T) {
	for _, c := range []struct {
		err  error
		code string
	}{
		{errInvalid, agentproto.CodeInvalid},
		{fmt.Errorf("placing x: %w", errInvalid), agentproto.CodeInvalid},
		{&os.PathError{Op: "open", Path: "x", Err: errInvalid}, agentproto.CodeInvalid},
		{&os.PathError{Op: "open", Path: "x", Err: unix.ENOENT}, agentproto.CodeNotFound},
		{&os.PathError{Op: "open", Path: "x", Err: unix.ELOOP}, agentproto.CodeInvalid},
		{&os.PathError{Op: "open", Path: "x", Err: unix.EXDEV}, agentproto.CodeInvalid},
		{&os.PathError{Op: "open", Path: "x", Err: unix.ENOTDIR}, agentproto.CodeInvalid},
		{&os.PathError{Op: "open", Path: "x", Err: unix.EACCES}, ""},
		{&os.PathError{Op: "open", Path: "x", Err: unix.ENOSYS}, ""},
		{&os.PathError{Op: "open", Path: "x", Err: unix.EPERM}, ""},
	} {
		if got := errorCode(c.err); got != c.code {
			t.Errorf("%v: %q, want %q", c.err, got, c.code)
		}
	}
}

// A run's code goes only where a jail keeps it (its /sandbox, given as
// code): placed there, confined to it like workspace files; refused when
// no such place is given (a run that is not jailed) and by the file
// operations.
func TestCodeOnlyInAJail(t *testing.T) {
	dir := t.TempDir()
	code, err := openRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer code.close()
	files := []jailFile{{Path: "x1/main.py", Mode: 0o644, Size: 8, Code: true}}
	if err := placeFrom(strings.NewReader("print(1)"), files, code); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "x1", "main.py")); err != nil || string(b) != "print(1)" {
		t.Fatalf("the code placed: %q %v", b, err)
	}
	escape := []jailFile{{Path: "../out.py", Mode: 0o644, Size: 1, Code: true}}
	if err := placeFrom(strings.NewReader("x"), escape, code); err == nil {
		t.Error("code placed outside its root")
	}
	if err := placeFrom(strings.NewReader("print(1)"), files, nil); err == nil || !errors.Is(err, errInvalid) {
		t.Errorf("code outside a jail: %v", err)
	}
	if err := place([]agentproto.File{{Path: "main.py", Data: []byte("1"), Code: true}}); err == nil || !errors.Is(err, errInvalid) {
		t.Errorf("code in a plain run: %v", err)
	}
	if err := writeFiles([]agentproto.File{{Path: "main.py", Data: []byte("1"), Code: true}}); err == nil || !errors.Is(err, errInvalid) {
		t.Errorf("code through a file operation: %v", err)
	}
}

package daemon

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// LanguageSpec is one entry of the built-in language table. In commands, a
// first word with "|" lists alternatives, the first found wins; words that
// are not absolute paths are looked up in the sandbox's PATH.
type LanguageSpec struct {
	Name       string
	Aliases    []string
	Extensions []string
	FileName   string   // the code's file, in /sandbox
	Compile    []string // optional; runs first, its failure is a compile_error
	Run        []string
	Version    []string // run on the host to learn the version
	Env        []string
	HostPaths  []string // globs of host paths the runtime needs, mounted read-only
	// Image, when set, is the OCI image the language runs from; its
	// commands are then looked up in the image's PATH, not the host's.
	Image string
	// Runtime is the OCI runtime: runc when empty, or runsc, say.
	Runtime string
	// Interpreter says sessions may run a long-lived interpreter of the
	// language (the runtime has a driver for it).
	Interpreter bool
}

// Language is a LanguageSpec whose tools were found, with absolute paths.
type Language struct {
	LanguageSpec
	Version   string
	HostPaths []string
}

// Languages is the built-in table.
var Languages = []LanguageSpec{
	{Name: "python", Aliases: []string{"py", "python3"}, Extensions: []string{".py"}, FileName: "main.py",
		Run: []string{"python3", "/sandbox/main.py"}, Version: []string{"python3", "--version"},
		Env: []string{"PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1"}, Interpreter: true},
	{Name: "javascript", Aliases: []string{"js", "node", "nodejs"}, Extensions: []string{".js", ".mjs", ".cjs"}, FileName: "main.js",
		Run: []string{"node", "/sandbox/main.js"}, Version: []string{"node", "--version"}, Interpreter: true},
	{Name: "typescript", Aliases: []string{"ts"}, Extensions: []string{".ts"}, FileName: "main.ts",
		Compile: []string{"tsc", "--outDir", "/tmp/out", "/sandbox/main.ts"},
		Run:     []string{"node", "/tmp/out/main.js"}, Version: []string{"tsc", "--version"}},
	{Name: "bash", Extensions: []string{".bash", ".sh"}, FileName: "main.sh",
		Run: []string{"bash", "/sandbox/main.sh"}, Version: []string{"bash", "--version"}},
	{Name: "sh", Aliases: []string{"dash", "posix-sh"}, FileName: "main.sh",
		Run: []string{"dash|sh", "/sandbox/main.sh"}, Version: []string{"dpkg-query", "-W", "-f=${Version}", "dash"}},
	{Name: "ruby", Aliases: []string{"rb"}, Extensions: []string{".rb"}, FileName: "main.rb",
		Run: []string{"ruby", "/sandbox/main.rb"}, Version: []string{"ruby", "--version"}},
	{Name: "perl", Aliases: []string{"pl"}, Extensions: []string{".pl"}, FileName: "main.pl",
		Run: []string{"perl", "/sandbox/main.pl"}, Version: []string{"perl", "-e", "print $^V"}},
	{Name: "php", Extensions: []string{".php"}, FileName: "main.php",
		Run: []string{"php", "/sandbox/main.php"}, Version: []string{"php", "--version"}},
	{Name: "lua", Extensions: []string{".lua"}, FileName: "main.lua",
		Run: []string{"lua|lua5.4|lua5.3|lua5.2|luajit", "/sandbox/main.lua"}, Version: []string{"lua|lua5.4|lua5.3|lua5.2|luajit", "-v"}},
	{Name: "c", Extensions: []string{".c"}, FileName: "main.c",
		Compile: []string{"gcc", "-O2", "-std=gnu17", "-o", "/tmp/main", "/sandbox/main.c", "-lm"},
		Run:     []string{"/tmp/main"}, Version: []string{"gcc", "-dumpfullversion"}},
	{Name: "cpp", Aliases: []string{"c++", "cxx"}, Extensions: []string{".cpp", ".cc", ".cxx"}, FileName: "main.cpp",
		Compile: []string{"g++", "-O2", "-std=gnu++20", "-o", "/tmp/main", "/sandbox/main.cpp"},
		Run:     []string{"/tmp/main"}, Version: []string{"g++", "-dumpfullversion"}},
	{Name: "go", Aliases: []string{"golang"}, Extensions: []string{".go"}, FileName: "main.go",
		Compile: []string{"go|/usr/local/go/bin/go|/usr/lib/go/bin/go", "build", "-o", "/tmp/main", "/sandbox/main.go"},
		Run:     []string{"/tmp/main"}, Version: []string{"go|/usr/local/go/bin/go|/usr/lib/go/bin/go", "version"},
		Env: []string{"GOCACHE=/workspace/.cache/go-build", "GOPATH=/workspace/.go", "GOTOOLCHAIN=local", "GO111MODULE=off", "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false"}},
	{Name: "rust", Aliases: []string{"rs"}, Extensions: []string{".rs"}, FileName: "main.rs",
		// rustc links with cc by default, which Debian makes a link
		// through /etc/alternatives, not in sandboxes: gcc is named.
		Compile: []string{"rustc", "-C", "linker=gcc", "-O", "-o", "/tmp/main", "/sandbox/main.rs"},
		Run:     []string{"/tmp/main"}, Version: []string{"rustc", "--version"}},
	{Name: "java", Extensions: []string{".java"}, FileName: "Main.java",
		// The source launcher compiles in memory: one JVM start, not two.
		Run:       []string{"java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "/sandbox/Main.java"},
		Version:   []string{"java", "-version"},
		HostPaths: []string{"/etc/java-*"}},
}

// sandboxPath is PATH in every sandbox; tools are looked up in it.
var sandboxPath = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// visibleInSandbox reports whether a host path is inside what the host root
// source mounts: /usr and the top-level links into it.
func visibleInSandbox(p string) bool {
	for _, top := range []string{"/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/lib32/", "/libx32/"} {
		if strings.HasPrefix(p, top) {
			return true
		}
	}
	return false
}

// lookTool finds a tool the way the sandbox will, and returns its resolved
// path, or "" when no alternative is present and visible in a sandbox.
func lookTool(word string) string {
	for _, alt := range strings.Split(word, "|") {
		cands := []string{alt}
		if !filepath.IsAbs(alt) {
			cands = cands[:0]
			for _, dir := range sandboxPath {
				cands = append(cands, filepath.Join(dir, alt))
			}
		}
		for _, c := range cands {
			real, err := filepath.EvalSymlinks(c)
			if err != nil || !visibleInSandbox(real) {
				continue
			}
			if fi, err := os.Stat(real); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				return real
			}
		}
	}
	return ""
}

// resolve replaces a command's tool by its path; programs the command
// builds itself (under /tmp) are left alone.
func resolve(cmd []string) ([]string, bool) {
	if len(cmd) == 0 {
		return nil, true
	}
	if strings.HasPrefix(cmd[0], "/tmp/") {
		return cmd, true
	}
	p := lookTool(cmd[0])
	if p == "" {
		return nil, false
	}
	return append([]string{p}, cmd[1:]...), true
}

var versionRE = regexp.MustCompile(`\d+\.\d+(\.\d+)?`)

// DetectLanguages returns the languages of specs whose tools this host has,
// sorted by name, with their versions.
func DetectLanguages(ctx context.Context, specs []LanguageSpec) []Language {
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		found []Language
	)
	for _, spec := range specs {
		if spec.Image != "" {
			mu.Lock()
			found = append(found, Language{LanguageSpec: spec, Version: imageVersion(spec.Image)})
			mu.Unlock()
			continue
		}
		compile, ok1 := resolve(spec.Compile)
		run, ok2 := resolve(spec.Run)
		if !ok1 || !ok2 {
			continue
		}
		ver, _ := resolve(spec.Version) // a language without a version is still a language
		l := Language{LanguageSpec: spec}
		l.Compile, l.Run = compile, run
		for _, g := range spec.HostPaths {
			m, _ := filepath.Glob(g)
			l.HostPaths = append(l.HostPaths, m...)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Version = toolVersion(ctx, ver)
			mu.Lock()
			found = append(found, l)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(found, func(i, j int) bool { return found[i].Name < found[j].Name })
	return found
}

// imageVersion is what an image reference says of its version: its tag,
// or its digest.
func imageVersion(ref string) string {
	if i := strings.LastIndex(ref, "@"); i >= 0 {
		return ref[i+1:]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[i+1:]
	}
	return "latest"
}

func toolVersion(ctx context.Context, cmd []string) string {
	if len(cmd) == 0 {
		return "unknown"
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, cmd[0], cmd[1:]...).CombinedOutput()
	if v := versionRE.Find(out); v != nil {
		return string(v)
	}
	return "unknown"
}

// HostPaths returns the host paths that the languages need mounted.
func HostPaths(langs []Language) []string {
	var paths []string
	for _, l := range langs {
		paths = append(paths, l.HostPaths...)
	}
	slices.Sort(paths)
	return slices.Compact(paths)
}

// findLanguage looks a name or alias up, ignoring case.
func findLanguage(langs []Language, name string) (Language, bool) {
	name = strings.ToLower(strings.TrimSpace(name))
	for _, l := range langs {
		if l.Name == name || slices.Contains(l.Aliases, name) {
			return l, true
		}
	}
	return Language{}, false
}

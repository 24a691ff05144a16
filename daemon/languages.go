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
	// Tools are more tools the language needs than its commands' first
	// words (a compiler run through sh, say): one missing, it cannot run.
	Tools     []string
	Env       []string
	HostPaths []string // globs of host paths the runtime needs, mounted read-only
	// Image, when set, is the OCI image the language runs from; its
	// commands are then looked up in the image's PATH, not the host's.
	Image string
	// Runtime is the OCI runtime: runc when empty, or runsc, say.
	Runtime string
	// Package is the Debian package that puts the language's tools on the
	// host: what to install when they are missing.
	Package string
	// Timeout and Memory are what the language's tools need where that is
	// more than the daemon's defaults (a compiler on a JVM, say): they are
	// its executions' and sessions' defaults then, never above the
	// daemon's maxima.
	Timeout time.Duration
	Memory  int64
	// Interpreter says sessions may run a long-lived interpreter of the
	// language (the runtime has a driver for it).
	Interpreter bool
}

// Language is a LanguageSpec as found on the host: with its tools' paths,
// or with the tool that is missing.
type Language struct {
	LanguageSpec
	Version   string
	HostPaths []string
	// Missing is the tool the host lacks, when it lacks one: the language
	// is listed but cannot run.
	Missing string
}

// missingReason says why a language whose tool is missing cannot run, and
// what to install.
func (l Language) missingReason() string {
	why := l.Missing + " not found on the host"
	if l.Package != "" {
		why += "; install the Debian package " + l.Package
	}
	return why
}

// withDefaults returns the daemon's limits with the language's own
// defaults where it needs more, clamped to the maxima.
func (l Language) withDefaults(lim Limits) Limits {
	if l.Timeout > lim.DefaultTimeout {
		lim.DefaultTimeout = min(l.Timeout, lim.MaxTimeout)
	}
	if l.Memory > lim.DefaultMemory {
		lim.DefaultMemory = min(l.Memory, lim.MaxMemory)
	}
	return lim
}

// Languages is the built-in table. A language runs where its tools are
// on the host; Package names the Debian package that puts them there.
// .ci/deps installs the core set (python to java, first below), which the
// integration tests run on CI; .ci/deps-languages the rest, which `make
// test-languages` runs. Tools that look for a home or a cache find
// /workspace and /tmp writable. Sandboxes lack the host's /etc: tools that
// call `java` or `cc` through /etc/alternatives are pointed at the tool,
// and languages that load a library or run a compiler through a link
// there mount it (its links, read-only), as others their configuration.
var Languages = []LanguageSpec{
	{Name: "python", Aliases: []string{"py", "python3"}, Extensions: []string{".py"}, FileName: "main.py", Package: "python3",
		Run: []string{"python3", "/sandbox/main.py"}, Version: []string{"python3", "--version"},
		// matplotlib's cache in /tmp, not the user's workspace.
		Env: []string{"PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1", "MPLCONFIGDIR=/tmp/matplotlib"}, Interpreter: true,
		// numpy (matplotlib's, in interpreter sessions) finds BLAS through
		// links in /etc/alternatives; Debian's matplotlib reads its
		// defaults from /etc.
		HostPaths: []string{"/etc/alternatives", "/etc/matplotlibrc"}},
	{Name: "javascript", Aliases: []string{"js", "node", "nodejs"}, Extensions: []string{".js", ".mjs", ".cjs"}, FileName: "main.js", Package: "nodejs",
		Run: []string{"node", "/sandbox/main.js"}, Version: []string{"node", "--version"}, Interpreter: true},
	{Name: "typescript", Aliases: []string{"ts"}, Extensions: []string{".ts"}, FileName: "main.ts", Package: "node-typescript",
		// tsc writes its diagnostics to stdout: sent to stderr.
		Compile: []string{"sh", "-c", `exec tsc --outDir /tmp/out "$0" >&2`, "/sandbox/main.ts"}, Tools: []string{"tsc"},
		Run: []string{"node", "/tmp/out/main.js"}, Version: []string{"tsc", "--version"},
		Timeout: 60 * time.Second},
	{Name: "bash", Extensions: []string{".bash", ".sh"}, FileName: "main.sh", Package: "bash",
		Run: []string{"bash", "/sandbox/main.sh"}, Version: []string{"bash", "--version"}},
	{Name: "sh", Aliases: []string{"dash", "posix-sh"}, FileName: "main.sh", Package: "dash",
		Run: []string{"dash|sh", "/sandbox/main.sh"}, Version: []string{"dpkg-query", "-W", "-f=${Version}", "dash"}},
	{Name: "ruby", Aliases: []string{"rb"}, Extensions: []string{".rb"}, FileName: "main.rb", Package: "ruby",
		Run: []string{"ruby", "/sandbox/main.rb"}, Version: []string{"ruby", "--version"}},
	{Name: "perl", Aliases: []string{"pl"}, Extensions: []string{".pl"}, FileName: "main.pl", Package: "perl",
		Run: []string{"perl", "/sandbox/main.pl"}, Version: []string{"perl", "-e", "print $^V"}},
	{Name: "php", Extensions: []string{".php"}, FileName: "main.php", Package: "php-cli",
		Run: []string{"php", "/sandbox/main.php"}, Version: []string{"php", "--version"}},
	{Name: "lua", Extensions: []string{".lua"}, FileName: "main.lua", Package: "lua5.4",
		Run: []string{"lua|lua5.4|lua5.3|lua5.2|luajit", "/sandbox/main.lua"}, Version: []string{"lua|lua5.4|lua5.3|lua5.2|luajit", "-v"}},
	{Name: "c", Extensions: []string{".c"}, FileName: "main.c", Package: "gcc",
		Compile: []string{"gcc", "-O2", "-std=gnu17", "-o", "/tmp/main", "/sandbox/main.c", "-lm"},
		Run:     []string{"/tmp/main"}, Version: []string{"gcc", "-dumpfullversion"}},
	{Name: "cpp", Aliases: []string{"c++", "cxx"}, Extensions: []string{".cpp", ".cc", ".cxx"}, FileName: "main.cpp", Package: "g++",
		Compile: []string{"g++", "-O2", "-std=gnu++20", "-o", "/tmp/main", "/sandbox/main.cpp"},
		Run:     []string{"/tmp/main"}, Version: []string{"g++", "-dumpfullversion"}},
	{Name: "go", Aliases: []string{"golang"}, Extensions: []string{".go"}, FileName: "main.go", Package: "golang-go",
		Compile: []string{"go|/usr/local/go/bin/go|/usr/lib/go/bin/go", "build", "-o", "/tmp/main", "/sandbox/main.go"},
		Run:     []string{"/tmp/main"}, Version: []string{"go|/usr/local/go/bin/go|/usr/lib/go/bin/go", "version"},
		Env: []string{"GOCACHE=/workspace/.cache/go-build", "GOPATH=/workspace/.go", "GOTOOLCHAIN=local", "GO111MODULE=off", "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false"}},
	{Name: "rust", Aliases: []string{"rs"}, Extensions: []string{".rs"}, FileName: "main.rs", Package: "rustc",
		// rustc links with cc by default, which Debian makes a link
		// through /etc/alternatives, not in sandboxes: gcc is named.
		Compile: []string{"rustc", "-C", "linker=gcc", "-O", "-o", "/tmp/main", "/sandbox/main.rs"},
		Run:     []string{"/tmp/main"}, Version: []string{"rustc", "--version"}},
	{Name: "java", Extensions: []string{".java"}, FileName: "Main.java", Package: "default-jdk-headless",
		// The source launcher compiles in memory: one JVM start, not two.
		Run:       []string{"java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "/sandbox/Main.java"},
		Version:   []string{"java", "-version"},
		HostPaths: []string{"/etc/java-*"}},

	// Beyond the core set.
	{Name: "ada", Aliases: []string{"gnat"}, Extensions: []string{".adb"}, FileName: "main.adb", Package: "gnat",
		// gnatmake writes its objects in the current directory: /tmp.
		Compile: []string{"gnatmake", "-q", "-D", "/tmp", "-o", "/tmp/main", "/sandbox/main.adb"},
		Run:     []string{"/tmp/main"}, Version: []string{"gnatmake", "--version"}},
	{Name: "awk", Aliases: []string{"gawk"}, Extensions: []string{".awk"}, FileName: "main.awk", Package: "gawk",
		Run: []string{"gawk", "-f", "/sandbox/main.awk"}, Version: []string{"gawk", "--version"}},
	{Name: "clojure", Aliases: []string{"clj"}, Extensions: []string{".clj"}, FileName: "main.clj", Package: "clojure",
		// Debian's clojure script calls java through /etc/alternatives,
		// which sandboxes lack: its command, with java found here.
		Run:   []string{"java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", "/usr/share/java/clojure.jar", "clojure.main", "/sandbox/main.clj"},
		Tools: []string{"clojure"}, Version: []string{"dpkg-query", "-W", "-f=${Version}", "clojure"},
		HostPaths: []string{"/etc/java-*"}},
	{Name: "cobol", Aliases: []string{"cob", "gnucobol"}, Extensions: []string{".cob", ".cbl"}, FileName: "main.cob", Package: "gnucobol3",
		Compile: []string{"cobc", "-x", "-free", "-o", "/tmp/main", "/sandbox/main.cob"},
		Run:     []string{"/tmp/main"}, Version: []string{"cobc", "--version"},
		Env:       []string{"COB_CC=gcc"},
		HostPaths: []string{"/etc/gnucobol"}},
	{Name: "coffeescript", Aliases: []string{"coffee"}, Extensions: []string{".coffee"}, FileName: "main.coffee", Package: "coffeescript",
		Run: []string{"coffee", "/sandbox/main.coffee"}, Version: []string{"coffee", "--version"}},
	{Name: "commonlisp", Aliases: []string{"lisp", "sbcl", "cl"}, Extensions: []string{".lisp", ".cl"}, FileName: "main.lisp", Package: "sbcl",
		Run: []string{"sbcl", "--script", "/sandbox/main.lisp"}, Version: []string{"sbcl", "--version"}},
	{Name: "crystal", Aliases: []string{"cr"}, Extensions: []string{".cr"}, FileName: "main.cr", Package: "crystal",
		Compile: []string{"crystal", "build", "--no-debug", "-o", "/tmp/main", "/sandbox/main.cr"},
		Run:     []string{"/tmp/main"}, Version: []string{"crystal", "--version"},
		Env:     []string{"CRYSTAL_CACHE_DIR=/tmp/.crystal", "CC=gcc"},
		Timeout: 60 * time.Second, Memory: 1 << 30},
	{Name: "csharp", Aliases: []string{"c#", "cs", "mono"}, Extensions: []string{".cs"}, FileName: "main.cs", Package: "mono-mcs",
		Compile: []string{"mcs", "-out:/tmp/main.exe", "/sandbox/main.cs"},
		Run:     []string{"mono", "/tmp/main.exe"}, Version: []string{"mono", "--version"},
		HostPaths: []string{"/etc/mono"}},
	{Name: "d", Aliases: []string{"dlang", "gdc"}, Extensions: []string{".d"}, FileName: "main.d", Package: "gdc",
		Compile: []string{"gdc", "-O2", "-o", "/tmp/main", "/sandbox/main.d"},
		Run:     []string{"/tmp/main"}, Version: []string{"gdc", "-dumpfullversion"}},
	{Name: "elixir", Aliases: []string{"ex", "exs"}, Extensions: []string{".exs", ".ex"}, FileName: "main.exs", Package: "elixir",
		Run: []string{"elixir", "/sandbox/main.exs"}, Version: []string{"dpkg-query", "-W", "-f=${Version}", "elixir"},
		// One scheduler of each kind: the BEAM starts threads by the
		// host's CPUs, which the sandbox's task limit counts.
		Env: []string{"ERL_FLAGS=+S 1 +SDcpu 1 +SDio 1 +A 1"}},
	{Name: "erlang", Aliases: []string{"erl", "escript"}, Extensions: []string{".erl"}, FileName: "main.erl", Package: "erlang-nox",
		Run: []string{"escript", "/sandbox/main.erl"}, Version: []string{"dpkg-query", "-W", "-f=${Version}", "erlang-base"},
		Env: []string{"ERL_FLAGS=+S 1 +SDcpu 1 +SDio 1 +A 1"}},
	{Name: "forth", Aliases: []string{"gforth"}, Extensions: []string{".fs", ".fth", ".4th"}, FileName: "main.fs", Package: "gforth",
		Run: []string{"gforth", "/sandbox/main.fs"}, Version: []string{"gforth", "--version"}},
	{Name: "fortran", Aliases: []string{"f90", "gfortran"}, Extensions: []string{".f90", ".f95", ".f03", ".f08"}, FileName: "main.f90", Package: "gfortran",
		Compile: []string{"gfortran", "-O2", "-o", "/tmp/main", "/sandbox/main.f90"},
		Run:     []string{"/tmp/main"}, Version: []string{"gfortran", "-dumpfullversion"}},
	{Name: "groovy", Extensions: []string{".groovy"}, FileName: "main.groovy", Package: "groovy",
		Run: []string{"groovy", "/sandbox/main.groovy"}, Version: []string{"dpkg-query", "-W", "-f=${Version}", "groovy"},
		Env:       []string{"JAVA_HOME=/usr/lib/jvm/default-java", "JAVA_OPTS=-XX:+UseSerialGC -XX:TieredStopAtLevel=1"},
		HostPaths: []string{"/etc/java-*", "/etc/groovy"}},
	{Name: "haskell", Aliases: []string{"hs", "ghc"}, Extensions: []string{".hs"}, FileName: "main.hs", Package: "ghc",
		Compile: []string{"ghc", "-O0", "-outputdir", "/tmp/ghc", "-o", "/tmp/main", "/sandbox/main.hs"},
		Run:     []string{"/tmp/main"}, Version: []string{"ghc", "--numeric-version"},
		HostPaths: []string{"/var/lib/ghc"}},
	{Name: "kotlin", Aliases: []string{"kt"}, Extensions: []string{".kt"}, FileName: "main.kt", Package: "kotlin",
		Compile:   []string{"kotlinc", "/sandbox/main.kt", "-include-runtime", "-nowarn", "-d", "/tmp/main.jar"},
		Run:       []string{"java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-jar", "/tmp/main.jar"},
		Version:   []string{"dpkg-query", "-W", "-f=${Version}", "kotlin"},
		Env:       []string{"JAVA_HOME=/usr/lib/jvm/default-java", "JAVA_OPTS=-Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1"},
		HostPaths: []string{"/etc/java-*"},
		Timeout:   60 * time.Second, Memory: 1 << 30},
	{Name: "nim", Extensions: []string{".nim"}, FileName: "main.nim", Package: "nim",
		// One C compiler at a time: nim starts one per host CPU, which
		// the sandbox\'s task limit counts.
		Compile: []string{"nim", "compile", "--hints:off", "--parallelBuild:1", "--nimcache:/tmp/nimcache", "-d:release", "-o:/tmp/main", "/sandbox/main.nim"},
		Run:     []string{"/tmp/main"}, Version: []string{"nim", "--version"},
		HostPaths: []string{"/etc/nim"},
		Timeout:   60 * time.Second},
	{Name: "ocaml", Aliases: []string{"ml"}, Extensions: []string{".ml"}, FileName: "main.ml", Package: "ocaml-nox",
		// ocamlopt writes its objects beside the source: it is copied.
		Compile: []string{"sh", "-c", `cp "$0" /tmp/main.ml && exec ocamlopt -o /tmp/main /tmp/main.ml`, "/sandbox/main.ml"}, Tools: []string{"ocamlopt"},
		Run: []string{"/tmp/main"}, Version: []string{"ocamlopt", "-version"}},
	{Name: "octave", Aliases: []string{"matlab"}, Extensions: []string{".m"}, FileName: "main.m", Package: "octave",
		Run:     []string{"octave-cli", "--no-gui", "--quiet", "--no-init-file", "--no-history", "/sandbox/main.m"},
		Version: []string{"octave-cli", "--version"},
		// BLAS and LAPACK are found through links in /etc/alternatives.
		HostPaths: []string{"/etc/alternatives"},
		Env:       []string{"OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1"}},
	{Name: "pascal", Aliases: []string{"fpc", "pas"}, Extensions: []string{".pas", ".pp"}, FileName: "main.pas", Package: "fp-compiler",
		// fpc writes its diagnostics to stdout: -Fe sends them to stderr. It
		// runs its compiler (ppcx64) through /etc/alternatives.
		Compile: []string{"fpc", "-O2", "-v0ew", "-Fe/dev/stderr", "-FU/tmp", "-o/tmp/main", "/sandbox/main.pas"},
		Run:     []string{"/tmp/main"}, Version: []string{"fpc", "-iV"},
		HostPaths: []string{"/etc/fpc-*.cfg", "/etc/fpc.cfg", "/etc/alternatives"}},
	{Name: "prolog", Aliases: []string{"swipl", "swi-prolog"}, Extensions: []string{".pro", ".prolog"}, FileName: "main.pl", Package: "swi-prolog-nox",
		Run: []string{"swipl", "/sandbox/main.pl"}, Version: []string{"swipl", "--version"}},
	{Name: "r", Aliases: []string{"rscript"}, Extensions: []string{".r"}, FileName: "main.R", Package: "r-base-core",
		Run: []string{"Rscript", "/sandbox/main.R"}, Version: []string{"Rscript", "--version"},
		Env: []string{"OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1"},
		// BLAS and LAPACK are found through links in /etc/alternatives.
		HostPaths: []string{"/etc/R", "/etc/alternatives"}},
	{Name: "racket", Aliases: []string{"rkt"}, Extensions: []string{".rkt"}, FileName: "main.rkt", Package: "racket",
		Run: []string{"racket", "/sandbox/main.rkt"}, Version: []string{"racket", "--version"},
		HostPaths: []string{"/etc/racket"}},
	{Name: "raku", Aliases: []string{"perl6", "rakudo"}, Extensions: []string{".raku", ".p6"}, FileName: "main.raku", Package: "rakudo",
		Run: []string{"raku", "/sandbox/main.raku"}, Version: []string{"raku", "--version"}},
	{Name: "scala", Extensions: []string{".scala"}, FileName: "main.scala", Package: "scala",
		Compile:   []string{"scalac", "-d", "/tmp", "/sandbox/main.scala"},
		Run:       []string{"scala", "-cp", "/tmp", "Main"},
		Version:   []string{"dpkg-query", "-W", "-f=${Version}", "scala"},
		Env:       []string{"JAVA_HOME=/usr/lib/jvm/default-java", "JAVA_OPTS=-Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1"},
		HostPaths: []string{"/etc/java-*"},
		Timeout:   60 * time.Second, Memory: 1 << 30},
	{Name: "scheme", Aliases: []string{"guile", "scm"}, Extensions: []string{".scm"}, FileName: "main.scm", Package: "guile-3.0",
		Run: []string{"guile", "--no-auto-compile", "/sandbox/main.scm"}, Version: []string{"guile", "--version"}},
	{Name: "tcl", Aliases: []string{"tclsh"}, Extensions: []string{".tcl"}, FileName: "main.tcl", Package: "tcl8.6",
		Run: []string{"tclsh8.6|tclsh", "/sandbox/main.tcl"}, Version: []string{"dpkg-query", "-W", "-f=${Version}", "tcl8.6"}},
	{Name: "vala", Extensions: []string{".vala"}, FileName: "main.vala", Package: "valac",
		Compile: []string{"valac", "--cc=gcc", "-d", "/tmp", "-o", "/tmp/main", "/sandbox/main.vala"},
		Run:     []string{"/tmp/main"}, Version: []string{"valac", "--version"}},
	{Name: "zsh", Extensions: []string{".zsh"}, FileName: "main.zsh", Package: "zsh",
		Run: []string{"zsh", "/sandbox/main.zsh"}, Version: []string{"zsh", "--version"}},
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
// builds itself (under /tmp) are left alone. A tool not found is named
// as missing: its first alternative's name.
func resolve(cmd []string) (_ []string, missing string) {
	if len(cmd) == 0 {
		return nil, ""
	}
	if strings.HasPrefix(cmd[0], "/tmp/") {
		return cmd, ""
	}
	p := lookTool(cmd[0])
	if p == "" {
		first, _, _ := strings.Cut(cmd[0], "|")
		return nil, filepath.Base(first)
	}
	out := append([]string{p}, cmd[1:]...)
	// A host file named in the arguments (a jar) may be a link through
	// /etc/alternatives too: it is named by its target.
	for i, a := range out[1:] {
		if strings.HasPrefix(a, "/usr/") {
			if real, err := filepath.EvalSymlinks(a); err == nil && visibleInSandbox(real) {
				out[i+1] = real
			}
		}
	}
	return out, ""
}

var versionRE = regexp.MustCompile(`\d+\.\d+(\.\d+)?`)

// DetectLanguages returns the languages of specs, sorted by name: those
// whose tools this host has with their versions, the others with the tool
// that is missing.
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
		compile, missing := resolve(spec.Compile)
		run, missingRun := resolve(spec.Run)
		if missing == "" {
			missing = missingRun
		}
		for _, t := range spec.Tools {
			if missing == "" && lookTool(t) == "" {
				_, missing = resolve([]string{t})
			}
		}
		if missing != "" {
			mu.Lock()
			found = append(found, Language{LanguageSpec: spec, Missing: missing})
			mu.Unlock()
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

// HostPaths returns the host paths that the languages that can run need
// mounted.
func HostPaths(langs []Language) []string {
	var paths []string
	for _, l := range langs {
		if l.Missing == "" {
			paths = append(paths, l.HostPaths...)
		}
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

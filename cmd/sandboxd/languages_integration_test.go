//go:build integration

package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// coreLanguages are those .ci/deps installs and every run of the suite
// tests. `make test-languages` (SANDBOXD_TEST_LANGUAGES=all, after
// .ci/deps-languages) tests every defined language.
var coreLanguages = []string{"bash", "c", "cpp", "go", "java", "javascript", "lua", "perl", "php", "python", "ruby", "rust", "sh", "typescript"}

// The same program in each language, in testdata/languages/NAME/main.*:
// it reads a line of stdin, prints it, its arguments, and a string that
// is not ASCII, and exits with 3. Compiled languages have a bad.* too,
// which uses nosuchthing, undefined.
const (
	languageStdin  = "Ünïcode in\n"
	languageStdout = "in: Ünïcode in\narg: one\narg: two words\nhéllo wörld ✓\n"
)

var languageArgs = []string{"one", "two words"}

// languageProgram is a language's test program: its file, and the file
// that does not compile ("" when it has none).
func languageProgram(t *testing.T, name string) (main, bad string) {
	t.Helper()
	dir := filepath.Join("testdata", "languages", name)
	m, _ := filepath.Glob(filepath.Join(dir, "main.*"))
	b, _ := filepath.Glob(filepath.Join(dir, "bad.*"))
	if len(m) != 1 {
		t.Fatalf("no test program for %s: write %s/main.*", name, dir)
	}
	if len(b) == 1 {
		bad = b[0]
	}
	return m[0], bad
}

// TestLanguages runs each language the target promises through the daemon
// and sandboxctl; one that the host cannot run fails, as any other.
func TestLanguages(t *testing.T) {
	out, errOut, code := sandboxctl(t, "", "languages", "-o", "json")
	var lr api.LanguagesResponse
	if code != 0 || json.Unmarshal([]byte(out), &lr) != nil {
		t.Fatalf("languages: exit %d %q %q", code, out, errOut)
	}
	defined := map[string]api.Language{}
	for _, l := range lr.Languages {
		defined[l.Name] = l
		// A definition comes with its test, installed here or not.
		languageProgram(t, l.Name)
	}
	want := coreLanguages
	if os.Getenv("SANDBOXD_TEST_LANGUAGES") == "all" {
		want = nil
		for name := range defined {
			want = append(want, name)
		}
		sort.Strings(want)
	}
	for _, name := range want {
		t.Run(name, func(t *testing.T) {
			l, ok := defined[name]
			switch {
			case !ok:
				t.Fatalf("%s is not defined", name)
			case !l.Available:
				t.Fatalf("%s cannot run here: %s", name, l.Unavailable)
			}
			if name == "go" {
				waitForGoCache(t)
			}
			main, bad := languageProgram(t, name)
			start := time.Now()
			out, errOut, code := sandboxctl(t, "", append([]string{"execute", "-l", name, "-c", main, "-i", languageStdin}, languageArgs...)...)
			if code != 3 || out != languageStdout {
				t.Errorf("%s: exit %d, want 3\nstdout %q\nwant   %q\nstderr %q", name, code, out, languageStdout, errOut)
			}
			t.Logf("%s %s: %v", name, l.Version, time.Since(start).Round(time.Millisecond))
			if bad == "" {
				return
			}
			// What the compiler says reaches the user as stderr.
			res, code := ctlJSON(t, "-l", name, "-c", bad)
			wantStatus := api.StatusFailed // checked as the program runs (java's source launcher)
			if l.Compiled {
				wantStatus = api.StatusCompileError
			}
			if res.Status != wantStatus || code == 0 || !strings.Contains(strings.ToLower(res.Stderr), "nosuchthing") {
				t.Errorf("%s, code that does not compile: status %s, exit %d, want %s\nstdout %q\nstderr %q", name, res.Status, code, wantStatus, res.Stdout, res.Stderr)
			}
		})
	}
}

// waitForGoCache waits until the suite's daemon has built Go's standard
// library cache, if it had to: until then a Go build compiles the
// standard library, which takes more than the daemon's default limits.
func waitForGoCache(t *testing.T) {
	t.Helper()
	if !strings.Contains(mainDaemon.logged(), "building the Go standard library's cache") {
		return // it was built before the daemon started
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		log := mainDaemon.logged()
		switch {
		case strings.Contains(log, "Go cache ready"):
			return
		case strings.Contains(log, "Go cache not built"):
			t.Fatalf("the daemon could not build Go's cache:\n%s", log)
		case time.Now().After(deadline):
			t.Fatal("the daemon's Go cache is not built after 10 minutes")
		}
		time.Sleep(time.Second)
	}
}

// A language whose tool the host lacks is listed with the tool and the
// package that provides it, and executing it says so; an unknown one is
// another error.
func TestLanguagesUnavailable(t *testing.T) {
	d := startDaemon(t, daemonOpts{config: `
[[languages]]
name = "kotlin"
compile = ["sandboxd-no-kotlinc", "/sandbox/main.kt"]

[[languages]]
name = "mine"
file_name = "main.mine"
run = ["sandboxd-no-mine", "/sandbox/main.mine"]
`})
	ctl := cli{sock: d.sock}
	out, errOut, code := ctl.run(t, "languages", "-o", "json")
	var lr api.LanguagesResponse
	if code != 0 || json.Unmarshal([]byte(out), &lr) != nil {
		t.Fatalf("languages: exit %d %q %q", code, out, errOut)
	}
	got := map[string]api.Language{}
	for _, l := range lr.Languages {
		got[l.Name] = l
	}
	if l := got["python"]; !l.Available || l.Unavailable != "" {
		t.Errorf("python: %+v", l)
	}
	if l := got["kotlin"]; l.Available || l.Missing != "sandboxd-no-kotlinc" || l.Package != "kotlin" ||
		l.Unavailable != "sandboxd-no-kotlinc not found on the host; install the Debian package kotlin" {
		t.Errorf("kotlin: %+v", l)
	}
	if l := got["mine"]; l.Available || l.Missing != "sandboxd-no-mine" || l.Package != "" || l.Unavailable != "sandboxd-no-mine not found on the host" {
		t.Errorf("mine: %+v", l)
	}
	out, _, code = ctl.run(t, "languages")
	if code != 0 || !strings.Contains(out, "kotlin (not installed)") ||
		!strings.Contains(out, "kotlin is not installed: sandboxd-no-kotlinc not found on the host; install the Debian package kotlin") {
		t.Errorf("languages: exit %d\n%s", code, out)
	}

	// Refused at once, with what to install: by the CLI, the API and
	// for a session; distinct from a language nobody defined.
	_, errOut, code = ctl.run(t, "execute", "-l", "kt", "-c", "fun main() {}")
	if code != 125 || !strings.Contains(errOut, "language kotlin is unavailable") || !strings.Contains(errOut, "install the Debian package kotlin") {
		t.Errorf("execute: exit %d, %q", code, errOut)
	}
	status, body := request(d.sock, "POST", "/v1/execute", `{"language":"kotlin","code":"fun main() {}"}`, nil)
	wantError(t, "execute", status, body, 503, api.CodeUnavailable, "install the Debian package kotlin")
	status, body = request(d.sock, "POST", "/v1/sessions", `{"language":"mine"}`, nil)
	wantError(t, "session", status, body, 503, api.CodeUnavailable, "language mine is unavailable: sandboxd-no-mine not found on the host")
	status, body = request(d.sock, "POST", "/v1/execute", `{"language":"nosuchlanguage","code":"x"}`, nil)
	wantError(t, "unknown language", status, body, 400, api.CodeInvalidArgument, "unknown language")
	if strings.Contains(string(body), "kotlin") {
		t.Errorf("the unknown language's error lists an unavailable language: %s", body)
	}
	// The others run as ever.
	if out, errOut, code := ctl.run(t, "execute", "-l", "python", "-c", "print(6*7)"); code != 0 || out != "42\n" {
		t.Errorf("python: exit %d %q %q", code, out, errOut)
	}
	if !slices.ContainsFunc(lr.Languages, func(l api.Language) bool { return l.Name == "kotlin" && l.Compiled }) {
		t.Error("kotlin is not listed as compiled")
	}
}

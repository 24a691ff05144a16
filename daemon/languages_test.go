package daemon

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
	"github.com/sandboxd/sandboxd/runtime/sandbox/sandboxtest"
)

// The built-in table: each language can be named, found by its
// extension, and installed.
func TestBuiltinLanguages(t *testing.T) {
	names := map[string]string{}
	exts := map[string]string{}
	for _, l := range Languages {
		if l.FileName == "" || len(l.Run) == 0 || len(l.Version) == 0 {
			t.Errorf("%s: file name, run and version are required", l.Name)
		}
		if l.Package == "" {
			t.Errorf("%s: no Debian package: an unavailable language must say what to install", l.Name)
		}
		for _, n := range append([]string{l.Name}, l.Aliases...) {
			if n != strings.ToLower(n) {
				t.Errorf("%s: name %q is not lower case: names are looked up lower-cased", l.Name, n)
			}
			if other, dup := names[n]; dup {
				t.Errorf("name %q is both %s's and %s's", n, other, l.Name)
			}
			names[n] = l.Name
		}
		for _, e := range l.Extensions {
			if e != strings.ToLower(e) || !strings.HasPrefix(e, ".") {
				t.Errorf("%s: extension %q: extensions are matched as .lower-case", l.Name, e)
			}
			if other, dup := exts[e]; dup {
				t.Errorf("extension %q is both %s's and %s's", e, other, l.Name)
			}
			exts[e] = l.Name
		}
	}
}

// A language whose tool the host lacks is kept, with the tool named; one
// whose tools are there is resolved.
func TestDetectLanguagesNamesTheMissingTool(t *testing.T) {
	specs := []LanguageSpec{
		{Name: "here", FileName: "m", Run: []string{"sh", "/sandbox/m"}, HostPaths: []string{"/etc/hostname"}},
		{Name: "gone", FileName: "m", Package: "gone-pkg", Run: []string{"sandboxd-no-such-tool|/usr/bin/sandboxd-nor-this", "/sandbox/m"}, HostPaths: []string{"/etc/hostname"}},
		{Name: "gonec", FileName: "m", Compile: []string{"sandboxd-no-cc", "m"}, Run: []string{"/tmp/main"}},
		{Name: "goneviash", FileName: "m", Compile: []string{"sh", "-c", "sandboxd-no-such-tool"}, Tools: []string{"sandboxd-no-such-tool"}, Run: []string{"/tmp/main"}},
	}
	langs := DetectLanguages(context.Background(), specs)
	got := map[string]Language{}
	for _, l := range langs {
		got[l.Name] = l
	}
	if len(got) != len(specs) {
		t.Fatalf("got %d languages, want all %d: %+v", len(got), len(specs), langs)
	}
	if l := got["here"]; l.Missing != "" || !strings.HasPrefix(l.Run[0], "/usr/") {
		t.Errorf("here: missing %q, run %q", l.Missing, l.Run)
	}
	for name, tool := range map[string]string{"gone": "sandboxd-no-such-tool", "gonec": "sandboxd-no-cc", "goneviash": "sandboxd-no-such-tool"} {
		if got[name].Missing != tool {
			t.Errorf("%s: missing %q, want %q", name, got[name].Missing, tool)
		}
	}
	if why := got["gone"].missingReason(); why != "sandboxd-no-such-tool not found on the host; install the Debian package gone-pkg" {
		t.Errorf("reason %q", why)
	}
	// Only the host paths of languages that can run are mounted.
	if hp := HostPaths(langs); !slices.Equal(hp, []string{"/etc/hostname"}) {
		t.Errorf("host paths %q", hp)
	}
}

// missingKotlin is a language defined but whose compiler the host lacks.
var missingKotlin = Language{LanguageSpec: LanguageSpec{Name: "kotlin", Aliases: []string{"kt"}, FileName: "main.kt", Package: "kotlin",
	Compile: []string{"kotlinc", "/sandbox/main.kt"}, Run: []string{"java", "-jar", "/tmp/main.jar"}}, Missing: "kotlinc"}

func newServerWith(t *testing.T, rt *sandboxtest.Runtime, langs []Language, mod func(*Limits)) *Server {
	t.Helper()
	lim := DefaultLimits(2)
	lim.CellReuse, lim.PoolSize = 1, 0
	if mod != nil {
		mod(&lim)
	}
	return New(Config{Runtime: fakeRuntime{rt}, Languages: langs, Limits: lim, Version: "test",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

func getLanguages(t *testing.T, s *Server) map[string]api.Language {
	t.Helper()
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("GET", "/v1/languages", nil))
	var lr api.LanguagesResponse
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &lr) != nil {
		t.Fatalf("languages: %d %s", w.Code, w.Body)
	}
	got := map[string]api.Language{}
	var names []string
	for _, l := range lr.Languages {
		got[l.Name] = l
		names = append(names, l.Name)
	}
	if !slices.IsSorted(names) {
		t.Errorf("languages not sorted by name: %v", names)
	}
	return got
}

// An unavailable language is listed, says what to install, and is refused
// with that; an unknown one is still a bad request.
func TestUnavailableLanguage(t *testing.T) {
	rt := &sandboxtest.Runtime{}
	s := newServerWith(t, rt, append(slices.Clone(testLanguages), missingKotlin), nil)
	check := func(s *Server) {
		t.Helper()
		got := getLanguages(t, s)
		if l := got["python"]; !l.Available || l.Unavailable != "" || l.Missing != "" {
			t.Errorf("python: %+v", l)
		}
		l := got["kotlin"]
		if l.Available || l.Missing != "kotlinc" || l.Package != "kotlin" || !l.Compiled ||
			l.Unavailable != "kotlinc not found on the host; install the Debian package kotlin" {
			t.Errorf("kotlin: %+v", l)
		}
		for _, body := range []string{`{"language":"kotlin","code":"x"}`, `{"language":"KT","code":"x"}`} {
			w, _, e := post(t, s, body)
			if w.Code != 503 || e.Code != api.CodeUnavailable || !strings.Contains(e.Message, "language kotlin is unavailable") ||
				!strings.Contains(e.Message, "Debian package kotlin") {
				t.Errorf("%s: %d %+v", body, w.Code, e)
			}
		}
		if w, _, e := post(t, s, `{"language":"cobol","code":"x"}`); w.Code != 400 || !strings.Contains(e.Message, "unknown language") || strings.Contains(e.Message, "kotlin") {
			t.Errorf("unknown language: %d %+v (the available ones are listed, not the others)", w.Code, e)
		}
		req := httptest.NewRequest("POST", "/v1/sessions", strings.NewReader(`{"language":"kotlin"}`))
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if w.Code != 503 || !strings.Contains(w.Body.String(), "Debian package kotlin") {
			t.Errorf("session: %d %s", w.Code, w.Body)
		}
	}
	check(s)
	if n := len(rt.Created()); n != 0 {
		t.Errorf("%d sandboxes created for languages that cannot run", n)
	}
	// A reload keeps them apart too.
	s.Reload(s.limits(), append(slices.Clone(testLanguages), missingKotlin), Access{})
	check(s)
}

// A language's own limits are its defaults where the daemon's are lower,
// never above the maxima; a request's own limits win.
func TestLanguageDefaultLimits(t *testing.T) {
	heavy := Language{LanguageSpec: LanguageSpec{Name: "heavy", FileName: "m", Run: []string{"/usr/bin/true"},
		Timeout: 60 * time.Second, Memory: 1 << 30}}
	light := Language{LanguageSpec: LanguageSpec{Name: "light", FileName: "m", Run: []string{"/usr/bin/true"},
		Timeout: time.Second, Memory: 32 << 20}}
	for _, tc := range []struct {
		name          string
		mod           func(*Limits)
		req           api.ExecuteRequest
		timeout       time.Duration
		memory        int64
		listedTimeout int64
		listedMemory  int64
	}{
		{name: "the language's", req: api.ExecuteRequest{Language: "heavy"},
			timeout: time.Minute, memory: 1 << 30, listedTimeout: 60000, listedMemory: 1 << 30},
		{name: "the request's", req: api.ExecuteRequest{Language: "heavy", TimeoutMS: 5000, MemoryBytes: 64 << 20},
			timeout: 5 * time.Second, memory: 64 << 20, listedTimeout: 60000, listedMemory: 1 << 30},
		{name: "clamped to the maxima", mod: func(l *Limits) { l.MaxTimeout, l.MaxMemory = 40*time.Second, 512<<20 },
			req: api.ExecuteRequest{Language: "heavy"}, timeout: 40 * time.Second, memory: 512 << 20, listedTimeout: 40000, listedMemory: 512 << 20},
		{name: "never below the daemon's", req: api.ExecuteRequest{Language: "light"}, timeout: 30 * time.Second, memory: 256 << 20},
		{name: "the daemon's, when higher", mod: func(l *Limits) { l.DefaultTimeout, l.DefaultMemory = 90*time.Second, 2<<30 },
			req: api.ExecuteRequest{Language: "heavy"}, timeout: 90 * time.Second, memory: 2 << 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := &sandboxtest.Runtime{}
			s := newServerWith(t, rt, []Language{heavy, light}, tc.mod)
			tc.req.Code = "x"
			c, err := s.check(&tc.req, "")
			if err != nil || c.timeout != tc.timeout || c.memory != tc.memory {
				t.Errorf("timeout %v memory %d (%v), want %v %d", c.timeout, c.memory, err, tc.timeout, tc.memory)
			}
			l := getLanguages(t, s)[tc.req.Language]
			if l.TimeoutMS != tc.listedTimeout || l.MemoryBytes != tc.listedMemory {
				t.Errorf("listed timeout_ms %d memory_bytes %d, want %d %d", l.TimeoutMS, l.MemoryBytes, tc.listedTimeout, tc.listedMemory)
			}
			// The sandbox is made with the memory.
			if w, _, e := post(t, s, `{"language":"`+tc.req.Language+`","code":"x","memory_bytes":`+itoa(tc.req.MemoryBytes)+`}`); w.Code != 200 {
				t.Fatalf("execute: %d %+v", w.Code, e)
			}
			if cr := rt.Created(); len(cr) != 1 || cr[0].Limits.MemoryBytes != tc.memory {
				t.Errorf("created %+v, want memory %d", cr, tc.memory)
			}
		})
	}
	// A session's memory is the language's too.
	rt := &sandboxtest.Runtime{}
	s := newServerWith(t, rt, []Language{heavy}, nil)
	req := httptest.NewRequest("POST", "/v1/sessions", strings.NewReader(`{"language":"heavy"}`))
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	var sess api.Session
	if w.Code != 201 || json.Unmarshal(w.Body.Bytes(), &sess) != nil || sess.Limits.MemoryBytes != 1<<30 {
		t.Errorf("session: %d %s", w.Code, w.Body)
	}
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

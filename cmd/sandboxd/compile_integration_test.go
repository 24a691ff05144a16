//go:build integration

// Compiled languages: what a compile that fails tells the user, and the
// verdict when a limit, not the code, ended the compiler.
package main_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// ctlEvents runs sandboxctl -o ndjson execute with args and returns the
// events it printed, each with when it printed it, and its exit code.
func ctlEvents(t *testing.T, args ...string) ([]timedEvent, int) {
	t.Helper()
	cmd := cli{}.command(append([]string{"-o", "ndjson", "execute"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := startProc(cmd); err != nil {
		t.Fatal(err)
	}
	var events []timedEvent
	sc := bufio.NewScanner(stdout)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var ev api.StreamEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("event %q: %v", sc.Bytes(), err)
		}
		events = append(events, timedEvent{time.Since(start), ev, bytes.Clone(sc.Bytes())})
	}
	code, err := exitCode(cmd.Wait())
	if err != nil {
		t.Fatalf("sandboxctl %v: %v", args, err)
	}
	if len(events) == 0 || events[len(events)-1].ev.Type != api.EventResult {
		t.Fatalf("sandboxctl %v: exit %d, no result event; stderr %q", args, code, stderr.String())
	}
	return events, code
}

// resultOf is the result an event stream ends with.
func resultOf(t *testing.T, events []timedEvent) api.ExecuteResult {
	t.Helper()
	var res api.ExecuteResult
	if err := json.Unmarshal(events[len(events)-1].line, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// streamed is the data of the events of a type, in order.
func streamed(events []timedEvent, typ string) string {
	var b strings.Builder
	for _, e := range events {
		if e.ev.Type == typ {
			b.WriteString(e.ev.Data)
		}
	}
	return b.String()
}

// A compile error's diagnostics reach the user as a program's stderr does:
// on sandboxctl's stderr in text mode, streamed or not, and as stderr
// events in NDJSON; sandboxctl exits with the compiler's code (1 for gcc,
// g++ and go build), and the result says compile_error, phase compile.
func TestCompileErrorReachesStderr(t *testing.T) {
	waitGoCache(t)
	for _, tc := range []struct{ lang, code, diagnostic string }{
		{"c", "int main(void) { return nope; }", "undeclared"},
		{"cpp", "int main() { return nope; }", "was not declared"},
		{"go", "package main\n\nfunc main() { println(nope) }\n", "undefined: nope"},
	} {
		t.Run(tc.lang, func(t *testing.T) {
			for _, mode := range [][]string{nil, {"--no-stream"}} {
				out, errOut, code := sandboxctl(t, "", append(append([]string{"execute"}, mode...), "-l", tc.lang, "-c", tc.code)...)
				if code != 1 || out != "" || !strings.Contains(errOut, tc.diagnostic) || !strings.Contains(errOut, "nope") {
					t.Errorf("text %v: exit %d, stdout %q, stderr %q", mode, code, out, errOut)
				}
			}
			events, code := ctlEvents(t, "-l", tc.lang, "-c", tc.code)
			res := resultOf(t, events)
			stderr := streamed(events, api.EventStderr)
			if code != 1 || !strings.Contains(stderr, tc.diagnostic) || streamed(events, api.EventStdout) != "" {
				t.Errorf("ndjson: exit %d, stderr events %q, stdout events %q", code, stderr, streamed(events, api.EventStdout))
			}
			if res.Status != api.StatusCompileError || res.Phase != api.PhaseCompile || res.ExitCode != 1 || res.OOMKilled ||
				res.Stderr != stderr || res.Message != "" {
				t.Errorf("result %+v", res)
			}
		})
	}
}

// A program that got past its compile ended in phase run; so did one of a
// language that does not compile.
func TestRunPhase(t *testing.T) {
	for _, tc := range []struct{ lang, code string }{
		{"c", `#include <stdio.h>
int main(void) { puts("ran"); return 3; }`},
		{"python", "print('ran'); exit(3)"},
	} {
		res, code := ctlJSON(t, "-l", tc.lang, "-c", tc.code)
		if code != 3 || res.Status != api.StatusFailed || res.Phase != api.PhaseRun || res.Stdout != "ran\n" {
			t.Errorf("%s: exit %d, %+v", tc.lang, code, res)
		}
	}
}

// regexProgram needs more memory to compile (about 200 MiB for cc1plus
// at -O2) than its sandbox is given in TestCompileOOM.
const regexProgram = `#include <iostream>
#include <regex>
int main() { std::cout << std::regex_match("aab", std::regex("a+b")) << "\n"; }
`

// bigLiteralProgram needs about 200 MiB to compile (a slice literal of
// 200,000 elements), which the compiler allocates fast: a limit far below
// is reached at once. (A program the compiler needs just over the limit
// for, such as hello world in go at 20 MiB, can run for seconds first, the
// compiler's own text evicted and read again at every step.)
var bigLiteralProgram = "package main\n\nvar a = []int{" + strings.Repeat("1,", 200000) + "}\n\nfunc main() { println(len(a)) }\n"

// A compiler that the kernel's OOM killer ended is oom_killed, in phase
// compile, not a compile_error. Under runc, g++ itself exits 1 ("Killed
// signal terminated program cc1plus"), and so does go build when its
// compile is killed: only the sandbox's OOM kill count tells. Under
// gVisor the kernel ends the whole sandbox. The limit is one the sandbox
// starts in and the compilers do not fit in.
func TestCompileOOM(t *testing.T) {
	waitGoCache(t)
	const limit = 20 << 20
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		for _, tc := range []struct{ lang, code string }{
			{"cpp", regexProgram},
			{"go", bigLiteralProgram},
		} {
			// In a file: the go program is longer than an argument may be.
			file := filepath.Join(t.TempDir(), "main."+tc.lang)
			if err := os.WriteFile(file, []byte(tc.code), 0o644); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"-l", tc.lang, "--memory", "20m", "-c", file}, ctl...)
			res, code := ctlJSON(t, args...)
			if res.Status != api.StatusOOMKilled || !res.OOMKilled || res.Phase != api.PhaseCompile || res.Signal != "SIGKILL" ||
				res.ExitCode != 137 || res.Message != "the compiler reached the memory limit" || code != 137 {
				t.Errorf("%s: exit %d, %+v", tc.lang, code, res)
			}
			if res.Usage.MemoryPeakBytes < limit*9/10 {
				t.Errorf("%s: memory peak %d, limit %d", tc.lang, res.Usage.MemoryPeakBytes, limit)
			}
			// In text mode, sandboxd's note says what to raise.
			out, errOut, code := sandboxctl(t, "", append([]string{"execute"}, args...)...)
			if code != 137 || out != "" || !strings.HasSuffix(errOut, "sandboxctl: the compiler reached the memory limit\n") {
				t.Errorf("%s: text: exit %d, stdout %q, stderr %q", tc.lang, code, out, errOut)
			}
		}
	})
	// Given the memory, the same program compiles and runs.
	if res, code := ctlJSON(t, "-l", "cpp", "--memory", "1g", "-t", "120", "-c", regexProgram); code != 0 || res.Stdout != "1\n" || res.Phase != api.PhaseRun {
		t.Errorf("with 1 GiB: exit %d, %+v", code, res)
	}
}

// slowProgram takes g++ far longer to compile than TestCompileTimeout's
// timeout (a minute on a loaded CI machine; many seconds on any): twelve
// instantiations of the regex engine. Its warning comes first, at once.
const slowProgram = `#warning "compiling slowly"
#include <bits/stdc++.h>
template <int N> struct Traits : std::regex_traits<char> {};
template <int N> bool match(const std::string& s) {
  std::basic_regex<char, Traits<N>> r("(a|b)*c[0-9]+");
  return std::regex_match(s, r) && match<N - 1>(s);
}
template <> bool match<0>(const std::string&) { return true; }
int main() { return match<12>("abc1") ? 0 : 1; }
`

// A compile that the timeout ends is timed_out, in phase compile; and the
// compiler's diagnostics are streamed as it writes them, long before the
// compile ends.
func TestCompileTimeout(t *testing.T) {
	const timeout = 6 * time.Second
	forEachRuntime(t, func(t *testing.T, rt string, ctl []string) {
		events, code := ctlEvents(t, append([]string{"-l", "cpp", "--memory", "1g", "-t", "6", "-c", slowProgram}, ctl...)...)
		res := resultOf(t, events)
		if res.Status != api.StatusTimedOut || !res.TimedOut || res.Phase != api.PhaseCompile || res.OOMKilled ||
			res.Message != "the timeout came while compiling" || code != 124 {
			t.Errorf("exit %d, %+v", code, res)
		}
		if res.DurationMS < timeout.Milliseconds() {
			t.Errorf("ended after %dms, before its timeout", res.DurationMS)
		}
		var warned time.Duration
		for _, e := range events {
			if e.ev.Type == api.EventStderr && strings.Contains(e.ev.Data, "compiling slowly") {
				warned = e.at
				break
			}
		}
		end := events[len(events)-1].at
		// The warning comes at the compile's start, the result after the
		// timeout: sent only at the end, it would come with the result.
		if warned == 0 || end-warned < timeout/2 {
			t.Errorf("the compiler's warning came at %v, the result at %v: not streamed as written", warned, end)
		}
		t.Logf("the compiler's warning came at %v, the result at %v", warned, end)
	})
}

// A compile refused processes at the sandbox's pids limit is no
// compile_error either: it failed, in phase compile, and the message says
// why. The go command and its compiler are Go programs with threads of
// their own, which the lowest limit the daemon takes does not hold.
func TestCompilePidsLimit(t *testing.T) {
	d := startDaemon(t, daemonOpts{config: "[pool]\nsize = 0\n[limits]\npids = 8\n"})
	out, errOut, code := cli{sock: d.sock}.run(t, "-o", "json", "execute", "-l", "go", "-c", "package main\n\nfunc main() {}\n")
	var res api.ExecuteResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("exit %d, %v: %q %q", code, err, out, errOut)
	}
	if res.Status != api.StatusFailed || res.Phase != api.PhaseCompile || res.OOMKilled || res.ExitCode == 0 ||
		res.Message != "the compiler reached the sandbox's process limit" || code != res.ExitCode {
		t.Errorf("exit %d, %+v", code, res)
	}
}

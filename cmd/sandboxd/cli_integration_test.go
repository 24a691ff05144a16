//go:build integration

package main_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// TestGlobalTimeout gives the timeout before the command, as the global
// -t and --timeout, and as both that and execute's own, which wins: each
// run ends timed out well before its sleep and the daemon's default
// timeout (30 s), with execute's exit status for a timeout, 124.
func TestGlobalTimeout(t *testing.T) {
	const sleep = "import time; time.sleep(30)"
	for _, args := range [][]string{
		{"-t", "1", "execute", "-l", "python", "-c", sleep},
		{"--timeout", "1", "execute", "-l", "python", "-c", sleep},
		{"-t", "120", "execute", "-t", "1", "-l", "python", "-c", sleep},
	} {
		start := time.Now()
		out, errOut, code := sandboxctl(t, "", append([]string{"-o", "json"}, args...)...)
		took := time.Since(start)
		var res api.ExecuteResult
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.Status != api.StatusTimedOut || code != 124 {
			t.Errorf("%v: exit %d, %q, %q", args, code, out, errOut)
		}
		if took > 15*time.Second {
			t.Errorf("%v: took %v", args, took)
		}
	}
	// Only an execution has a timeout.
	if _, errOut, code := sandboxctl(t, "", "-t", "1", "languages"); code != 2 || !strings.Contains(errOut, "-t/--timeout") {
		t.Errorf("languages with -t: exit %d, %q", code, errOut)
	}
}

// TestSessionIDFlag runs in a session named by --session-id, the name the
// API gives it, as by --session.
func TestSessionIDFlag(t *testing.T) {
	id := newSession(t, "-l", "python")
	if _, errOut, code := sandboxctl(t, "", "execute", "--session-id", id, "-c", "open('kept.txt', 'w').write('kept')"); code != 0 {
		t.Fatalf("write: exit %d, %q", code, errOut)
	}
	out, errOut, code := sandboxctl(t, "", "execute", "--session", id, "-c", "print(open('kept.txt').read())")
	if code != 0 || out != "kept\n" {
		t.Fatalf("read: exit %d, %q, %q", code, out, errOut)
	}
	out, _, _ = sandboxctl(t, "", "-o", "json", "execute", "--session-id", id, "-c", "print(1)")
	var res api.ExecuteResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.SessionID != id {
		t.Fatalf("result: %v %q", err, out)
	}
}

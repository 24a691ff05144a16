package ctl_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// health answers as a probe: exit 0 when healthy; --ready fails until the
// pools are warm (this test daemon's never start); --live succeeds
// whenever the daemon answers; nobody answering fails all three.
func TestHealth(t *testing.T) {
	sock := startServer(t)
	out, errOut, code := run(t, sock, "", "health")
	if code != 0 || !strings.Contains(out, "status:") || !strings.Contains(out, "ok") || strings.Contains(out, "pool:") {
		t.Errorf("health: exit %d, %q %q", code, out, errOut)
	}
	out, _, code = run(t, sock, "", "health", "--ready")
	if code != 1 || !strings.Contains(out, "unavailable") || !strings.Contains(out, "pool:") || !strings.Contains(out, "not started") {
		t.Errorf("health --ready before the pools start: exit %d, %q", code, out)
	}
	out, _, code = run(t, sock, "", "-o", "json", "health", "--ready")
	var h api.Health
	if err := json.Unmarshal([]byte(out), &h); err != nil || code != 1 || h.Status != "unavailable" || h.Pool != "not started" {
		t.Errorf("health --ready -o json: exit %d, %q", code, out)
	}
	if _, _, code = run(t, sock, "", "health", "--live"); code != 0 {
		t.Errorf("health --live: exit %d", code)
	}
	if _, errOut, code = run(t, sock, "", "health", "--live", "--ready"); code != 2 || !strings.Contains(errOut, "give one") {
		t.Errorf("health --live --ready: exit %d, %q", code, errOut)
	}
	gone := filepath.Join(t.TempDir(), "none.sock")
	for _, args := range [][]string{{"health"}, {"health", "--ready"}, {"health", "--live"}} {
		if _, errOut, code := run(t, gone, "", args...); code != 1 || !strings.Contains(errOut, "cannot reach sandboxd") {
			t.Errorf("%v without a daemon: exit %d, %q", args, code, errOut)
		}
	}
}

// drain is root's: the daemon refuses a caller it cannot tell is root
// (this test server reads no peer credentials), and the CLI says so.
func TestDrainUsage(t *testing.T) {
	sock := startServer(t)
	if _, errOut, code := run(t, sock, "", "drain", "--timeout", "1s"); code != 1 || !strings.Contains(errOut, "drain is for root") {
		t.Errorf("drain as an unknown caller: exit %d, %q", code, errOut)
	}
	for _, args := range [][]string{{"drain", "--timeout", "-1s"}, {"drain", "--timeout", "soon"}, {"drain", "now"}, {"-t", "5", "drain"}} {
		if _, errOut, code := run(t, sock, "", args...); code != 2 {
			t.Errorf("%v: exit %d, %q", args, code, errOut)
		}
	}
	if out, _, code := run(t, sock, "", "execute", "-l", "python", "-c", "x"); code != 1 || !strings.HasPrefix(out, "code=x") {
		t.Errorf("execute after refused drains: exit %d, %q", code, out)
	}
}

//go:build integration

// Integration tests: the real sandboxd and sandboxctl binaries, a private
// containerd started here, and real containers. Run as root with
// `make integration` (or `go test -tags integration ./cmd/sandboxd/`).
package main_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The suite's shared daemon. Its queue is small so that 429 can be reached.
const (
	maxConcurrent = 4
	maxQueued     = 4
)

var (
	binDir         string // sandboxd, sandboxctl, sandboxd-init
	containerdAddr string // the suite's containerd
	socket         string // the suite's daemon's
	mainDaemon     *daemonProc
	stateDir       string // the suite's daemon's
	// suiteDir holds everything the suite makes; every test's directories
	// are in it, so that what they leave behind can be found.
	suiteDir string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "FAIL: integration tests need root (they start containerd and containers)")
		return 1
	}
	// Short paths: Unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp(suiteDir, "sbxit")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	suiteDir = dir
	// Should a test panic or the timeout strike, the reaper cleans up
	// what this function would have.
	if err := startReaper(dir); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: start the reaper:", err)
		return 1
	}
	// Let the unprivileged user of TestNotRootExitsAtOnce reach the binary.
	os.Chmod(dir, 0o755)
	binDir = filepath.Join(dir, "bin")
	if err := buildBinaries(binDir); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: build:", err)
		return 1
	}
	defer removeNewRuntimeRoots(runtimeRootsNow())
	ctd, err := startContainerd(filepath.Join(dir, "ctd"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer ctd.stop()
	containerdAddr = ctd.addr

	socket = filepath.Join(dir, "sandboxd.sock")
	stateDir = filepath.Join(dir, "state")
	d, err := launchDaemon(daemonOpts{sock: socket, state: stateDir, namespace: "sandboxd",
		args: []string{"--max-concurrent", fmt.Sprint(maxConcurrent), "--max-queued", fmt.Sprint(maxQueued)}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	mainDaemon = d
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- sandboxd log:\n%s\n", d.logged())
	}
	if err := d.stop(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: sandboxd did not stop cleanly:", err)
		code = 1
	}
	if races := racesReported(); len(races) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d data races reported by the daemons the suite ran:\n%s\n", len(races), strings.Join(races, "\n"))
		code = 1
	}
	// Every sandbox the suite ran must be gone from containerd, and so
	// must the shims of every containerd the tests started.
	if left, err := probeContainerd(containerdAddr, ""); err != nil || len(left.containers) != 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d containers left in containerd after the suite (err %v): %v\n", len(left.containers), err, left.containers)
		code = 1
	}
	// Shims exit a moment after their last task.
	var shims []byte
	waitFor(10*time.Second, func() bool {
		shims, err = exec.Command("pgrep", "-af", "containerd-shim.*"+dir+"/").Output()
		return err != nil
	})
	if len(shims) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: shims left running after the suite:\n%s", shims)
		code = 1
	}
	// Sandboxes' root views go with them, whatever the namespace.
	if left, err := probeContainerd(containerdAddr, ""); err != nil || left.views() != 0 {
		fmt.Fprintf(os.Stderr, "FAIL: %d snapshot views of sandboxes left after the suite (err %v)\n", left.views(), err)
		code = 1
	}
	// gVisor's sandbox and gofer processes name their bundle, under dir.
	if out, err := exec.Command("pgrep", "-af", "runsc.*"+dir+"/").Output(); err == nil {
		fmt.Fprintf(os.Stderr, "FAIL: gVisor processes left running after the suite:\n%s", out)
		code = 1
	}
	return code
}

// shimRuntimeRoot is where containerd's runc shim keeps runc's (and
// runsc's) state, whatever containerd's own state directory: a directory
// per containerd namespace, which outlives the namespace's containers.
const shimRuntimeRoot = "/run/containerd/runc"

// runtimeRootsNow lists the namespaces' directories under shimRuntimeRoot.
func runtimeRootsNow() map[string]bool {
	names := map[string]bool{}
	entries, _ := os.ReadDir(shimRuntimeRoot)
	for _, e := range entries {
		names[e.Name()] = true
	}
	return names
}

// removeNewRuntimeRoots removes the directories that the suite's
// namespaces left under shimRuntimeRoot, which it would otherwise fill run
// after run. Only empty ones go: what another containerd keeps there stays.
func removeNewRuntimeRoots(before map[string]bool) {
	for name := range runtimeRootsNow() {
		if !before[name] {
			os.Remove(filepath.Join(shimRuntimeRoot, name))
		}
	}
}

// buildBinaries builds sandboxd, sandboxctl and sandboxd-init into dir,
// static; with raceDaemon, sandboxd again with -race, which needs cgo (it
// runs on the host: sandboxd-init, which runs in sandboxes that have no
// libc of ours, stays static).
func buildBinaries(dir string) error {
	build := exec.Command("go", "build", "-o", dir+"/", "../../cmd/sandboxd", "../../cmd/sandboxctl", "../../cmd/sandboxd-init")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	if !raceDaemon {
		return nil
	}
	build = exec.Command("go", "build", "-race", "-o", filepath.Join(dir, "sandboxd"), "../../cmd/sandboxd")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("sandboxd with -race: %v\n%s", err, out)
	}
	fmt.Fprintln(os.Stderr, "sandboxd is built with -race: a data race it reports fails the suite")
	return nil
}

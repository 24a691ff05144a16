package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// sigMask reads a signal mask line (SigIgn, SigBlk, ...) of
// /proc/<pid>/status.
func sigMask(t *testing.T, pid int, field string) uint64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return mask
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// A jail's init ignores the signals that would end it, and what it forks
// starts with none of them ignored: the program's signals are its own.
// Run in a child of the test, which ignores them for good. (Other signals
// may come ignored from the test's environment: GNU make ignores 32 and
// 33 in what it runs, and Go keeps 32 so.)
func TestJailInitIgnoresSignals(t *testing.T) {
	if os.Getenv("SANDBOXD_TEST_IGNORE_SIGNALS") == "1" {
		if err := ignoreSignals(jailIgnoredSignals); err != nil {
			fmt.Println("ignoreSignals:", err)
			os.Exit(1)
		}
		// The test signals it now, then says so: they must not end it.
		fmt.Println("ready")
		bufio.NewReader(os.Stdin).ReadString('\n')
		child := exec.Command("/bin/sleep", "5")
		if err := child.Start(); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		defer child.Process.Kill()
		mask := jailIgnoredMask()
		fmt.Printf("own %x child %x\n", sigMask(t, os.Getpid(), "SigIgn")&mask, sigMask(t, child.Process.Pid, "SigIgn")&mask)
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestJailInitIgnoresSignals$")
	cmd.Env = append(os.Environ(), "SANDBOXD_TEST_IGNORE_SIGNALS=1")
	signalled, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewReader(stdout)
	if ready, err := lines.ReadString('\n'); ready != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the child: %q %v", ready, err)
	}
	for _, sig := range jailIgnoredSignals {
		cmd.Process.Signal(sig)
	}
	fmt.Fprintln(signalled, "signalled")
	var out strings.Builder
	io.Copy(&out, lines)
	err = cmd.Wait()
	want := jailIgnoredMask()
	if err != nil || out.String() != fmt.Sprintf("own %x child 0\n", want) {
		t.Errorf("the child: %v, %q; want it alive, ignoring %x, and its own child ignoring none", err, out.String(), want)
	}
}

// jailIgnoredMask is jailIgnoredSignals as a mask of /proc/<pid>/status.
func jailIgnoredMask() uint64 {
	var mask uint64
	for _, sig := range jailIgnoredSignals {
		mask |= 1 << (uint(sig) - 1)
	}
	return mask
}

package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
)

// threadsChildBlocked is how many goroutines the child of
// TestReservedThreadsOutlastTaskLimit keeps in blocking system calls at
// once: more than the agent ever does.
const threadsChildBlocked = 8

// Once the agent's threads are made (boundThreads), it needs no new one,
// even with goroutines in blocking system calls, when none can be made: a
// child of the test, its task limit at zero (as a program that fills the
// sandbox's leaves it), runs such goroutines and lives. The same child
// without the threads made dies: the runtime cannot start one.
func TestReservedThreadsOutlastTaskLimit(t *testing.T) {
	if mode := os.Getenv("SANDBOXD_TEST_THREADS"); mode != "" {
		threadsChild(mode == "reserved")
		return
	}
	run := func(mode string) (string, error) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestReservedThreadsOutlastTaskLimit$")
		// The task limit of a sandbox with the default limits.
		cmd.Env = append(os.Environ(), "SANDBOXD_TEST_THREADS="+mode, agentproto.TaskLimitEnv+"=128")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("reserved")
	if err != nil || !strings.Contains(out, "no task to spare\n") || !strings.HasSuffix(out, "all returned\n") {
		t.Fatalf("with its threads made, the child: %v\n%s", err, out)
	}
	out, err = run("none")
	if err == nil || !strings.Contains(out, "no task to spare\n") || strings.Contains(out, "all returned") {
		t.Fatalf("without its threads made, the child: %v\n%s", err, out)
	}
	if !strings.Contains(out, "newosproc") && !strings.Contains(out, "pthread_create failed") {
		t.Fatalf("without its threads made, the child died otherwise than for a thread:\n%s", out)
	}
}

// threadsChild sets its task limit to zero and keeps threadsChildBlocked
// goroutines in blocking reads while the runtime schedules others, having
// made the agent's threads first if reserved. It says so as it goes; it
// exits 0 if it lives through it.
func threadsChild(reserved bool) {
	fail := func(format string, args ...any) {
		fmt.Printf(format+"\n", args...)
		os.Exit(1)
	}
	if reserved {
		boundThreads()
	} else {
		runtime.GOMAXPROCS(agentMaxProcs)
	}
	// RLIMIT_NPROC does not bind root: as root, become a user it binds.
	if os.Geteuid() == 0 {
		if err := syscall.Setuid(65534); err != nil {
			fail("setuid: %v", err)
		}
	}
	if err := unix.Setrlimit(unix.RLIMIT_NPROC, &unix.Rlimit{}); err != nil {
		fail("setrlimit: %v", err)
	}
	// The limit holds: no task can be made.
	if err := exec.Command("/bin/true").Run(); err == nil {
		fail("a process started under a task limit of 0")
	}
	fmt.Println("no task to spare")
	var fds [threadsChildBlocked][2]int
	var returned sync.WaitGroup
	for i := range fds {
		if err := syscall.Pipe(fds[i][:]); err != nil {
			fail("pipe: %v", err)
		}
		returned.Add(1)
		go func() {
			defer returned.Done()
			var b [1]byte
			syscall.Read(fds[i][0], b[:]) // blocks its thread until written
		}()
	}
	// Meanwhile the runtime takes the Ps from the blocked threads and runs
	// this goroutine, and the timer's, on others.
	time.Sleep(200 * time.Millisecond)
	for i := range fds {
		syscall.Write(fds[i][1], []byte{1})
	}
	returned.Wait()
	fmt.Println("all returned")
	// Not os.Exit: under -race it first calls into the race runtime
	// through cgo, which may want a thread of its own, and there is none
	// to make. The agent has no such exit.
	syscall.Exit(0)
}

// The agent makes its threads within its sandbox's task limit: a quarter
// of it at most, none when it is not known.
func TestThreadsWithin(t *testing.T) {
	for limit, want := range map[string]int{"128": agentThreads, "48": agentThreads, "32": 8, "8": 2, "3": 0, "": 0, "0": 0, "-5": 0, "x": 0} {
		if got := threadsWithin(limit); got != want {
			t.Errorf("threadsWithin(%q) = %d, want %d", limit, got, want)
		}
	}
}

package main

// Timer slack. Go's sysmon thread sleeps 20 µs at a time while a process
// starts and after any busy spell, which on a VM's timers (and Linux's
// default 50 µs slack) comes to a wakeup every ~100 µs for milliseconds:
// in a jail's init and in a cell's agent, together about 1.7 ms of CPU of
// every execution (docs/performance.md). With a slack of a millisecond
// the kernel defers those wakeups. Nothing in the agent or a jail's init
// waits on a finer timer (the agent's one timer is a 10 s stall bound);
// events wake them as before. The programs keep the slack the sandbox
// gave the agent: the kernel copies a thread's slack into what it forks,
// and exec keeps it.

import (
	"os"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// helperSlack is the timer slack of the agent's and a jail's init's
// threads, in nanoseconds.
const helperSlack = 1_000_000

// programSlackEnv passes programSlack from the agent to a jail's init,
// which starts with the agent's slack.
const programSlackEnv = "SANDBOXD_PROGRAM_TIMERSLACK_NS"

// programSlack is the timer slack a program starts with: the agent's own
// as the sandbox started it (Linux's default unless set).
var programSlack uintptr = 50_000

// raiseSlack gives every thread of the agent helperSlack (the threads Go
// starts later copy it), keeping the slack it started with for programs.
func raiseSlack() {
	if n, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0); err == nil && n > 0 {
		programSlack = uintptr(n)
	}
	syscall.AllThreadsSyscall(syscall.SYS_PRCTL, unix.PR_SET_TIMERSLACK, helperSlack, 0)
}

// jailSlack reads programSlack in a jail's init, from the agent.
func jailSlack() {
	if n, err := strconv.ParseUint(os.Getenv(programSlackEnv), 10, 64); err == nil && n > 0 {
		programSlack = uintptr(n)
	}
}

// withProgramSlack runs fork, which forks a program, on a thread whose
// slack is the program's meanwhile.
func withProgramSlack(fork func() (int, error)) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	unix.Prctl(unix.PR_SET_TIMERSLACK, programSlack, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_TIMERSLACK, helperSlack, 0, 0, 0)
	return fork()
}

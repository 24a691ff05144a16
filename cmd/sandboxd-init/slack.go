package main

// Timer slack. Go's sysmon thread sleeps 20 µs at a time while a process
// starts and after any busy spell, which with Linux's default 50 µs slack
// on a VM's timers comes to a wakeup every ~100 µs for milliseconds: in a
// jail's init, about 1 ms of CPU of every execution (docs/performance.md).
// A jail's init starts with a slack of a millisecond, so that the kernel
// defers those wakeups. Nothing in the init waits on a timer, nor on
// sysmon: one goroutine does its work, in order. (The agent keeps its
// slack: with one P, a goroutine it wakes while another blocks in a
// system call waits for sysmon to hand the P over.) The kernel copies a
// thread's slack into what it forks, and exec keeps it: the program gets
// the agent's slack back from the init.

import (
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// initSlack is a jail's init's timer slack, in nanoseconds.
const initSlack = 1_000_000

// programSlackEnv passes the agent's slack to a jail's init.
const programSlackEnv = "SANDBOXD_PROGRAM_TIMERSLACK_NS"

// agentSlack is the agent's timer slack, as the sandbox started it
// (Linux's default unless set); 0 when it could not be read.
func agentSlack() uintptr {
	n, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil || n <= 0 {
		return 0
	}
	return uintptr(n)
}

// forkWithInitSlack runs fork, which starts a jail's init, on a thread
// whose slack is initSlack meanwhile; fork is given the agent's own, for
// the init's program.
func forkWithInitSlack(fork func(programSlack uintptr) (int, error)) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	slack := agentSlack()
	if slack > 0 {
		unix.Prctl(unix.PR_SET_TIMERSLACK, initSlack, 0, 0, 0)
		defer unix.Prctl(unix.PR_SET_TIMERSLACK, slack, 0, 0, 0)
	}
	return fork(slack)
}

// programSlack is the slack a jail's program starts with: the agent's,
// from the init's environment; Linux's default when it is not there.
func programSlack() uintptr {
	if n, err := strconv.ParseUint(os.Getenv(programSlackEnv), 10, 64); err == nil && n > 0 {
		return uintptr(n)
	}
	return 50_000
}

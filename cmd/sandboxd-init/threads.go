package main

// The agent's threads. The agent shares its sandbox's task limit with the
// programs it runs: the pids cgroup under runc, RLIMIT_NPROC in gVisor's
// kernel. A program that fills that limit (a fork bomb) leaves no task to
// spare, and Go's runtime, when it needs a new thread and cannot make one,
// dies ("fatal error: newosproc"): the agent with it, and the sandbox's
// answer. So the agent makes every thread it will need when it starts,
// before any program runs, and never needs another: Go keeps a thread it
// no longer uses, idle, for the next time it needs one.
//
// What the runtime needs at most: a thread per P (agentMaxProcs), one for
// each goroutine in a blocking system call at once (the request readers,
// the frame writer, a fork, a file operation: six at the very most),
// sysmon, and the template thread that starts threads for a locked one:
// ten. The agent makes agentThreads idle besides its main thread, sysmon
// and the template thread: 16 in all under the default limit, counted in
// a cell; fewer where the task limit is small (a quarter of it), which
// leaves the programs most of it.

import (
	"os"
	"runtime"
	"strconv"
	"sync"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
)

const (
	// agentMaxProcs bounds the agent's Ps, and so its running threads,
	// whatever the host's CPUs: its work is a few goroutines in turn.
	agentMaxProcs = 2
	// agentThreads is how many threads the agent makes at its start,
	// beyond its main thread and sysmon.
	agentThreads = 12
)

// reserveThreads makes the runtime start n threads at once and leaves them
// idle, for it to use later without starting any. Each of n goroutines
// locks a thread of its own and waits until all n have one; then they
// unlock and end, and their threads go idle.
func reserveThreads(n int) {
	var locked, release, ended sync.WaitGroup
	locked.Add(n)
	release.Add(1)
	ended.Add(n)
	for range n {
		go func() {
			defer ended.Done()
			runtime.LockOSThread()
			locked.Done()
			release.Wait()
			runtime.UnlockOSThread()
		}()
	}
	locked.Wait()
	release.Done()
	// Until they have unlocked, their threads serve nothing else.
	ended.Wait()
}

// boundThreads sets the agent's Ps and reserves its threads, within the
// task limit that sandboxd gives it (agentproto.TaskLimitEnv).
func boundThreads() {
	if runtime.GOMAXPROCS(0) > agentMaxProcs {
		runtime.GOMAXPROCS(agentMaxProcs)
	}
	reserveThreads(threadsWithin(os.Getenv(agentproto.TaskLimitEnv)))
}

// threadsWithin is how many threads the agent makes under a task limit:
// agentThreads, or a quarter of the limit if less; none if the limit is
// not known.
func threadsWithin(limit string) int {
	n, err := strconv.Atoi(limit)
	if err != nil || n <= 0 {
		return 0
	}
	return min(agentThreads, n/4)
}

//go:build integration

package main_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The processes the suite starts (containerd, sandboxd, sandboxctl, the
// helpers) die with it, and what they leave is cleaned up even when the
// suite does not get to clean up itself.
//
// Each is started with SIGKILL as its parent-death signal. The kernel sends
// it when the thread that started the child ends, not the process
// (PR_SET_PDEATHSIG; go.dev/issue/27505), and the Go runtime ends a thread
// when a goroutine locked to it returns: a child started from any thread
// could be killed in the middle of a test. So every child is started from
// one goroutine locked to its thread for the life of the test binary.
//
// A test that panics, the -timeout's panic or a kill end the test binary
// without running TestMain's clean-up: the parent-death signal ends
// containerd and the daemons then, but not the shims, the sandboxes and
// their mounts. The reaper, this binary again in a process of its own,
// waits for the suite's process to end and kills and removes what is left
// under the suite's directory.

var (
	spawnOnce sync.Once
	spawns    chan func()
)

// onSpawnThread runs f on the suite's spawning thread, which lives as long
// as the test binary.
func onSpawnThread(f func()) {
	spawnOnce.Do(func() {
		spawns = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with the process
			for f := range spawns {
				f()
			}
		}()
	})
	done := make(chan struct{})
	spawns <- func() {
		defer close(done)
		f()
	}
	<-done
}

// startProc starts cmd as a child that gets SIGKILL when the suite's
// process ends, however it ends.
func startProc(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	var err error
	onSpawnThread(func() { err = cmd.Start() })
	return err
}

// runProc is cmd.Run, with cmd started by startProc.
func runProc(cmd *exec.Cmd) error {
	if err := startProc(cmd); err != nil {
		return err
	}
	return cmd.Wait()
}

// outputProc is cmd.Output, with cmd started by startProc.
func outputProc(cmd *exec.Cmd) ([]byte, error) {
	var out bytes.Buffer
	cmd.Stdout = &out
	err := runProc(cmd)
	return out.Bytes(), err
}

// combinedOutputProc is cmd.CombinedOutput, with cmd started by startProc.
func combinedOutputProc(cmd *exec.Cmd) ([]byte, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := runProc(cmd)
	return out.Bytes(), err
}

// procTransport is an MCP transport on a command started by startProc.
type procTransport struct{ *mcp.CommandTransport }

func (t procTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	if t.Command.SysProcAttr == nil {
		t.Command.SysProcAttr = &syscall.SysProcAttr{}
	}
	t.Command.SysProcAttr.Pdeathsig = syscall.SIGKILL
	var conn mcp.Connection
	var err error
	onSpawnThread(func() { conn, err = t.CommandTransport.Connect(ctx) })
	return conn, err
}

// reaperEnv makes this binary the reaper of the directory it names.
const reaperEnv = "SANDBOXD_IT_REAPER"

func init() {
	if dir := os.Getenv(reaperEnv); dir != "" {
		os.Exit(reap(dir))
	}
}

// reaperPipe is the write end of the reaper's stdin: it closes when the
// suite's process ends, and only then (a global, so that no finalizer
// closes it before).
var reaperPipe *os.File

// startReaper starts the reaper of dir: once the suite's process has ended,
// if dir is still there or a process still names a path under it, it
// kills every such process (containerd, sandboxd, shims, gVisor's
// sandboxes and gofers) and their descendants (the sandboxes' processes),
// unmounts what is mounted under dir and removes it.
func startReaper(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), reaperEnv+"="+dir)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = r, os.Stderr, os.Stderr
	// A process group of its own: a ^C to the suite does not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return err
	}
	reaperPipe = w
	return nil
}

// reap waits for the end of the suite's process, then cleans up after it.
func reap(dir string) int {
	io.Copy(io.Discard, os.Stdin)
	// TestMain removes dir when it returns, but what it found still
	// running (and failed the suite for) runs on.
	if _, err := os.Lstat(dir); err != nil && len(procsUnder(dir)) == 0 {
		return 0
	}
	// Bounded: the go command waits for this process, which holds the
	// suite's output open.
	time.AfterFunc(2*time.Minute, func() {
		fmt.Fprintf(os.Stderr, "reaper: %s not cleaned up within 2 minutes\n", dir)
		os.Exit(1)
	})
	fmt.Fprintf(os.Stderr, "reaper: the suite left processes or files behind; killing what runs from %s and removing it\n", dir)
	killed := map[int]bool{}
	cgroups := map[string]bool{}
	for range 50 {
		pids := procsUnder(dir)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			if cg := shimCgroup(pid); cg != "" {
				cgroups[cg] = true
			}
		}
		// Stopped first, then listed again with their descendants, so
		// that none forks or is orphaned between the list and the kill.
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGSTOP)
		}
		for _, pid := range procsUnder(dir) {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed[pid] = true
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	left := procsUnder(dir)
	mounts := mountsUnder(dir)
	for _, m := range mounts {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	// The cgroups of the sandboxes whose shims were killed: empty now,
	// and only an empty cgroup can be removed.
	removed := 0
	for cg := range cgroups {
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", cg)) // cgroup v1
		dirs = append(dirs, filepath.Join("/sys/fs/cgroup", cg))           // v2
		for _, d := range dirs {
			if syscall.Rmdir(d) == nil {
				removed++
			}
		}
	}
	err := os.RemoveAll(dir)
	fmt.Fprintf(os.Stderr, "reaper: killed %d processes (%d still there), unmounted %d mounts, removed %d cgroups and %s: %v\n", len(killed), len(left), len(mounts), removed, dir, err)
	if err != nil || len(left) > 0 {
		return 1
	}
	return 0
}

// procsUnder lists the processes whose command line names a path under
// dir, and their descendants, this one aside.
func procsUnder(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	var roots []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if ppid, ok := parentOf(pid); ok {
			children[ppid] = append(children[ppid], pid)
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if bytes.Contains(cmdline, []byte(dir+"/")) {
			roots = append(roots, pid)
		}
	}
	seen := map[int]bool{}
	for len(roots) > 0 {
		pid := roots[len(roots)-1]
		roots = roots[:len(roots)-1]
		if seen[pid] || pid == os.Getpid() {
			continue
		}
		seen[pid] = true
		roots = append(roots, children[pid]...)
	}
	var pids []int
	for pid := range seen {
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	return pids
}

// shimCgroup is the cgroup, relative to a hierarchy's root, of the sandbox
// whose shim is process pid ("-namespace NS -id ID" on its command line;
// runtime.CgroupsPath), or "".
func shimCgroup(pid int) string {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte("containerd-shim")) {
		return ""
	}
	var ns, id string
	args := strings.Split(string(cmdline), "\x00")
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-namespace":
			ns = args[i+1]
		case "-id":
			id = args[i+1]
		}
	}
	if ns == "" || id == "" || strings.Contains(ns+id, "/") || strings.HasPrefix(ns+id, ".") {
		return ""
	}
	return filepath.Join(ns, id)
}

// parentOf reads a process's parent from /proc/PID/stat.
func parentOf(pid int) (int, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}

// mountsUnder lists the mount points under dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		// Spaces and the like are octal escapes in mountinfo.
		mp, err := strconv.Unquote(`"` + strings.ReplaceAll(fields[4], `"`, `\"`) + `"`)
		if err != nil {
			mp = fields[4]
		}
		if strings.HasPrefix(mp, dir+"/") || mp == dir {
			mounts = append(mounts, mp)
		}
	}
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	return mounts
}

// exitCode is a command's exit status, or an error when it could not be
// run or waited for at all.
func exitCode(err error) (int, error) {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		return ee.ExitCode(), nil
	default:
		return 0, err
	}
}

//go:build integration

package main_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// syscallNumbers are the numbers of the calls the sandbox refuses, and of
// clone3, per architecture, from the kernel's tables as golang.org/x/sys/unix
// has them. -1 marks a name the architecture has no call for.
var syscallNumbers = map[string]map[string]int{
	"amd64": {
		"ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
		"bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
		"keyctl": 250, "add_key": 248, "request_key": 249,
		"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
		"unshare": 272, "setns": 308, "clone": 56, "clone3": 435,
		"mount": 165, "umount": -1, "umount2": 166, "pivot_root": 155,
		"mount_setattr": 442, "move_mount": 429, "open_tree": 428,
		"fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
		"open_by_handle_at": 304, "name_to_handle_at": 303,
		"kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176,
		"acct": 163, "swapon": 167, "swapoff": 168, "reboot": 169, "syslog": 103, "quotactl": 179,
		"lookup_dcookie": 212, "vhangup": 153, "iopl": 172, "ioperm": 173, "uselib": 134, "nfsservctl": 180,
		"mknod": 133, "mknodat": 259,
		"personality": 135, "close": 3,
	},
	"arm64": {
		"ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272,
		"bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
		"keyctl": 219, "add_key": 217, "request_key": 218,
		"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
		"unshare": 97, "setns": 268, "clone": 220, "clone3": 435,
		"mount": 40, "umount": -1, "umount2": 39, "pivot_root": 41,
		"mount_setattr": 442, "move_mount": 429, "open_tree": 428,
		"fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
		"open_by_handle_at": 265, "name_to_handle_at": 264,
		"kexec_load": 104, "kexec_file_load": 294, "init_module": 105, "finit_module": 273, "delete_module": 106,
		"acct": 89, "swapon": 224, "swapoff": 225, "reboot": 142, "syslog": 116, "quotactl": 60,
		"lookup_dcookie": 18, "vhangup": 58, "iopl": -1, "ioperm": -1, "uselib": -1, "nfsservctl": 42,
		"mknod": -1, "mknodat": 33,
		"personality": 92, "close": 57,
	},
}

// probeArgs replace the zeros a refused call is otherwise tried with, where
// zeros, let through, would answer EPERM or have an effect.
var probeArgs = map[string][]uint64{
	"ptrace":      {2, 0x7fffffff}, // PTRACE_PEEKDATA of no process: ESRCH (zeros: PTRACE_TRACEME)
	"userfaultfd": {1},             // UFFD_USER_MODE_ONLY: a descriptor where vm.unprivileged_userfaultfd is 0
}

// probeCall is one call of the probe program.
type probeCall struct {
	label string
	nr    int
	args  []uint64
}

// refusedCalls reads the requirement, runtime/testdata/seccomp-denied.txt
// (the list docs/security.md promises), as calls for this architecture.
func refusedCalls(t *testing.T) []probeCall {
	t.Helper()
	numbers, ok := syscallNumbers[runtime.GOARCH]
	if !ok {
		t.Fatalf("no syscall numbers for %s", runtime.GOARCH)
	}
	f, err := os.Open(filepath.Join("..", "..", "runtime", "testdata", "seccomp-denied.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var calls []probeCall
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		text, label, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		name := fields[0]
		nr, ok := numbers[name]
		if !ok {
			t.Fatalf("seccomp-denied.txt: no number for %s on %s", name, runtime.GOARCH)
		}
		if nr < 0 {
			continue // no such call here
		}
		c := probeCall{label: name, nr: nr, args: probeArgs[name]}
		if len(fields) > 1 {
			c.label, c.args = name+"("+strings.TrimSpace(label)+")", nil
			for _, a := range fields[1:] {
				v, err := strconv.ParseUint(a, 0, 64)
				if err != nil {
					t.Fatalf("seccomp-denied.txt: %s: %v", name, err)
				}
				c.args = append(c.args, v)
			}
		}
		calls = append(calls, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return calls
}

// syscallProgram makes each call by number and prints its label, its
// result and errno. A clone that went through leaves in the child.
const syscallProgram = `
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
pid = os.getpid()
for label, nr, args in [%s]:
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_ulong(a) for a in args])
    e = ctypes.get_errno()
    if os.getpid() != pid:
        os._exit(0)
    print(label, r, e if r == -1 else 0, flush=True)
`

// TestSeccompRefusedSyscalls makes every call docs/security.md promises
// refused, in a sandbox on each runtime, and wants -1 with EPERM from each:
// let through, most would answer otherwise (ESRCH, EINVAL, EFAULT, ENOSYS,
// a result), which a check for any error could not tell from a refusal.
// Those that need a capability the sandbox lacks would get EPERM from the
// kernel too (docs/security.md says which); the unit tests of runtime pin
// the profile for them.
func TestSeccompRefusedSyscalls(t *testing.T) {
	calls := refusedCalls(t)
	numbers := syscallNumbers[runtime.GOARCH]
	want := map[string][2]int64{} // label: result, errno
	for _, c := range calls {
		want[c.label] = [2]int64{-1, int64(syscall.EPERM)}
	}
	// clone3 is refused with ENOSYS, on purpose (docs/security.md): by the
	// profile under runc, by gVisor's kernel, which has none, under runsc.
	calls = append(calls, probeCall{label: "clone3", nr: numbers["clone3"]})
	want["clone3"] = [2]int64{-1, int64(syscall.ENOSYS)}
	// Controls: calls the profile lets through answer otherwise. The query
	// of personality passes an argument-conditioned rule: runc's kernel
	// answers PER_LINUX, Debian 12's gVisor EINVAL to every personality.
	calls = append(calls,
		probeCall{label: "personality(query)", nr: numbers["personality"], args: []uint64{0xffffffff}},
		probeCall{label: "close(-1)", nr: numbers["close"], args: []uint64{^uint64(0)}})
	want["close(-1)"] = [2]int64{-1, int64(syscall.EBADF)}
	personalityQuery := map[string][2]int64{"runc": {0, 0}, "runsc": {-1, int64(syscall.EINVAL)}}

	var list []string
	for _, c := range calls {
		args := make([]string, 6)
		for i := range args {
			args[i] = "0"
			if i < len(c.args) {
				args[i] = strconv.FormatUint(c.args[i], 10)
			}
		}
		list = append(list, fmt.Sprintf("(%q, %d, [%s])", c.label, c.nr, strings.Join(args, ", ")))
	}
	prog := fmt.Sprintf(syscallProgram, strings.Join(list, ",\n    "))

	forEachRuntime(t, func(t *testing.T, rt string, _ []string) {
		want["personality(query)"] = personalityQuery[rt]
		res := execute(t, api.ExecuteRequest{Language: "python", Code: prog, Runtime: rt})
		if res.Status != api.StatusOK {
			t.Fatalf("status %s: stdout %q stderr %q", res.Status, res.Stdout, res.Stderr)
		}
		got := map[string][2]int64{}
		for _, line := range strings.Split(strings.TrimSpace(res.Stdout), "\n") {
			var label string
			var r, errno int64
			if _, err := fmt.Sscan(line, &label, &r, &errno); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			if _, dup := got[label]; dup {
				t.Errorf("%s answered twice (a clone let through?)", label)
			}
			got[label] = [2]int64{r, errno}
		}
		for _, c := range calls {
			g, ok := got[c.label]
			switch {
			case !ok:
				t.Errorf("%s: no answer", c.label)
			case g != want[c.label]:
				t.Errorf("%s: %d, errno %d (%v); want %d, errno %d (%v)", c.label,
					g[0], g[1], syscall.Errno(g[1]), want[c.label][0], want[c.label][1], syscall.Errno(want[c.label][1]))
			}
		}
		if len(got) != len(calls) {
			t.Errorf("%d answers to %d calls:\n%s", len(got), len(calls), res.Stdout)
		}
	})
}

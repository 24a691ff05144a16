package runtime

import (
	"context"
	"maps"
	"slices"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// DeniedSyscalls are removed from containerd's default seccomp profile.
// Untrusted code has no use for them, and each has a history of kernel
// exploits. Most are already refused without capabilities; listing them
// keeps them refused whatever a future default profile allows.
//
// docs/security.md promises them refused with EPERM; the tests hold the
// built profile to that promise (runtime/testdata/seccomp-denied.txt), not
// to this list.
var DeniedSyscalls = []string{
	"ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
	"bpf", "perf_event_open", "userfaultfd",
	"keyctl", "add_key", "request_key",
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	"unshare", "setns", "mount", "umount", "umount2", "pivot_root",
	"mount_setattr", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
	"open_by_handle_at", "name_to_handle_at",
	"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
	"acct", "swapon", "swapoff", "reboot", "syslog", "quotactl", "lookup_dcookie",
	"vhangup", "iopl", "ioperm", "uselib", "nfsservctl",
}

// Profile returns the sandbox seccomp profile for spec s: containerd's
// default profile for s's capabilities, less DeniedSyscalls, with mknod
// and mknodat allowed only for files that are no device (nodeCalls), for
// the native architecture only. Its default action refuses every syscall
// the profile does not allow.
//
// Only the native ABI: containerd's default also admits the 32-bit ones
// (x86 and x32 beside x86-64, arm beside arm64), a second syscall table
// with a history of kernel bugs of its own that no runtime of a sandbox
// needs; and each architecture is one more filter for runc to build at
// every start (measured in docs/performance.md).
func Profile(s *specs.Spec) *specs.LinuxSeccomp {
	p := seccomp.DefaultProfile(s)
	kept := p.Syscalls[:0]
	for _, rule := range p.Syscalls {
		if rule.Action != specs.ActAllow {
			kept = append(kept, rule)
			continue
		}
		rule.Names = slices.DeleteFunc(slices.Clone(rule.Names), func(n string) bool {
			_, node := nodeCalls[n]
			return node || slices.Contains(DeniedSyscalls, n)
		})
		if len(rule.Names) > 0 {
			kept = append(kept, rule)
		}
	}
	p.Syscalls = append(kept, nodeRules()...)
	// containerd lists the native architecture first.
	p.Architectures = p.Architectures[:1]
	return p
}

// nodeCalls create a file of the type their mode argument names (its
// S_IFMT bits), by the index of that argument. The profile lets them create
// regular files, FIFOs and sockets, and refuses every other type: device
// nodes above all. The kernel refuses those without CAP_MKNOD, but gVisor's
// does not, and it honours no nodev: a node made in /tmp would open the
// device it names in gVisor's kernel (FUSE, TUN...).
var nodeCalls = map[string]uint{"mknod": 1, "mknodat": 2}

// nodeTypes are the file types nodeCalls may create; 0 is a regular file.
var nodeTypes = []uint64{0, unix.S_IFREG, unix.S_IFIFO, unix.S_IFSOCK}

// nodeRules allow nodeCalls for nodeTypes, one rule per call and type:
// runc ORs two conditions on one argument of a rule only by a quirk
// (opencontainers/runc#2735) that gVisor's reading of the profile need not
// share.
func nodeRules() []specs.LinuxSyscall {
	var rules []specs.LinuxSyscall
	for _, name := range slices.Sorted(maps.Keys(nodeCalls)) {
		for _, t := range nodeTypes {
			rules = append(rules, specs.LinuxSyscall{
				Names:  []string{name},
				Action: specs.ActAllow,
				Args:   []specs.LinuxSeccompArg{{Index: nodeCalls[name], Value: unix.S_IFMT, ValueTwo: t, Op: specs.OpMaskedEqual}},
			})
		}
	}
	return rules
}

func withSeccomp(appKernel bool) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Linux.Seccomp = Profile(s)
		if appKernel {
			forAppKernel(s.Linux.Seccomp)
		}
		return nil
	}
}

// forAppKernel adapts the profile to gVisor, whose kernel applies it to
// the programs: it answers a refused call with EPERM whatever errno the
// rule names, and glibc creates threads with clone3, falling back to clone
// only on ENOSYS. So clone3 is let through to gVisor's kernel, which has
// no clone3 and answers ENOSYS itself.
func forAppKernel(p *specs.LinuxSeccomp) {
	for i, rule := range p.Syscalls {
		if rule.Action == specs.ActErrno && slices.Equal(rule.Names, []string{"clone3"}) {
			p.Syscalls[i].Action, p.Syscalls[i].ErrnoRet = specs.ActAllow, nil
		}
	}
}

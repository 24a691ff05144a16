package runtime

import (
	"context"
	"fmt"
	"os"
	"path"
	"strconv"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// Paths inside every sandbox.
const (
	// SandboxDir holds the submitted files, read-only.
	SandboxDir = "/sandbox"
	// WorkDir is the writable working directory.
	WorkDir = "/workspace"
)

// SpecConfig is everything the OCI spec of a sandbox is built from.
type SpecConfig struct {
	ID         string
	RootPath   string        // read-only root directory
	RootMounts []specs.Mount // mounts the root source needs (the host's /usr, …)
	FilesDir   string        // host directory mounted at SandboxDir
	InitArgs   []string      // PID 1, which only waits to be killed
	UID, GID   uint32
	Env        []string
	Limits     sandbox.Limits
	// SwapLimit is set where the kernel accounts swap (cgroup v2, or v1 with
	// memsw); elsewhere setting it would make runc fail.
	SwapLimit bool
	// CgroupNS asks for a cgroup namespace, where the kernel has them.
	CgroupNS bool
	// AppKernel says an application kernel (gVisor) runs the programs:
	// the host's pids limit then counts its tasks, not the programs.
	AppKernel bool
	// Jails makes the sandbox a cell, whose agent builds a jail for each
	// program (see withJails).
	Jails bool
}

// appKernelTasksPerProcess is how many host tasks gVisor (ptrace platform)
// uses per program process, counted here: 41 for an idle sandbox, 311
// with 20 more processes. The host's pids limit of a gVisor sandbox is the
// programs' limit times this: a backstop behind RLIMIT_NPROC, which gVisor's
// kernel applies to the programs' own tasks (see withRlimits).
const appKernelTasksPerProcess = 16

// SpecOpts returns the composed options that turn containerd's default spec
// into a sandbox spec.
func SpecOpts(c SpecConfig) []oci.SpecOpts {
	opts := []oci.SpecOpts{
		oci.WithRootFSPath(c.RootPath),
		oci.WithRootFSReadonly(),
		oci.WithProcessArgs(c.InitArgs...),
		oci.WithProcessCwd(WorkDir),
		oci.WithHostname("sandbox"),
		withEnv(c.Env),
		withAgentTaskLimit(c.Limits.Pids),
		withUser(c.UID, c.GID),
		withNoCapabilities,
		oci.WithNoNewPrivileges,
		withRlimits(c.Limits, c.AppKernel),
		withMounts(c),
		withResources(c.Limits, c.SwapLimit, c.AppKernel),
		withOOMScoreAdj(1000),
	}
	if c.CgroupNS {
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.CgroupNamespace}))
	}
	// Seccomp goes last: containerd's default profile is derived from the
	// capabilities set above.
	opts = append(opts, withSeccomp(c.AppKernel))
	if c.Jails {
		opts = append(opts, withJails)
	}
	return opts
}

// GenerateSpec builds the OCI spec of a sandbox without a containerd client,
// for the golden-file test of the spec.
func GenerateSpec(namespace string, c SpecConfig) (*specs.Spec, error) {
	ctx := namespaces.WithNamespace(context.Background(), namespace)
	return oci.GenerateSpec(ctx, nil, &containers.Container{ID: c.ID}, SpecOpts(c)...)
}

// withEnv sets the whole environment: nothing comes from the daemon.
func withEnv(env []string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Process.Env = append([]string(nil), env...)
		return nil
	}
}

// withAgentTaskLimit tells the agent its sandbox's task limit, which it
// shares with the programs (programSpec keeps it from them).
func withAgentTaskLimit(pids int64) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Process.Env = append(s.Process.Env, agentproto.TaskLimitEnv+"="+strconv.FormatInt(pids, 10))
		return nil
	}
}

func withUser(uid, gid uint32) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Process.User = specs.User{UID: uid, GID: gid, AdditionalGids: []uint32{gid}}
		return nil
	}
}

// withNoCapabilities empties every capability set, the bounding set too, so
// that not even a setuid binary could regain one.
func withNoCapabilities(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	s.Process.Capabilities = &specs.LinuxCapabilities{
		Bounding:    []string{},
		Effective:   []string{},
		Permitted:   []string{},
		Inheritable: []string{},
		Ambient:     []string{},
	}
	return nil
}

func withRlimits(l sandbox.Limits, appKernel bool) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Process.Rlimits = []specs.POSIXRlimit{
			{Type: "RLIMIT_NOFILE", Hard: l.NoFile, Soft: l.NoFile},
			{Type: "RLIMIT_FSIZE", Hard: l.FileSizeBytes, Soft: l.FileSizeBytes},
			{Type: "RLIMIT_CORE", Hard: 0, Soft: 0},
			// Locked memory escapes reclaim; a sandbox has no use for it.
			{Type: "RLIMIT_MEMLOCK", Hard: 0, Soft: 0},
		}
		if appKernel {
			// gVisor's kernel keeps the programs' threads and processes
			// to itself, where the host's pids cgroup cannot count them.
			// That kernel counts the tasks of the sandbox's user against
			// RLIMIT_NPROC; every task of the sandbox is that user's, so
			// the limit holds as the pids cgroup does under runc: a clone
			// past it fails with EAGAIN. Not under runc, where it would
			// count every sandbox of the host together, all one user's.
			n := uint64(l.Pids)
			s.Process.Rlimits = append(s.Process.Rlimits, specs.POSIXRlimit{Type: "RLIMIT_NPROC", Hard: n, Soft: n})
		}
		return nil
	}
}

func withOOMScoreAdj(adj int) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		// Under host memory pressure, sandboxes go before anything else.
		s.Process.OOMScoreAdj = &adj
		return nil
	}
}

// withMounts replaces containerd's default mounts with a minimal set: no
// /run, a small /dev, size-capped tmpfs for every writable place.
func withMounts(c SpecConfig) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		tmpfsSize := "size=" + strconv.FormatInt(c.Limits.TmpfsBytes, 10)
		uid, gid := fmt.Sprintf("uid=%d", c.UID), fmt.Sprintf("gid=%d", c.GID)
		s.Mounts = []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "noexec", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777", tmpfsSize}},
			{Destination: WorkDir, Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=700", uid, gid, tmpfsSize}},
		}
		if c.AppKernel {
			s.Mounts = append(s.Mounts, appKernelDevCovers()...)
		}
		s.Mounts = append(s.Mounts, c.RootMounts...)
		if c.FilesDir != "" {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: SandboxDir, Type: "bind", Source: c.FilesDir, Options: []string{"rbind", "ro", "nosuid", "nodev"}})
		}
		return nil
	}
}

// appKernelDevCovers hide the devices gVisor's /dev has beyond runc's.
// gVisor makes /dev itself, whatever the spec mounts there, with a node
// for every device its kernel implements: FUSE and TUN too, which a
// sandbox has no use for. Each is covered by an empty read-only tmpfs,
// which gVisor's kernel mounts over a file too: /dev/fuse becomes a
// directory nobody may open. (A bind mount would need its mount point made
// in the host's root, which an image's read-only view cannot take.)
func appKernelDevCovers() []specs.Mount {
	cover := func(dest, mode string) specs.Mount {
		return specs.Mount{Destination: dest, Type: "tmpfs", Source: "tmpfs", Options: []string{"ro", "nosuid", "noexec", "nodev", "mode=" + mode, "size=4k"}}
	}
	return []specs.Mount{cover("/dev/net", "755"), cover("/dev/fuse", "000")}
}

func withResources(l sandbox.Limits, swap, appKernel bool) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		r := s.Linux.Resources
		mem := l.MemoryBytes
		r.Memory = &specs.LinuxMemory{Limit: &mem}
		if swap {
			// The swap limit counts memory plus swap: equal means no swap.
			sw := mem
			r.Memory.Swap = &sw
		}
		const period = 100000
		quota := int64(l.CPUs * period)
		p := uint64(period)
		r.CPU = &specs.LinuxCPU{Quota: &quota, Period: &p}
		pids := l.Pids
		if appKernel {
			pids *= appKernelTasksPerProcess
		}
		r.Pids = &specs.LinuxPids{Limit: &pids}
		return nil
	}
}

// CgroupsPath is where a sandbox's cgroup lives, relative to the hierarchy.
func CgroupsPath(namespace, id string) string {
	return path.Join("/", namespace, id)
}

// hasCgroupNS reports whether this kernel has cgroup namespaces.
func hasCgroupNS() bool {
	_, err := os.Stat("/proc/self/ns/cgroup")
	return err == nil
}

package runtime

import (
	"context"
	"encoding/json"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
)

// A cell is a sandbox whose agent builds a jail for each program (see
// cmd/sandboxd-init/jail.go), so that it can serve many executions. Its
// walls are a sandbox's, but for what building jails needs:
//
//   - its seccomp filter also lets the agent create namespaces (clone with
//     their flags) and mount (mount, umount2, pivot_root); the jail's
//     second filter refuses those to the program again;
//   - its /proc is not masked: the kernel refuses a new procfs in a user
//     namespace while the only one visible has paths mounted over it. Only
//     the agent sees that /proc; each jail mounts its own, with the masks
//     this sandbox would have had, kept in the spec's annotations.

// Annotations that carry the /proc masks from the spec to the jails.
const (
	annotationProcMasked   = "io.sandboxd.jail.proc-masked"
	annotationProcReadOnly = "io.sandboxd.jail.proc-read-only"
	annotationBinds        = "io.sandboxd.jail.binds"
)

// jailSyscalls are what the agent needs, beyond a sandbox's profile, to
// build jails.
var jailSyscalls = []string{"mount", "umount2", "pivot_root", "clone"}

// withJails turns a sandbox's spec into a cell's. It goes after the
// seccomp profile is set.
func withJails(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	isProc := func(p string) bool { return strings.HasPrefix(p, "/proc/") }
	masked := slices.DeleteFunc(slices.Clone(s.Linux.MaskedPaths), func(p string) bool { return !isProc(p) })
	readOnly := slices.DeleteFunc(slices.Clone(s.Linux.ReadonlyPaths), func(p string) bool { return !isProc(p) })
	s.Linux.MaskedPaths = slices.DeleteFunc(s.Linux.MaskedPaths, isProc)
	s.Linux.ReadonlyPaths = slices.DeleteFunc(s.Linux.ReadonlyPaths, isProc)
	// Binds under the places a jail gets fresh would be hidden in it.
	var binds []string
	for _, m := range s.Mounts {
		if m.Type == "bind" && (strings.HasPrefix(m.Destination, "/tmp/") || strings.HasPrefix(m.Destination, WorkDir+"/")) {
			binds = append(binds, m.Destination)
		}
	}
	b, _ := json.Marshal(binds)
	s.Annotations[annotationBinds] = string(b)
	m, _ := json.Marshal(masked)
	r, _ := json.Marshal(readOnly)
	s.Annotations[annotationProcMasked], s.Annotations[annotationProcReadOnly] = string(m), string(r)
	// Its agent takes sandboxd's connection on its socket (dialAgent).
	s.Process.Env = append(s.Process.Env, agentproto.ChannelEnv+"=1")
	// An allow rule without conditions: clone with namespace flags too.
	s.Linux.Seccomp.Syscalls = append(s.Linux.Seccomp.Syscalls, specs.LinuxSyscall{Names: jailSyscalls, Action: specs.ActAllow})
	return nil
}

// jailOf is the jail a cell's programs run in, from its spec; nil for a
// sandbox that is not a cell.
func jailOf(sp *specs.Spec, tmpfsBytes int64) *agentproto.Jail {
	masked, ok := sp.Annotations[annotationProcMasked]
	if !ok {
		return nil
	}
	j := &agentproto.Jail{TmpfsBytes: tmpfsBytes}
	json.Unmarshal([]byte(masked), &j.ProcMasked)
	json.Unmarshal([]byte(sp.Annotations[annotationProcReadOnly]), &j.ProcReadOnly)
	json.Unmarshal([]byte(sp.Annotations[annotationBinds]), &j.Binds)
	return j
}

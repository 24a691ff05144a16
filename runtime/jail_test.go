package runtime

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
)

// A cell's spec is a sandbox's but for what building jails needs: /proc
// unmasked (its masks carried to the jails), one more seccomp rule for
// the agent, allowing mount, umount2, pivot_root and clone with any flags,
// and the agent told to listen for sandboxd's channel.
// Anything else that differs fails this test.
func TestCellSpecDiffersOnlyForJails(t *testing.T) {
	c := testSpecConfig()
	plain, err := GenerateSpec("sandboxd", c)
	if err != nil {
		t.Fatal(err)
	}
	c.Jails = true
	cell, err := GenerateSpec("sandboxd", c)
	if err != nil {
		t.Fatal(err)
	}
	isProc := func(p string) bool { return strings.HasPrefix(p, "/proc/") }
	wantMasked := slices.DeleteFunc(slices.Clone(plain.Linux.MaskedPaths), isProc)
	wantReadOnly := slices.DeleteFunc(slices.Clone(plain.Linux.ReadonlyPaths), isProc)
	if !slices.Equal(cell.Linux.MaskedPaths, wantMasked) || !slices.Equal(cell.Linux.ReadonlyPaths, wantReadOnly) {
		t.Errorf("cell masks %v / %v, want the sandbox's less /proc: %v / %v", cell.Linux.MaskedPaths, cell.Linux.ReadonlyPaths, wantMasked, wantReadOnly)
	}
	j := jailOf(cell, 64<<20)
	if j == nil || !slices.Equal(j.ProcMasked, slices.DeleteFunc(slices.Clone(plain.Linux.MaskedPaths), func(p string) bool { return !isProc(p) })) ||
		!slices.Equal(j.ProcReadOnly, slices.DeleteFunc(slices.Clone(plain.Linux.ReadonlyPaths), func(p string) bool { return !isProc(p) })) ||
		len(j.ProcMasked) == 0 || len(j.ProcReadOnly) == 0 {
		t.Errorf("the jail's /proc masks %+v: not the sandbox's", j)
	}
	if jailOf(plain, 64<<20) != nil {
		t.Error("a sandbox that is not a cell has a jail")
	}
	extra := cell.Linux.Seccomp.Syscalls[len(plain.Linux.Seccomp.Syscalls):]
	if !slices.EqualFunc(cell.Linux.Seccomp.Syscalls[:len(plain.Linux.Seccomp.Syscalls)], plain.Linux.Seccomp.Syscalls, func(a, b specs.LinuxSyscall) bool {
		x, _ := json.Marshal(a)
		y, _ := json.Marshal(b)
		return string(x) == string(y)
	}) || len(extra) != 1 || extra[0].Action != specs.ActAllow || len(extra[0].Args) != 0 ||
		!slices.Equal(extra[0].Names, []string{"mount", "umount2", "pivot_root", "clone"}) {
		t.Errorf("the cell's seccomp rules beyond the sandbox's: %+v", extra)
	}
	// Its agent is told to take sandboxd's connection on its socket.
	if want := append(slices.Clone(plain.Process.Env), agentproto.ChannelEnv+"=1"); !slices.Equal(cell.Process.Env, want) {
		t.Errorf("the cell's environment %q, want the sandbox's and the channel's %q", cell.Process.Env, want)
	}
	cell.Process.Env = plain.Process.Env
	// The rest is the same, field for field.
	for _, s := range []*specs.Spec{plain, cell} {
		s.Linux.MaskedPaths, s.Linux.ReadonlyPaths, s.Linux.Seccomp, s.Annotations = nil, nil, nil, nil
	}
	a, _ := json.Marshal(plain)
	b, _ := json.Marshal(cell)
	if string(a) != string(b) {
		t.Errorf("the cell's spec differs from the sandbox's beyond the jails' needs:\n%s\n%s", a, b)
	}
}

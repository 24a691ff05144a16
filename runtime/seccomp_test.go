package runtime

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// requiredCall is one line of testdata/seccomp-denied.txt: a call the
// sandbox must refuse with EPERM.
type requiredCall struct {
	name string
	// args, when set, are the arguments the call is refused with; without
	// them the call is refused whatever its arguments.
	args  []uint64
	label string // what args are, as the doc's table names them
	line  int
}

func (c requiredCall) String() string {
	if c.args == nil {
		return c.name
	}
	return fmt.Sprintf("%s(%s)", c.name, c.label)
}

// readRequirement reads the calls docs/security.md promises are refused,
// from their restatement in testdata: the requirement, never the deny list
// the code builds the profile from.
func readRequirement(t *testing.T) []requiredCall {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "seccomp-denied.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var calls []requiredCall
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		text, label, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		c := requiredCall{name: fields[0], label: strings.TrimSpace(label), line: n}
		for _, a := range fields[1:] {
			v, err := strconv.ParseUint(a, 0, 64)
			if err != nil {
				t.Fatalf("seccomp-denied.txt:%d: %v", n, err)
			}
			c.args = append(c.args, v)
		}
		if c.args != nil && c.label == "" {
			t.Fatalf("seccomp-denied.txt:%d: arguments without a comment naming them", n)
		}
		calls = append(calls, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(calls) == 0 {
		t.Fatal("seccomp-denied.txt lists no call")
	}
	return calls
}

// verdict is what a seccomp profile does with one call.
type verdict struct {
	action specs.LinuxSeccompAction
	errno  uint // of SCMP_ACT_ERRNO
}

var eperm = verdict{specs.ActErrno, uint(unix.EPERM)}

func (v verdict) String() string {
	if v.action == specs.ActErrno || v.action == specs.ActTrace {
		return fmt.Sprintf("%s(%s)", v.action, unix.ErrnoName(unix.Errno(v.errno)))
	}
	return string(v.action)
}

func verdictOf(action specs.LinuxSeccompAction, errnoRet *uint) verdict {
	v := verdict{action: action}
	if action == specs.ActErrno || action == specs.ActTrace {
		// runc and gVisor both read a missing errnoRet as EPERM.
		v.errno = uint(unix.EPERM)
		if errnoRet != nil {
			v.errno = *errnoRet
		}
	}
	return v
}

// argsHold reports whether a rule's argument conditions hold for args, as
// runc hands them to libseccomp: ANDed, unless one argument is compared
// more than once, in which case each condition is a rule of its own and
// any one suffices (opencontainers/runc#2735).
func argsHold(conds []specs.LinuxSeccompArg, args []uint64) bool {
	if len(conds) == 0 {
		return true
	}
	seen := map[uint]bool{}
	or := false
	for _, c := range conds {
		or = or || seen[c.Index]
		seen[c.Index] = true
	}
	for _, c := range conds {
		var a uint64
		if int(c.Index) < len(args) {
			a = args[c.Index]
		}
		var ok bool
		switch c.Op {
		case specs.OpNotEqual:
			ok = a != c.Value
		case specs.OpLessThan:
			ok = a < c.Value
		case specs.OpLessEqual:
			ok = a <= c.Value
		case specs.OpEqualTo:
			ok = a == c.Value
		case specs.OpGreaterEqual:
			ok = a >= c.Value
		case specs.OpGreaterThan:
			ok = a > c.Value
		case specs.OpMaskedEqual:
			ok = a&c.Value == c.ValueTwo
		default:
			panic("unknown seccomp operator " + c.Op)
		}
		if ok && or {
			return true
		}
		if !ok && !or {
			return false
		}
	}
	return !or
}

// decide returns what profile p does with the call name(args...): the
// action of the rules that name it and whose conditions hold, or the
// default action when none does. Matching rules that disagree are an
// error: which one libseccomp's filter applies is no ground for a
// requirement to stand on.
func decide(p *specs.LinuxSeccomp, name string, args []uint64) (verdict, error) {
	var found []verdict
	for _, r := range p.Syscalls {
		if slices.Contains(r.Names, name) && argsHold(r.Args, args) {
			found = append(found, verdictOf(r.Action, r.ErrnoRet))
		}
	}
	if len(found) == 0 {
		return verdictOf(p.DefaultAction, p.DefaultErrnoRet), nil
	}
	for _, v := range found[1:] {
		if v != found[0] {
			return verdict{}, fmt.Errorf("%s: rules disagree: %v", name, found)
		}
	}
	return found[0], nil
}

// refusedAlways returns why p may let name through for some arguments, or
// "" when every rule naming it refuses with EPERM, and so does the default
// action unless one of those rules holds for any arguments.
func refusedAlways(p *specs.LinuxSeccomp, name string) string {
	unconditional := false
	for _, r := range p.Syscalls {
		if !slices.Contains(r.Names, name) {
			continue
		}
		if v := verdictOf(r.Action, r.ErrnoRet); v != eperm {
			return fmt.Sprintf("a rule gives %s (args %+v)", v, r.Args)
		}
		unconditional = unconditional || len(r.Args) == 0
	}
	if v := verdictOf(p.DefaultAction, p.DefaultErrnoRet); !unconditional && v != eperm {
		return fmt.Sprintf("the default action is %s", v)
	}
	return ""
}

func TestSeccompEvaluator(t *testing.T) {
	enosys := uint(unix.ENOSYS)
	p := &specs.LinuxSeccomp{
		DefaultAction: specs.ActErrno,
		Syscalls: []specs.LinuxSyscall{
			{Names: []string{"read", "write"}, Action: specs.ActAllow},
			{Names: []string{"clone"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Value: 0x7e020000, Op: specs.OpMaskedEqual}}},
			{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys},
			{Names: []string{"personality"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Value: 0, Op: specs.OpEqualTo}}},
			{Names: []string{"personality"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Value: 8, Op: specs.OpEqualTo}}},
			// runc ORs conditions on one argument, ANDs them across arguments.
			{Names: []string{"socket"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Value: 1, Op: specs.OpEqualTo}, {Index: 0, Value: 2, Op: specs.OpEqualTo}}},
			{Names: []string{"kill"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Value: 1, Op: specs.OpGreaterEqual}, {Index: 1, Value: 9, Op: specs.OpNotEqual}}},
			{Names: []string{"ptrace"}, Action: specs.ActAllow},
			{Names: []string{"ptrace"}, Action: specs.ActKill},
			{Names: []string{"bpf"}, Action: specs.ActErrno},
			{Names: []string{"setns"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 1, Value: 0, Op: specs.OpEqualTo}}},
		},
	}
	allow := verdict{action: specs.ActAllow}
	for _, c := range []struct {
		name string
		args []uint64
		want verdict
	}{
		{"read", nil, allow},
		{"mount", nil, eperm},
		{"clone", []uint64{0x11}, allow},
		{"clone", []uint64{0x10000000}, eperm},
		{"clone3", nil, verdict{specs.ActErrno, enosys}},
		{"personality", []uint64{8}, allow},
		{"personality", []uint64{0x40000}, eperm},
		{"socket", []uint64{2}, allow},
		{"socket", []uint64{3}, eperm},
		{"kill", []uint64{5, 15}, allow},
		{"kill", []uint64{5, 9}, eperm},
		{"kill", []uint64{0, 15}, eperm},
	} {
		if got, err := decide(p, c.name, c.args); err != nil || got != c.want {
			t.Errorf("%s%#x: %v, %v; want %v", c.name, c.args, got, err, c.want)
		}
	}
	if _, err := decide(p, "ptrace", nil); err == nil {
		t.Error("ptrace: disagreeing rules went unnoticed")
	}
	for name, want := range map[string]bool{"mount": true, "read": false, "clone": false, "personality": false, "clone3": false} {
		if why := refusedAlways(p, name); (why == "") != want {
			t.Errorf("%s: refused always %v (%s), want %v", name, why == "", why, want)
		}
	}
	// Under a default that allows, only a rule for any arguments refuses always.
	p.DefaultAction = specs.ActAllow
	for name, want := range map[string]bool{"mount": false, "bpf": true, "setns": false} {
		if why := refusedAlways(p, name); (why == "") != want {
			t.Errorf("default allow: %s: refused always %v (%s), want %v", name, why == "", why, want)
		}
	}
}

// seccompProfiles builds the sandbox spec for each runtime and returns its
// seccomp profile.
func seccompProfiles(t *testing.T) map[string]*specs.LinuxSeccomp {
	t.Helper()
	profiles := map[string]*specs.LinuxSeccomp{}
	for rt, appKernel := range map[string]bool{"runc": false, "runsc": true} {
		c := testSpecConfig()
		c.AppKernel = appKernel
		s, err := GenerateSpec("sandboxd", c)
		if err != nil {
			t.Fatal(err)
		}
		profiles[rt] = s.Linux.Seccomp
	}
	return profiles
}

// TestSeccompRequirement holds the profiles, runc's and gVisor's, to the
// requirement: every call docs/security.md promises refused comes to
// SCMP_ACT_ERRNO with EPERM.
func TestSeccompRequirement(t *testing.T) {
	calls := readRequirement(t)
	for rt, p := range seccompProfiles(t) {
		t.Run(rt, func(t *testing.T) {
			for _, c := range calls {
				if c.args == nil {
					if why := refusedAlways(p, c.name); why != "" {
						t.Errorf("%s is not always refused with EPERM: %s", c, why)
					}
					continue
				}
				if got, err := decide(p, c.name, c.args); err != nil || got != eperm {
					t.Errorf("%s: %v, %v; want %v", c, got, err, eperm)
				}
			}
		})
	}
}

// TestSeccompProfile checks that programs can run at all under the
// profile, and only through the native ABI.
func TestSeccompProfile(t *testing.T) {
	for rt, p := range seccompProfiles(t) {
		for _, n := range []string{"read", "write", "execve", "exit_group", "openat", "mmap", "futex", "wait4"} {
			if got, err := decide(p, n, nil); err != nil || got.action != specs.ActAllow {
				t.Errorf("%s: %s %v, %v: programs cannot run", rt, n, got, err)
			}
		}
		// Threads and fork: clone without namespace flags.
		const cloneThread = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD | unix.CLONE_SYSVSEM | unix.CLONE_SETTLS | unix.CLONE_PARENT_SETTID | unix.CLONE_CHILD_CLEARTID
		const cloneFork = unix.CLONE_CHILD_SETTID | unix.CLONE_CHILD_CLEARTID | uint64(unix.SIGCHLD)
		for _, flags := range []uint64{cloneThread, cloneFork} {
			if got, err := decide(p, "clone", []uint64{flags}); err != nil || got.action != specs.ActAllow {
				t.Errorf("%s: clone(%#x) %v, %v", rt, flags, got, err)
			}
		}
		native := map[string]specs.Arch{"amd64": specs.ArchX86_64, "arm64": specs.ArchAARCH64}[goruntime.GOARCH]
		if a := p.Architectures; len(a) != 1 || (native != "" && a[0] != native) {
			t.Errorf("%s: architectures %v, want only the native one (%s)", rt, a, native)
		}
	}
}

// TestSeccompGolden pins runc's whole profile for this architecture;
// refresh with -update and read the diff as a security review.
func TestSeccompGolden(t *testing.T) {
	got, _ := json.MarshalIndent(seccompProfiles(t)["runc"], "", "  ")
	got = append(got, '\n')
	golden := filepath.Join("testdata", "seccomp."+goruntime.GOARCH+".golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if os.IsNotExist(err) {
		t.Fatalf("no golden profile for %s: generate %s on this architecture with go test -update, and review it", goruntime.GOARCH, golden)
	}
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != string(got) {
		t.Errorf("profile differs from %s (run go test -update and review the diff):\n%s", golden, got)
	}
}

// appKernelDifferences are the only rules in which the gVisor profile may
// differ from runc's. clone3 is let through: gVisor answers a refused call
// with EPERM whatever errno the rule names, glibc falls back to clone only
// on ENOSYS, and gVisor, which has no clone3, answers ENOSYS itself.
var appKernelDifferences = []struct{ runc, runsc specs.LinuxSyscall }{{
	runc:  specs.LinuxSyscall{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: func() *uint { e := uint(unix.ENOSYS); return &e }()},
	runsc: specs.LinuxSyscall{Names: []string{"clone3"}, Action: specs.ActAllow},
}}

// TestSeccompAppKernelRules compares the gVisor profile with runc's, rule
// by rule: they may differ only as appKernelDifferences says.
func TestSeccompAppKernelRules(t *testing.T) {
	ps := seccompProfiles(t)
	runc, runsc := *ps["runc"], *ps["runsc"]
	if len(runc.Syscalls) != len(runsc.Syscalls) {
		t.Errorf("runc has %d rules, gVisor %d", len(runc.Syscalls), len(runsc.Syscalls))
	}
	used := make([]bool, len(appKernelDifferences))
	for i := range max(len(runc.Syscalls), len(runsc.Syscalls)) {
		var r, g specs.LinuxSyscall
		if i < len(runc.Syscalls) {
			r = runc.Syscalls[i]
		}
		if i < len(runsc.Syscalls) {
			g = runsc.Syscalls[i]
		}
		if reflect.DeepEqual(r, g) {
			continue
		}
		documented := slices.IndexFunc(appKernelDifferences, func(d struct{ runc, runsc specs.LinuxSyscall }) bool {
			return reflect.DeepEqual(d.runc, r) && reflect.DeepEqual(d.runsc, g)
		})
		if documented < 0 || used[documented] {
			t.Errorf("rule %d: %s", i, ruleDiff(r, g))
			continue
		}
		used[documented] = true
	}
	for i, u := range used {
		if !u {
			t.Errorf("documented difference not found: %+v", appKernelDifferences[i])
		}
	}
	runc.Syscalls, runsc.Syscalls = nil, nil
	if !reflect.DeepEqual(runc, runsc) {
		t.Errorf("profiles differ beyond their rules:\nrunc  %+v\ngVisor %+v", runc, runsc)
	}
}

// ruleDiff says how rule g differs from rule r: by the names only gVisor's
// or only runc's has when nothing else differs, else in full.
func ruleDiff(r, g specs.LinuxSyscall) string {
	rn, gn := r.Names, g.Names
	r.Names, g.Names = nil, nil
	if !reflect.DeepEqual(r, g) {
		return fmt.Sprintf("runc %+v, gVisor %+v", r, g)
	}
	var onlyRunc, onlyGVisor []string
	for _, n := range rn {
		if !slices.Contains(gn, n) {
			onlyRunc = append(onlyRunc, n)
		}
	}
	for _, n := range gn {
		if !slices.Contains(rn, n) {
			onlyGVisor = append(onlyGVisor, n)
		}
	}
	return fmt.Sprintf("%s %+v: only runc's names %v, only gVisor's %v", r.Action, r.Args, onlyRunc, onlyGVisor)
}

// TestSecurityDocMatchesRequirement checks that the table of refused calls
// in docs/security.md and testdata/seccomp-denied.txt say the same: the
// same names, refused always or only with the arguments the doc names.
func TestSecurityDocMatchesRequirement(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## Refused system calls\n")
	if !ok {
		t.Fatal(`docs/security.md has no "## Refused system calls" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	docAlways, docWhen := map[string]bool{}, map[string]string{}
	rows := 0
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.Contains(cells[1], "`") {
			continue
		}
		rows++
		when := strings.TrimSpace(cells[2])
		for _, name := range backquoted(cells[1]) {
			if docAlways[name] || docWhen[name] != "" {
				t.Errorf("doc: %s is in two rows", name)
			}
			if when == "always" {
				docAlways[name] = true
			} else {
				docWhen[name] = when
			}
		}
	}
	if rows == 0 {
		t.Fatal("doc: no table under Refused system calls")
	}
	fileAlways, fileWhen := map[string]bool{}, map[string]bool{}
	for _, c := range readRequirement(t) {
		if c.args == nil {
			fileAlways[c.name] = true
			if !docAlways[c.name] {
				t.Errorf("seccomp-denied.txt:%d: %s is not refused always in the doc", c.line, c.name)
			}
			continue
		}
		fileWhen[c.name] = true
		if when, ok := docWhen[c.name]; !ok {
			t.Errorf("seccomp-denied.txt:%d: %s is not refused with arguments in the doc", c.line, c.name)
		} else if !slices.Contains(backquoted(when), c.label) {
			t.Errorf("seccomp-denied.txt:%d: the doc's row for %s does not name `%s`", c.line, c.name, c.label)
		}
	}
	for name := range docAlways {
		if !fileAlways[name] {
			t.Errorf("doc: %s refused always, not so in seccomp-denied.txt", name)
		}
	}
	for name := range docWhen {
		if !fileWhen[name] {
			t.Errorf("doc: %s refused with some arguments, none in seccomp-denied.txt", name)
		}
	}
}

// backquoted returns the `code spans` of s.
func backquoted(s string) []string {
	parts := strings.Split(s, "`")
	var spans []string
	for i := 1; i < len(parts); i += 2 {
		spans = append(spans, parts[i])
	}
	return spans
}

// TestSeccompDeviceNodes holds every profile, a cell's too, to what
// mknod and mknodat may make: regular files, FIFOs and sockets, whatever
// the permission bits; no device, whatever bits lie above the mode's 32.
func TestSeccompDeviceNodes(t *testing.T) {
	profiles := seccompProfiles(t)
	c := testSpecConfig()
	c.Jails = true
	cell, err := GenerateSpec("sandboxd", c)
	if err != nil {
		t.Fatal(err)
	}
	profiles["runc cell"] = cell.Linux.Seccomp
	allow := verdict{action: specs.ActAllow}
	atFDCWD := int64(unix.AT_FDCWD)
	for rt, p := range profiles {
		for _, c := range []struct {
			mode uint64
			want verdict
		}{
			{unix.S_IFIFO | 0o644, allow},
			{unix.S_IFREG | 0o600, allow},
			{0o644, allow}, // mknod's regular file
			{unix.S_IFSOCK | 0o755, allow},
			{unix.S_IFCHR | 0o666, eperm},
			{unix.S_IFBLK | 0o660, eperm},
			{unix.S_IFCHR, eperm},
			{1<<32 | unix.S_IFBLK, eperm},
			{unix.S_IFDIR | 0o755, eperm},
			{unix.S_IFLNK | 0o777, eperm},
		} {
			for name, args := range map[string][]uint64{"mknod": {0, c.mode, 0}, "mknodat": {uint64(atFDCWD), 0, c.mode, 0}} {
				if got, err := decide(p, name, args); err != nil || got != c.want {
					t.Errorf("%s: %s(mode %#o): %v, %v; want %v", rt, name, c.mode, got, err, c.want)
				}
			}
		}
	}
}

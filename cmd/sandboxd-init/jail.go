package main

// The jail: a program of a one-shot execution runs in namespaces of its
// own that the agent builds inside the sandbox, so that a sandbox can
// serve many executions with nothing of one left to the next. The agent
// re-executes itself as the jail's init (runJail), which builds the jail,
// drops every privilege, installs the program's seccomp filter, then waits
// for its program, starts it, reaps what it leaves and, when it exits, ends
// the jail: the kernel kills everything else in the jail's PID namespace.
// The agent builds the next jail ahead, once a run is over (prepare), so
// that a run only hands its program over.
//
// This is a wall between executions: nothing here is steered by the
// program's bytes. The configuration comes from sandboxd through the agent;
// paths are fixed or come from that configuration.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
)

// jailInitName is argv[0] of the agent re-executed as a jail's init.
const jailInitName = "sandboxd-jail"

// What the agent hands a jail's init, on its fd 4: the jail (an
// agentproto.Jail as a JSON line), at once; then, when a run comes, its
// program (a jailProgram line) and the program's files' contents, raw, in
// order (as agentproto's requests carry them), which the init writes into
// the jail's /workspace as they come, never holding them whole.
type jailProgram struct {
	Args  []string   `json:"args"`
	Env   []string   `json:"env"`
	Dir   string     `json:"dir"`
	Files []jailFile `json:"files,omitempty"`
}

// jailFile is a file the jail's init writes into the jail's /workspace;
// Size bytes of it follow the line.
type jailFile struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode"`
	Size int64  `json:"size"`
	Code bool   `json:"code,omitempty"` // under /sandbox (agentproto.File)
}

// jailStatus is what a jail's init tells the agent, on its fd 3, as JSON
// lines: that the jail is built (Built), then, once the program has ended,
// how, or why it never started; or only the latter, when the build failed.
// Alone says that no process but the init was left in the jail then.
type jailStatus struct {
	Built  bool   `json:"built,omitempty"`
	Exit   int    `json:"exit"`
	Signal int    `json:"signal,omitempty"`
	Error  string `json:"error,omitempty"`
	Alone  bool   `json:"alone,omitempty"`
}

// The namespaces of a jail. The user namespace maps the sandbox's user
// onto itself, with setgroups denied: the program keeps its identity, and
// its init gets, for the build only, the capabilities it needs there.
const jailCloneFlags = unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWNET

// startJail starts a jail's init, which builds j and waits for its
// program (handOver).
func (a *agent) startJail(j agentproto.Jail) (*child, error) {
	// A process that is not dumpable has its /proc files owned by root:
	// the agent could not write its child's ID maps. Nothing but jails runs
	// beside an agent that builds them, and they cannot see it.
	unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0)
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer statusW.Close()
	programR, programW, err := os.Pipe()
	if err != nil {
		statusR.Close()
		return nil, err
	}
	defer programR.Close()
	holdR, holdW, err := os.Pipe()
	if err != nil {
		statusR.Close()
		programW.Close()
		return nil, err
	}
	defer holdR.Close()
	uid, gid := os.Getuid(), os.Getgid()
	c, err := a.spawn(func(stdio []uintptr) (int, error) {
		return forkWithInitSlack(func(programSlack uintptr) (int, error) {
			return syscall.ForkExec("/proc/self/exe", []string{jailInitName}, &syscall.ProcAttr{
				Dir: "/",
				// One P: the init makes a few syscalls and waits. Set, it
				// also spares the Go runtime's read of the cgroup's CPU limit
				// at start. The program's environment is its own; its timer
				// slack is the agent's (slack.go).
				Env:   []string{"GOMAXPROCS=1", programSlackEnv + "=" + strconv.FormatUint(uint64(programSlack), 10)},
				Files: append(stdio, statusW.Fd(), programR.Fd(), holdR.Fd()),
				Sys: &syscall.SysProcAttr{
					Cloneflags:                 jailCloneFlags,
					UidMappings:                []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}},
					GidMappings:                []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}},
					GidMappingsEnableSetgroups: false,
					// For the build only: mounts, the loopback link, dropping
					// the bounding set. runJail drops them before the program.
					// No Pdeathsig: it follows the forking thread, not the
					// agent; the agent's end ends the sandbox, the jail with it.
					AmbientCaps: []uintptr{unix.CAP_SYS_ADMIN, unix.CAP_NET_ADMIN, unix.CAP_SETPCAP},
				},
			})
		})
	})
	if err != nil {
		statusR.Close()
		programW.Close()
		holdW.Close()
		return nil, fmt.Errorf("starting the jail: %w", err)
	}
	c.status, c.program, c.hold, c.jail = statusR, programW, holdW, j
	c.statusLines, c.built = bufio.NewReader(io.LimitReader(statusR, 64<<10)), make(chan struct{})
	go func() {
		defer close(c.built)
		var st jailStatus
		if readLine(c.statusLines, &st) != nil {
			return
		}
		if !st.Built {
			c.early = &st
		}
	}()
	// Opened while the init may still be read (it is not dumpable once
	// built); without it, the teardown comes before the answer.
	c.mounts, _ = os.Open("/proc/" + strconv.Itoa(c.pid) + "/ns/mnt")
	// A line of a few hundred bytes: the pipe holds it.
	if err := json.NewEncoder(programW).Encode(j); err != nil {
		a.discard(c)
		return nil, fmt.Errorf("starting the jail: %w", err)
	}
	return c, nil
}

// prepare builds a jail j ahead, for the next run; one built for j already
// stays. Either way, id comes back in a Prepared frame once it is built.
func (a *agent) prepare(j agentproto.Jail, id uint64) {
	c := a.preparedJail(j)
	if c == nil {
		var err error
		if c, err = a.startJail(j); err != nil {
			a.send(agentproto.Frame{Error: "preparing a jail: " + err.Error()})
			return
		}
	}
	a.next = c
	if id != 0 {
		go func() {
			<-c.built
			if c.early == nil {
				a.send(agentproto.Frame{Prepared: id})
			}
		}()
	}
}

// preparedJail returns the jail built ahead if it is a j and still waits
// for its program; another is discarded.
func (a *agent) preparedJail(j agentproto.Jail) *child {
	c := a.next
	a.next = nil
	if c == nil {
		return nil
	}
	if !c.ended() && reflect.DeepEqual(c.jail, j) {
		return c
	}
	a.discard(c)
	return nil
}

// discard ends a jail's init that has no program: it reads the end of its
// program's pipe and exits.
func (a *agent) discard(c *child) {
	c.close()
	<-c.exited
}

// handOver gives a jail's init its program, from req.
func (c *child) handOver(req agentproto.Request) {
	prog := jailProgram{Args: req.Args, Env: req.Env, Dir: req.Dir}
	for _, f := range req.Files {
		prog.Files = append(prog.Files, jailFile{Path: f.Path, Mode: f.Mode, Size: int64(len(f.Data)), Code: f.Code})
	}
	w := c.program
	c.program = nil
	var line bytes.Buffer
	json.NewEncoder(&line).Encode(prog)
	size := line.Len()
	for _, f := range req.Files {
		size += len(f.Data)
	}
	if size <= handOverAtOnce {
		// Within any pipe's capacity: written at once, with no goroutine
		// to wake first. Its write fails once the init is gone: nothing
		// waits on it.
		for _, f := range req.Files {
			line.Write(f.Data)
		}
		w.Write(line.Bytes())
		w.Close()
		return
	}
	go func() {
		defer w.Close()
		if _, err := w.Write(line.Bytes()); err != nil {
			return
		}
		for _, f := range req.Files {
			if _, err := w.Write(f.Data); err != nil {
				return
			}
		}
	}()
}

// handOverAtOnce is what handOver writes without a goroutine: one page,
// which a pipe holds even when its owner's pipe quota is spent.
const handOverAtOnce = 4096

// reported waits for what a jail's init reports once its program has
// ended; nil when the init ends without a word.
func (c *child) reported() *jailStatus {
	<-c.built
	if c.early != nil {
		return c.early
	}
	var st jailStatus
	if err := readLine(c.statusLines, &st); err != nil || st.Built {
		return nil
	}
	return &st
}

// killedStatus is the status of a jail whose init exited with ws without
// a word: it was killed (a timeout, or the program killed its own jail).
func killedStatus(ws syscall.WaitStatus) jailStatus {
	st := jailStatus{Exit: ws.ExitStatus()}
	if ws.Signaled() {
		st.Signal = int(ws.Signal())
		st.Exit = 128 + st.Signal
	}
	return st
}

// cellClean reports whether no process but the agent, and the jail's init
// of pid init (0: none), runs in the sandbox: the sandbox's /proc (the
// agent's) shows the jails' processes too. What cannot be read makes the
// sandbox unclean. It runs between the program's end and the answer, and
// allocates nothing: since the agent's last fork (a jail's), every page it
// writes costs it a fault.
func (a *agent) cellClean(init int) bool {
	clean := true
	err := eachPid("/proc", a.procBuf[:], func(pid int) bool {
		clean = pid == 1 || pid == init
		return clean
	})
	return err == nil && clean
}

// eachPid calls visit with each entry of dir whose name is a number, read
// into buf, until visit returns false.
func eachPid(dir string, buf []byte, visit func(pid int) bool) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		for ents := buf[:n]; len(ents) > 0; {
			name, rest, err := nextDirent(ents)
			if err != nil {
				return err
			}
			if pid, ok := parsePid(name); ok && !visit(pid) {
				return nil
			}
			ents = rest
		}
	}
}

// direntName is where a linux_dirent64 record's name starts, after its
// inode (8 bytes), offset (8), length (2) and type (1).
const direntName = 19

// nextDirent splits the first linux_dirent64 record off buf: its name (up
// to its NUL) and the records after it.
func nextDirent(buf []byte) (name, rest []byte, err error) {
	if len(buf) < direntName {
		return nil, nil, errors.New("a short directory entry")
	}
	reclen := int(binary.NativeEndian.Uint16(buf[16:18]))
	if reclen <= direntName || reclen > len(buf) {
		return nil, nil, errors.New("a directory entry of a bad length")
	}
	name = buf[direntName:reclen]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	return name, buf[reclen:], nil
}

// parsePid parses a /proc entry's name as a pid: decimal digits only.
func parsePid(name []byte) (int, bool) {
	if len(name) == 0 || len(name) > 10 {
		return 0, false
	}
	pid := 0
	for _, c := range name {
		if c < '0' || c > '9' {
			return 0, false
		}
		pid = pid*10 + int(c-'0')
	}
	return pid, true
}

// alone reaps the init's children that have exited and reports whether
// none is left: then nothing but the init runs in its PID namespace, and
// nothing more can start there.
func alone() bool {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		switch {
		case err == syscall.EINTR || err == nil && pid > 0:
		case err == syscall.ECHILD:
			return true
		default:
			return false
		}
	}
}

// runJail is the agent re-executed as a jail's init, PID 1 of the jail.
func runJail() {
	// The program is forked from this thread, which drops the bounding
	// set for it (dropPrivileges).
	runtime.LockOSThread()
	// The status pipe is the agent's word on how the program ended: the
	// program must not inherit it.
	unix.CloseOnExec(3)
	unix.CloseOnExec(4)
	unix.CloseOnExec(5)
	status := os.NewFile(3, "status")
	report := func(st jailStatus) {
		json.NewEncoder(status).Encode(st)
		status.Close()
	}
	fail := func(step string, err error) {
		report(jailStatus{Exit: 127, Error: step + ": " + err.Error()})
		os.Exit(1)
	}
	// The kernel shields a PID namespace's init only from the signals it
	// has no handler for, and Go installs handlers for all of them: the
	// program could end its jail's init with those whose handler exits or
	// crashes. The kernel discards them instead (signals.go).
	if err := ignoreSignals(jailIgnoredSignals); err != nil {
		fail("signals", err)
	}
	// Read in blocking mode: the kernel wakes this thread when the
	// program comes, rather than Go's poller another that hands over.
	unix.SetNonblock(4, false)
	config := bufio.NewReader(os.NewFile(4, "config"))
	var j agentproto.Jail
	if err := readLine(config, &j); err != nil {
		fail("jail config", err)
	}
	code, err := buildJail(j)
	if err != nil {
		fail("building the jail", err)
	}
	if err := dropPrivileges(); err != nil {
		fail("dropping privileges", err)
	}
	if err := installJailFilter(); err != nil {
		fail("seccomp", err)
	}
	// The program's line is decoded on the request's path: the decoder
	// for its type is built now.
	json.Unmarshal([]byte(`{"files":[{}]}`), new(jailProgram))
	// Built: the agent may say so to sandboxd.
	json.NewEncoder(status).Encode(jailStatus{Built: true})
	// Built: from here on, the jail waits for its program.
	var prog jailProgram
	if err := readLine(config, &prog); err != nil {
		fail("jail program", err)
	}
	if len(prog.Args) == 0 {
		fail("jail program", errors.New("no program"))
	}
	err = placeFrom(config, prog.Files, code)
	code.close()
	if err != nil {
		fail("files", err)
	}
	unix.Close(4)
	dir := prog.Dir
	if dir == "" {
		dir = Workspace
	}
	// This thread, locked, forks the program, which starts with its slack.
	unix.Prctl(unix.PR_SET_TIMERSLACK, programSlack(), 0, 0, 0)
	pid, err := syscall.ForkExec(lookPath(prog.Args[0], prog.Env), prog.Args, &syscall.ProcAttr{
		Dir:   dir,
		Env:   prog.Env,
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		fail("exec", err)
	}
	// The output is the program's and its children's: the run's output
	// ends when the last of them closes it.
	for fd := 0; fd < 3; fd++ {
		unix.Close(fd)
	}
	for {
		var ws syscall.WaitStatus
		wpid, err := syscall.Wait4(-1, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			fail("wait", err)
		}
		if wpid != pid {
			continue // an orphan of the program
		}
		st := jailStatus{Exit: ws.ExitStatus()}
		if ws.Signaled() {
			st.Signal = int(ws.Signal())
			st.Exit = 128 + st.Signal
		}
		st.Alone = alone()
		report(st)
		if st.Alone {
			// Nothing is left to end: the exit, and the jail's teardown
			// with it, wait for the agent (endJail), after the answer.
			awaitClose(5)
		}
		// Exiting ends the jail: the kernel kills what the program left.
		os.Exit(0)
	}
}

// awaitClose waits until the write end of the pipe whose read end is fd
// is closed.
func awaitClose(fd int) {
	unix.SetNonblock(fd, false)
	var b [1]byte
	for {
		if n, err := unix.Read(fd, b[:]); err != unix.EINTR && n <= 0 {
			return
		}
	}
}

// readLine reads a JSON line into v.
func readLine(r *bufio.Reader, v any) error {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return err
	}
	return json.Unmarshal(line, v)
}

// placeFrom writes files into the workspace, and code files into code
// (a jail's /sandbox; nil: none may come), their contents read from r in
// order: the files of a run.
func placeFrom(r io.Reader, files []jailFile, code *root) error {
	var workspace *root
	defer func() {
		if workspace != nil {
			workspace.close()
		}
	}()
	for _, f := range files {
		dir, into := Workspace, workspace
		if f.Code {
			dir, into = SandboxDir, code
		}
		if f.Size < 0 || f.Size > agentproto.MaxFileSize || f.Mode > 0o777 || f.Code && code == nil {
			return fmt.Errorf("placing %s in %s: %w", f.Path, dir, errInvalid)
		}
		if into == nil {
			var err error
			if workspace, err = openRoot(Workspace); err != nil {
				return fmt.Errorf("placing files: %v", err)
			}
			into = workspace
		}
		src := io.LimitReader(r, f.Size)
		if err := into.writeFile(f.Path, f.Mode, src); err != nil {
			return fmt.Errorf("placing %s in %s: %v", f.Path, dir, err)
		}
		// What writeFile left unread (it failed) is not the next file's.
		if n, _ := io.Copy(io.Discard, src); n != 0 {
			return fmt.Errorf("placing %s in %s: short write", f.Path, dir)
		}
	}
	return nil
}

// SandboxDir is where a program's code is, read-only.
const SandboxDir = "/sandbox"

// jailCode is the tmpfs that holds a jail's code, mounted where the jail's
// root is assembled; the jail sees it read-only at /sandbox. The init
// keeps it open (code), to write the code when it comes: once the root is
// the jail's, nothing else reaches this mount.
const jailCode = "/tmp/.jail-code"

// jailRoot is where the jail's root is assembled before pivot_root, under
// a tmpfs private to the jail's mount namespace.
const jailRoot = "/tmp/.jail-root"

// buildJail makes the jail's root: the sandbox's own (read-only, as it is
// in the sandbox), with fresh /tmp, /workspace, /dev/shm, /dev/mqueue and
// /proc, that /proc masked as the sandbox's would be; brings up loopback
// in the new network namespace; and makes the root the jail's.
func buildJail(j agentproto.Jail) (code *root, err error) {
	size := "size=" + strconv.FormatInt(j.TmpfsBytes, 10)
	// The binds the fresh /tmp and /workspace would hide, held open before
	// anything is mounted over them, to be bound again in the jail.
	binds := make([]int, len(j.Binds))
	for i, p := range j.Binds {
		if !strings.HasPrefix(p, "/tmp/") && !strings.HasPrefix(p, Workspace+"/") || strings.Contains(p, "..") {
			return nil, fmt.Errorf("bind %q: not under /tmp or /workspace", p)
		}
		fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("bind %s: %w", p, err)
		}
		defer unix.Close(fd)
		binds[i] = fd
	}
	steps := []struct {
		what                 string
		source, target, kind string
		flags                uintptr
		data                 string
	}{
		{"private mounts", "", "/", "", unix.MS_REC | unix.MS_PRIVATE, ""},
		{"staging tmpfs", "tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "size=64k,mode=0755"},
	}
	for _, s := range steps {
		if err := unix.Mount(s.source, s.target, s.kind, s.flags, s.data); err != nil {
			return nil, fmt.Errorf("%s: %w", s.what, err)
		}
	}
	if err := os.Mkdir(jailRoot, 0o755); err != nil {
		return nil, err
	}
	if err := os.Mkdir(jailCode, 0o755); err != nil {
		return nil, err
	}
	r := jailRoot
	steps = []struct {
		what                 string
		source, target, kind string
		flags                uintptr
		data                 string
	}{
		{"root", "/", r, "", unix.MS_BIND | unix.MS_REC, ""},
		{"/proc", "proc", r + "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"/tmp", "tmpfs", r + "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, size + ",mode=1777"},
		{"/workspace", "tmpfs", r + Workspace, "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, size + ",mode=0700"},
		{"/dev/shm", "tmpfs", r + "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "size=65536k,mode=1777"},
		{"/dev/mqueue", "mqueue", r + "/dev/mqueue", "mqueue", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"the code's tmpfs", "tmpfs", jailCode, "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, size + ",mode=0755"},
		{"/sandbox", jailCode, r + SandboxDir, "", unix.MS_BIND, ""},
		{"/sandbox read-only", "", r + SandboxDir, "", unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV, ""},
	}
	for _, s := range steps {
		if err := unix.Mount(s.source, s.target, s.kind, s.flags, s.data); err != nil {
			return nil, fmt.Errorf("%s: %w", s.what, err)
		}
	}
	if code, err = openRoot(jailCode); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			code.close()
		}
	}()
	for i, p := range j.Binds {
		if err := bindAgain(binds[i], r+p); err != nil {
			return nil, fmt.Errorf("bind %s: %w", p, err)
		}
	}
	for _, p := range j.ProcMasked {
		if err := maskPath(r, p); err != nil {
			return nil, err
		}
	}
	procFlags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	for _, p := range j.ProcReadOnly {
		if err := readOnlyPath(r, p, procFlags); err != nil {
			return nil, err
		}
	}
	if err := loopbackUp(); err != nil {
		return nil, fmt.Errorf("loopback: %w", err)
	}
	if err := os.Chdir(r); err != nil {
		return nil, err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return nil, fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return nil, fmt.Errorf("detaching the old root: %w", err)
	}
	return code, os.Chdir("/")
}

// bindAgain binds what fd holds at target, making the mount point.
func bindAgain(fd int, target string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(target, nil, 0o644); err != nil {
			return err
		}
	}
	return unix.Mount("/proc/self/fd/"+strconv.Itoa(fd), target, "", unix.MS_BIND|unix.MS_REC, "")
}

// procPath checks that p names a place under /proc, as the masks do.
func procPath(p string) error {
	if !strings.HasPrefix(p, "/proc/") || strings.Contains(p, "..") {
		return fmt.Errorf("mask %q: not under /proc", p)
	}
	return nil
}

// maskPath hides a path of the jail's /proc: a file under /dev/null, a
// directory under an empty read-only tmpfs. A path that does not exist
// (on this kernel) needs no mask.
func maskPath(root, p string) error {
	if err := procPath(p); err != nil {
		return err
	}
	target := root + p
	fi, err := os.Lstat(target)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		err = unix.Mount("tmpfs", target, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=0")
	} else {
		err = unix.Mount(root+"/dev/null", target, "", unix.MS_BIND, "")
	}
	if err != nil {
		return fmt.Errorf("mask %s: %w", p, err)
	}
	return nil
}

// readOnlyPath makes a path of the jail's /proc read-only.
func readOnlyPath(root, p string, flags uintptr) error {
	if err := procPath(p); err != nil {
		return err
	}
	target := root + p
	if _, err := os.Lstat(target); os.IsNotExist(err) {
		return nil
	}
	if err := unix.Mount(target, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("read-only %s: %w", p, err)
	}
	if err := unix.Mount("", target, "", flags|unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("read-only %s: %w", p, err)
	}
	return nil
}

// loopbackUp brings up lo in the jail's network namespace, its only link.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// dropPrivileges leaves the jail's init without any capability and with
// no_new_privs, so that the program it starts has none either and can gain
// none; its memory and descriptors are closed to the program (not
// dumpable), which runs as the same user. The caller is locked to its
// thread, from which the program is forked: the bounding set, which only
// bounds what an exec may gain, is dropped on that thread; the other sets
// are emptied on every thread (one call each: a call on all threads stops
// the world).
func dropPrivileges() error {
	last := unix.CAP_LAST_CAP
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			last = n
		}
	}
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("bounding set, capability %d: %w", c, err)
		}
	}
	if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0); errno != 0 {
		return fmt.Errorf("ambient set: %w", errno)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); errno != 0 {
		return fmt.Errorf("capset: %w", errno)
	}
	// Inherited from the sandbox on every thread; set again on this one.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	return unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
}

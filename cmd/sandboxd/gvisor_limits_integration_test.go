//go:build integration

package main_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// The limits that gVisor's kernel would not hold by itself, tested on both
// runtimes: each one-shot (a cell, under runc) and in a session (a sandbox
// of its own), the two kinds of sandboxes a program runs in.

// onBothKinds runs code one-shot and in a session of rt's, and hands each
// result to check; then the session must still serve.
func onBothKinds(t *testing.T, rt, code string, check func(t *testing.T, res *api.ExecuteResult)) {
	t.Run("one-shot", func(t *testing.T) {
		check(t, execute(t, api.ExecuteRequest{Language: "python", Code: code, Runtime: rt, TimeoutMS: 60000}))
	})
	t.Run("session", func(t *testing.T) {
		s := createSession(t, socket, api.CreateSessionRequest{Language: "python", Runtime: rt})
		t.Cleanup(func() { request(socket, "DELETE", "/v1/sessions/"+s.ID, "", nil) })
		check(t, execute(t, api.ExecuteRequest{SessionID: s.ID, Code: code, TimeoutMS: 60000}))
		if res := execute(t, api.ExecuteRequest{SessionID: s.ID, Code: "print('alive')"}); res.Stdout != "alive\n" {
			t.Fatalf("the session after: %+v", res)
		}
	})
}

// threadProgram starts threads that wait until it has started 4,096 of
// them or one is refused.
const threadProgram = `
import threading
go = threading.Event()
threads = []
try:
    for _ in range(4096):
        t = threading.Thread(target=go.wait)
        t.start()
        threads.append(t)
    print("started", len(threads))
except RuntimeError as e:
    print("refused at", len(threads), e)
go.set()
for t in threads:
    t.join()
`

// TestThreadLimit starts more threads than the pids limit: on both
// runtimes the thread past it is refused (gVisor keeps the threads in its
// kernel, where the host's pids cgroup does not see them: RLIMIT_NPROC
// holds them there), and the sandbox and the daemon go on.
func TestThreadLimit(t *testing.T) {
	pids := info(t, socket).Limits.Pids
	forEachRuntime(t, func(t *testing.T, rt string, _ []string) {
		onBothKinds(t, rt, threadProgram, func(t *testing.T, res *api.ExecuteResult) {
			var n int
			var why string
			if _, err := fmt.Sscanf(res.Stdout, "refused at %d %s", &n, &why); err != nil || res.Status != api.StatusOK ||
				!strings.Contains(res.Stdout, "can't start new thread") {
				t.Fatalf("%d threads asked for under a pids limit of %d: %+v", 4096, pids, res)
			}
			// The limit counts every task of the sandbox: the agent's
			// threads and python's own are among them.
			if n >= int(pids) || n < int(pids)/2 {
				t.Errorf("refused at %d threads, want fewer than the pids limit (%d), and most of it", n, pids)
			}
			t.Logf("refused at %d threads", n)
		})
		if res := execute(t, api.ExecuteRequest{Language: "python", Code: "print('fine')", Runtime: rt}); res.Stdout != "fine\n" {
			t.Fatalf("after the threads: %+v", res)
		}
	})
}

// deviceProgram tries to make device nodes and other files in /tmp, opens
// the devices gVisor adds to /dev, and lists every device node under /dev.
const deviceProgram = `
import errno, os, socket, stat
def made(path, mode, dev=0, dir_fd=None):
    try:
        os.mknod(path, mode, dev, dir_fd=dir_fd)
        return "made"
    except OSError as e:
        return errno.errorcode[e.errno]
def show(what, result):
    print(what, result, sep="\t")
tmp = os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY)
show("block 8:0", made("/tmp/sda", stat.S_IFBLK | 0o600, os.makedev(8, 0)))
show("char 1:1", made("/tmp/mem", stat.S_IFCHR | 0o600, os.makedev(1, 1)))
show("char 10:229", made("fuse", stat.S_IFCHR | 0o666, os.makedev(10, 229), dir_fd=tmp))
show("char 10:200", made("tun", stat.S_IFCHR | 0o666, os.makedev(10, 200), dir_fd=tmp))
os.mkfifo("/tmp/fifo")
show("fifo", stat.S_ISFIFO(os.stat("/tmp/fifo").st_mode))
show("regular", made("/tmp/reg", stat.S_IFREG | 0o644))
s = socket.socket(socket.AF_UNIX)
s.bind("/tmp/sock")
show("socket", stat.S_ISSOCK(os.stat("/tmp/sock").st_mode))
for path in ["/dev/fuse", "/dev/net/tun"]:
    try:
        os.close(os.open(path, os.O_RDWR))
        show(path, "opened")
    except OSError as e:
        show(path, errno.errorcode[e.errno])
devices = []
for root, dirs, files in os.walk("/dev"):
    for name in dirs + files:
        st = os.lstat(os.path.join(root, name))
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            devices.append("%s:%d:%d" % (os.path.join(root, name), os.major(st.st_rdev), os.minor(st.st_rdev)))
show("devices", " ".join(sorted(devices)))
`

// runcDevices are the device numbers a runc sandbox's /dev has: null,
// zero, full, random, urandom, tty and the pts's ptmx.
var runcDevices = []string{"1:3", "1:5", "1:7", "1:8", "1:9", "5:0", "5:2"}

// TestDeviceNodes checks that no program makes a device node, on either
// runtime (gVisor's kernel would, and ignores nodev: the node would open
// the device), while FIFOs, regular files and sockets are made as ever;
// and that a sandbox's /dev has no device beyond runc's (gVisor's has FUSE
// and TUN, which are covered).
func TestDeviceNodes(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, _ []string) {
		onBothKinds(t, rt, deviceProgram, func(t *testing.T, res *api.ExecuteResult) {
			if res.Status != api.StatusOK {
				t.Fatalf("%+v", res)
			}
			got := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(res.Stdout), "\n") {
				what, result, _ := strings.Cut(line, "\t")
				got[what] = result
			}
			for what, want := range map[string]string{
				"block 8:0": "EPERM", "char 1:1": "EPERM", "char 10:229": "EPERM", "char 10:200": "EPERM",
				"fifo": "True", "regular": "made", "socket": "True",
			} {
				if got[what] != want {
					t.Errorf("%s: %q, want %s", what, got[what], want)
				}
			}
			// Absent under runc; under gVisor /dev/net is an empty
			// directory, and /dev/fuse one that nobody may open.
			for _, dev := range []string{"/dev/fuse", "/dev/net/tun"} {
				if g := got[dev]; g != "ENOENT" && g != "EACCES" {
					t.Errorf("%s: %q, want it absent or unopenable", dev, g)
				}
			}
			devices := strings.Fields(got["devices"])
			if !slices.Contains(devices, "/dev/null:1:3") {
				t.Fatalf("no /dev/null among the devices: %q", res.Stdout)
			}
			for _, d := range devices {
				if number := d[strings.IndexByte(d, ':')+1:]; !slices.Contains(runcDevices, number) {
					t.Errorf("device %s: not one of runc's", d)
				}
			}
		})
	})
}

// privilegeProgram says whether no_new_privs is set, then runs su, which
// is setuid root on the host's /usr, and reads its uids from /proc while
// it waits for a password.
const privilegeProgram = `
import ctypes, os, subprocess, time
libc = ctypes.CDLL(None, use_errno=True)
print("no_new_privs", libc.prctl(39, 0, 0, 0, 0))  # PR_GET_NO_NEW_PRIVS
st = os.stat("/usr/bin/su")
print("su mode %o uid %d" % (st.st_mode & 0o7777, st.st_uid))
p = subprocess.Popen(["/usr/bin/su", "root", "-c", "id"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
uids = "none: su did not run"
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        status = open("/proc/%d/status" % p.pid).read().splitlines()
    except OSError:
        break
    if status[0] == "Name:\tsu":
        uids = [l for l in status if l.startswith("Uid:")][0]
        break
    time.sleep(0.01)
p.kill()
p.wait()
print(uids.replace("\t", " "))
`

// TestNoPrivilegeGain checks that a setuid-root binary gains nothing:
// runc's sandboxes mount the host's /usr nosuid and set no_new_privs;
// gVisor shows neither (no nosuid in its mountinfo, no NoNewPrivs line in
// its /proc), so this asks what docs/security.md says holds there.
func TestNoPrivilegeGain(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, _ []string) {
		onBothKinds(t, rt, privilegeProgram, func(t *testing.T, res *api.ExecuteResult) {
			want := "no_new_privs 1\nsu mode 4755 uid 0\nUid: 65534 65534 65534 65534\n"
			if rt == "runc" && res.SessionID == "" {
				// A cell's jail maps no uid but 65534: root's files are
				// the overflow uid's there, and su is set-user-ID to it.
				want = strings.Replace(want, "uid 0", "uid 65534", 1)
			}
			if res.Stdout != want {
				t.Errorf("stdout %q, want %q (stderr %q)", res.Stdout, want, res.Stderr)
			}
		})
	})
}

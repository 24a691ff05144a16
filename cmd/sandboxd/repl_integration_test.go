//go:build integration

package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// ptyProc is sandboxctl run on a pseudo-terminal, as from a shell: the
// leader of its own session with the pty as its controlling terminal, so
// that the line discipline turns ^C into SIGINT and ^D into the end of
// its input.
type ptyProc struct {
	master *os.File
	exited chan error

	mu  sync.Mutex
	out []byte
	pos int // how far expect has read
	// ended: the program closed the terminal (it exited), and out holds
	// all it wrote.
	ended bool
}

// startOnPty runs sandboxctl with args on a new pseudo-terminal, against
// the suite's daemon.
func startOnPty(t *testing.T, args ...string) *ptyProc {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetUint32(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("ptsname: %v", err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := cli{}.command(args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	err = startProc(cmd)
	// The child holds the slave now: once it exits, reads of the master
	// fail and the reader ends.
	slave.Close()
	if err != nil {
		t.Fatal(err)
	}
	p := &ptyProc{master: master, exited: make(chan error, 1)}
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			p.mu.Lock()
			p.out = append(p.out, buf[:n]...)
			p.ended = err != nil
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return p
}

// send types s.
func (p *ptyProc) send(t *testing.T, s string) {
	t.Helper()
	if _, err := p.master.Write([]byte(s)); err != nil {
		t.Fatalf("type %q: %v", s, err)
	}
}

// expect waits for s in what the terminal shows after what the last
// expect found, and returns what came before it.
func (p *ptyProc) expect(t *testing.T, s string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		p.mu.Lock()
		from := p.pos
		i := strings.Index(string(p.out[from:]), s)
		if i >= 0 {
			p.pos += i + len(s)
		}
		seen, ended := string(p.out), p.ended
		p.mu.Unlock()
		if i >= 0 {
			return seen[from : from+i]
		}
		if ended {
			t.Fatalf("the terminal never showed %q: the program ended; it shows:\n%s", s, seen)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the terminal never showed %q within %v; it shows:\n%s", s, within, seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// awaitExit waits for sandboxctl to end, and fails the test unless it
// exited 0.
func (p *ptyProc) awaitExit(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case err := <-p.exited:
		if err != nil {
			t.Errorf("sandboxctl ended with %v", err)
		}
	case <-time.After(within):
		t.Fatalf("sandboxctl did not end within %v", within)
	}
}

// listed reports whether the suite's daemon lists session id.
func listed(t *testing.T, id string) bool {
	t.Helper()
	status, body := request(socket, "GET", "/v1/sessions", "", nil)
	var list api.SessionsResponse
	if status != 200 || json.Unmarshal(body, &list) != nil {
		t.Fatalf("list sessions: %d %s", status, body)
	}
	for _, s := range list.Sessions {
		if s.ID == id {
			return true
		}
	}
	return false
}

var bannerSession = regexp.MustCompile(`in sandboxd session ([0-9a-f]+)\r\n`)

// replSession reads the session id from the REPL's banner.
func replSession(t *testing.T, p *ptyProc) string {
	t.Helper()
	p.expect(t, "Ctrl-C interrupts a cell.\r\n", 60*time.Second)
	p.mu.Lock()
	m := bannerSession.FindSubmatch(p.out)
	p.mu.Unlock()
	if m == nil {
		t.Fatalf("no session id in the banner:\n%s", p.out)
	}
	return string(m[1])
}

// TestReplPython types into `sandboxctl repl -l python` on a terminal: a
// function defined over several lines, then called; Ctrl-C during a long
// sleep gives the prompt back at once, and the function defined before
// is still there; Ctrl-D ends the REPL and deletes its session.
func TestReplPython(t *testing.T) {
	p := startOnPty(t, "repl", "-l", "python")
	id := replSession(t, p)
	p.expect(t, ">>> ", 10*time.Second)
	if !listed(t, id) {
		t.Fatalf("session %s is not listed while the REPL runs", id)
	}

	p.send(t, "def double(x):\n")
	p.expect(t, "\r\n... ", 10*time.Second)
	p.send(t, "    return x * 2\n")
	p.expect(t, "\r\n... ", 10*time.Second)
	p.send(t, "\n")
	p.expect(t, "\r\n>>> ", 30*time.Second)
	p.send(t, "double(21)\n")
	p.expect(t, "double(21)\r\n42\r\n>>> ", 30*time.Second)

	p.send(t, "import time; print('sleeping', flush=True); time.sleep(30)\n")
	p.expect(t, "sleeping\r\n", 30*time.Second)
	interrupted := time.Now()
	p.send(t, "\x03")
	p.expect(t, "KeyboardInterrupt\r\n>>> ", 20*time.Second)
	// Well before the sleep's end, and before the daemon's default
	// timeout (30 s) could have ended the cell instead.
	if took := time.Since(interrupted); took > 15*time.Second {
		t.Errorf("Ctrl-C took %v to give the prompt back", took)
	}

	// The state survived the interrupt.
	p.send(t, "double(4)\n")
	if before := p.expect(t, "double(4)\r\n8\r\n>>> ", 30*time.Second); strings.Contains(before, "restarted") {
		t.Errorf("the interrupt lost the interpreter's state:\n%s", before)
	}
	if s := showSession(t, socket, id); s.Interpreter == nil || s.Interpreter.State != api.InterpreterKept || s.Interpreter.Restarts != 0 {
		t.Errorf("the session's interpreter after the interrupt: %+v", s.Interpreter)
	}

	p.send(t, "\x04")
	p.awaitExit(t, 30*time.Second)
	if listed(t, id) {
		t.Errorf("session %s is still listed after Ctrl-D", id)
	}
}

// TestReplJavascript: a function over several lines, its braces telling
// the REPL when the input is complete, then called; --keep keeps the
// session after Ctrl-D.
func TestReplJavascript(t *testing.T) {
	p := startOnPty(t, "repl", "-l", "javascript", "--keep")
	id := replSession(t, p)
	p.expect(t, "> ", 10*time.Second)

	p.send(t, "function double(x) {\n")
	p.expect(t, "\r\n... ", 10*time.Second)
	p.send(t, "  return x * 2\n")
	p.expect(t, "\r\n... ", 10*time.Second)
	p.send(t, "}\n")
	p.expect(t, "}\r\n> ", 30*time.Second)
	p.send(t, "double(21)\n")
	p.expect(t, "double(21)\r\n42\r\n> ", 30*time.Second)

	p.send(t, "\x04")
	p.expect(t, "session "+id+" kept", 30*time.Second)
	p.awaitExit(t, 30*time.Second)
	if !listed(t, id) {
		t.Fatalf("session %s is gone after a REPL with --keep", id)
	}
	if status, body := request(socket, "DELETE", "/v1/sessions/"+id, "", nil); status != 204 {
		t.Errorf("delete session %s: %d %s", id, status, body)
	}
}

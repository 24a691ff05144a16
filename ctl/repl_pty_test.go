package ctl_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// terminal is a program run on a pseudo-terminal, as a shell runs it: the
// leader of its own session, the pty its controlling terminal, so that
// the line discipline turns ^C into SIGINT and ^D into the end of input.
type terminal struct {
	master *os.File
	cmd    *exec.Cmd
	exited chan error

	mu  sync.Mutex
	out []byte
	pos int // how far expect has read
	// ended: the program closed the terminal (it exited), and out holds
	// all it wrote.
	ended bool
}

// openPty opens a pseudo-terminal pair with the standard library and
// ioctls: /dev/ptmx, unlocked, and the slave it names.
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close() })
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("ptsname: %v", err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return master, slave
}

// startTerminal runs bin with args on a new pseudo-terminal.
func startTerminal(t *testing.T, bin string, args ...string) *terminal {
	t.Helper()
	master, slave := openPty(t)
	cmd := exec.Command(bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The child holds the slave now: once it exits, reads of the master
	// fail and the reader ends.
	slave.Close()
	term := &terminal{master: master, cmd: cmd, exited: make(chan error, 1)}
	go func() { term.exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			term.mu.Lock()
			term.out = append(term.out, buf[:n]...)
			term.ended = err != nil
			term.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return term
}

// send types s.
func (term *terminal) send(t *testing.T, s string) {
	t.Helper()
	if _, err := term.master.Write([]byte(s)); err != nil {
		t.Fatalf("type %q: %v", s, err)
	}
}

// expect waits for s in what the terminal shows after what the last
// expect found.
func (term *terminal) expect(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		term.mu.Lock()
		i := strings.Index(string(term.out[term.pos:]), s)
		if i >= 0 {
			term.pos += i + len(s)
		}
		seen, ended := string(term.out), term.ended
		term.mu.Unlock()
		if i >= 0 {
			return
		}
		if ended {
			t.Fatalf("the terminal never showed %q: the program ended; it shows:\n%s", s, seen)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the terminal never showed %q; it shows:\n%s", s, seen)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// buildSandboxctl builds the real sandboxctl into a temporary directory.
func buildSandboxctl(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sandboxctl")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/sandboxd/sandboxd/cmd/sandboxctl").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestReplTerminal types into sandboxctl repl on a terminal: a function
// defined over several lines then called; Ctrl-C during a cell, which
// leaves the request (the daemon interrupts the cell) and gives the prompt
// back; Ctrl-C at the prompt, which drops the input typed so far; an
// exception; Ctrl-D, which ends the REPL and deletes the session.
func TestReplTerminal(t *testing.T) {
	f := startFakeInterpreter(t)
	term := startTerminal(t, buildSandboxctl(t), "--socket", f.sock, "repl", "-l", "python")
	id := f.sessionID(1)
	term.expect(t, "python 3.11.2 in sandboxd session "+id+"\r\n")
	term.expect(t, "Ctrl-D leaves and deletes the session; Ctrl-C interrupts a cell.\r\n>>> ")

	term.send(t, "def double(x):\n")
	term.expect(t, "\r\n... ")
	term.send(t, "    return x * 2\n")
	term.expect(t, "\r\n... ")
	term.send(t, "\n")
	term.expect(t, "\r\n>>> ")
	term.send(t, "double(21)\n")
	term.expect(t, "double(21)\r\n42\r\n>>> ")

	term.send(t, "slow()\n")
	term.expect(t, "working\r\n")
	term.send(t, "\x03")
	select {
	case <-f.interrupted:
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon never saw the client leave the cell")
	}
	term.expect(t, "^C\r\nKeyboardInterrupt\r\n>>> ")
	term.send(t, "double(21)\n")
	term.expect(t, "double(21)\r\n42\r\n>>> ")

	term.send(t, "def g():\n")
	term.expect(t, "\r\n... ")
	term.send(t, "partial")
	term.expect(t, "partial")
	term.send(t, "\x03")
	term.expect(t, "^C\r\nKeyboardInterrupt\r\n>>> ")
	term.send(t, "1+1\n")
	term.expect(t, "1+1\r\n2\r\n>>> ")

	term.send(t, "1/0\n")
	term.expect(t, "1/0\r\nTraceback (most recent call last):\r\n")
	term.expect(t, "ZeroDivisionError: division by zero\r\n>>> ")

	term.send(t, "\x04")
	select {
	case err := <-term.exited:
		if err != nil {
			t.Errorf("sandboxctl repl ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Ctrl-D did not end the REPL")
	}
	cells, deleted, _ := f.recorded()
	if want := []string{"def double(x):\n    return x * 2\n", "double(21)\n", "slow()\n", "double(21)\n", "1+1\n", "1/0\n"}; !slices.Equal(cells, want) {
		t.Errorf("cells %q, want %q", cells, want)
	}
	if !slices.Equal(deleted, []string{id}) {
		t.Errorf("deleted %q, want %q", deleted, id)
	}
}

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A request torn by a daemon's death (a half-written line, or files that
// stop coming) is skipped, and the next daemon's newline and sync get
// through: the agent is never wedged by what an earlier daemon left.
func TestReadSkipsTornRequests(t *testing.T) {
	const requestStall = 300 * time.Millisecond
	// Blocking, as the agent's stdin is, and kept: newStallReader takes
	// a File of its own for the descriptor, and two Files left to the
	// collector would close its number twice, the second time another
	// test's.
	r, w := blockingPipe(t)
	defer w.Close()
	out := &syncBuffer{}
	a := &agent{out: json.NewEncoder(out)}
	reqs := make(chan agentproto.Request)
	src := newStallReader(r, requestStall)
	go a.read(src, bufio.NewReaderSize(src, 1<<20), reqs)
	next := func() agentproto.Request {
		t.Helper()
		select {
		case req, ok := <-reqs:
			if !ok {
				t.Fatalf("the request stream ended; frames: %s", out)
			}
			return req
		case <-time.After(5 * time.Second):
			t.Fatalf("no request; frames: %s", out)
		}
		return agentproto.Request{}
	}
	// Files that stop coming: skipped after the stall bound.
	io.WriteString(w, `{"args":["cat"],"files":[{"path":"f","size":100,"mode":420}]}`+"\n"+"only ten b")
	time.Sleep(2 * requestStall)
	if !strings.Contains(out.String(), "request skipped") {
		t.Fatalf("a stalled request was not skipped: %q", out)
	}
	io.WriteString(w, "\n"+`{"kill":true,"sync":"one"}`+"\n")
	if req := next(); req.Sync != "one" || !req.Kill {
		t.Fatalf("after a stalled request: %+v", req)
	}
	// A half-written line, then the next daemon's newline and sync.
	io.WriteString(w, `{"args":["ec`)
	io.WriteString(w, "\n"+`{"sync":"two"}`+"\n")
	if req := next(); req.Sync != "two" {
		t.Fatalf("after a torn line: %+v", req)
	}
	// A whole request with files still reads whole, however slowly it
	// comes, as long as it keeps coming.
	go func() {
		io.WriteString(w, `{"args":["cat"],"files":[{"path":"f","size":6,"mode":420}]}`+"\n")
		for _, b := range []string{"ab", "cd", "ef"} {
			time.Sleep(requestStall / 2)
			io.WriteString(w, b)
		}
	}()
	if req := next(); len(req.Files) != 1 || string(req.Files[0].Data) != "abcdef" {
		t.Fatalf("a slow whole request: %+v", req)
	}
	// The end of the stream ends reading.
	w.Close()
	select {
	case _, ok := <-reqs:
		if ok {
			t.Fatal("a request after the end of the stream")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reading goes on after the end of the stream")
	}
}

// A jail's init answers at once only when it is alone: a child still
// running, or one exited and not yet reaped, is not; once every child is
// reaped, it is.
func TestJailInitAlone(t *testing.T) {
	if !alone() {
		t.Fatal("not alone with no child")
	}
	pid, err := syscall.ForkExec("/bin/sleep", []string{"sleep", "30"}, &syscall.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	if alone() {
		t.Error("alone while a child runs")
	}
	syscall.Kill(pid, syscall.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); !alone(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not alone once the child was killed")
		}
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); err != syscall.ECHILD {
		t.Errorf("the killed child was not reaped: %v", err)
	}
}

// A jail's init that is alone once its program has ended waits, on the
// pipe whose other end the agent holds (non-blocking or not), until the
// agent closes it; then it goes on to exit.
func TestJailInitAwaitsClose(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fd, err := syscall.Dup(int(r.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	syscall.SetNonblock(fd, true)
	done := make(chan struct{})
	go func() {
		awaitClose(fd)
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("the init went on while the agent held its pipe")
	case <-time.After(200 * time.Millisecond):
	}
	w.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the init still waits once the agent closed its pipe")
	}
}

// eachPid, which the clean check reads /proc with, sees every numeric
// entry of a directory, over as many reads as its buffer needs, and no
// other; and it sees this process in /proc.
func TestEachPid(t *testing.T) {
	if off := unsafe.Offsetof(unix.Dirent{}.Name); off != direntName {
		t.Fatalf("linux_dirent64's name is at %d, not %d", off, direntName)
	}
	dir := t.TempDir()
	want := map[int]bool{}
	for i := range 200 {
		pid := i*7919 + 1
		want[pid] = true
		for _, name := range []string{strconv.Itoa(pid), "x" + strconv.Itoa(pid), strconv.Itoa(pid) + "-"} {
			if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, name := range []string{"self", "12345678901", "0x10", "١٢"} {
		os.WriteFile(filepath.Join(dir, name), nil, 0o644)
	}
	got := map[int]bool{}
	// A buffer of a few records: the directory takes many reads.
	if err := eachPid(dir, make([]byte, 512), func(pid int) bool { got[pid] = true; return true }); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, want) {
		t.Errorf("eachPid saw %d pids, want %d: %v", len(got), len(want), got)
	}
	seen := 0
	eachPid(dir, make([]byte, 512), func(int) bool { seen++; return seen < 3 })
	if seen != 3 {
		t.Errorf("eachPid went on after visit said stop: %d visits", seen)
	}
	self := false
	if err := eachPid("/proc", make([]byte, 8<<10), func(pid int) bool { self = self || pid == os.Getpid(); return true }); err != nil || !self {
		t.Errorf("eachPid(/proc) did not see this process (%d): %v", os.Getpid(), err)
	}
	// On the host, more than one process runs.
	if new(agent).cellClean(0) {
		t.Error("cellClean found the host clean")
	}
}

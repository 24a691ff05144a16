package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
)

// The agent protocol, one JSON object per line on PID 1's stdin and
// stdout. sandboxd writes a request; the agent answers with output frames
// and one exit frame. A kill request ends the running program early.
//
// Nothing here is a boundary: the agent runs as the sandbox's user, under
// its seccomp profile and limits, and its channel reaches only sandboxd.

type agent struct {
	mu     sync.Mutex
	out    *json.Encoder
	exited chan syscall.WaitStatus // the running program's status
	pid    int
}

func (a *agent) send(f agentproto.Frame) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.out.Encode(f)
}

// runAgent is PID 1 of sandboxes that sandboxd drives through stdio.
func runAgent() {
	// Same-user processes may not read or write this process's memory or
	// open its file descriptors through /proc.
	syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0)
	// The kernel shields PID 1 from its namespace's signals only while it
	// has no handler; Go installs handlers (and dies of a SIGSEGV sent by
	// kill). Taking every signal here keeps programs from killing it.
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs)
	chld := make(chan os.Signal, 16)
	go func() {
		for sig := range sigs {
			if sig == syscall.SIGCHLD {
				select {
				case chld <- sig:
				default:
				}
			}
		}
	}()
	a := &agent{out: json.NewEncoder(os.Stdout)}
	go a.reap(chld)
	reqs := make(chan agentproto.Request)
	go func() {
		in := bufio.NewReaderSize(os.Stdin, 1<<20)
		for {
			req, err := agentproto.ReadRequest(in)
			if err != nil {
				if err != io.EOF {
					// A broken stream cannot be resynchronized.
					a.send(agentproto.Frame{Error: "bad request: " + err.Error()})
				}
				close(reqs)
				return
			}
			reqs <- req
		}
	}()
	for req := range reqs {
		if req.Exit {
			os.Exit(0)
		}
		if req.Kill {
			killOthers()
			continue
		}
		if len(req.Collect) > 0 {
			a.collect(req)
			continue
		}
		if req.StdinData != nil || req.StdinClose {
			continue // input for a run that is over
		}
		if len(req.Args) == 0 {
			a.send(agentproto.Frame{Error: "a request without args"})
			continue
		}
		if !a.run(req, reqs) {
			break
		}
	}
	// sandboxd is gone for good: stay as a plain init, so that processes
	// it execs in the sandbox still have their reaper.
	select {}
}

// reap collects every child: the running program (whose status is
// reported) and the orphans it leaves.
func (a *agent) reap(chld chan os.Signal) {
	for range chld {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
			a.mu.Lock()
			if pid == a.pid && a.exited != nil {
				a.exited <- ws
			}
			a.mu.Unlock()
		}
	}
}

// run runs one program, streaming its output, and answers kill requests
// that arrive meanwhile. It returns false when the request stream ended.
func (a *agent) run(req agentproto.Request, reqs <-chan agentproto.Request) bool {
	fail := func(err error) bool {
		code := 127
		a.send(agentproto.Frame{Exit: &code, Error: err.Error()})
		return true
	}
	if err := place(req.Files); err != nil {
		return fail(err)
	}
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	dir := req.Dir
	if dir == "" {
		dir = Workspace
	}
	exited := make(chan syscall.WaitStatus, 1)
	a.mu.Lock()
	a.exited = exited
	pid, err := syscall.ForkExec(lookPath(req.Args[0], req.Env), req.Args, &syscall.ProcAttr{
		Dir:   dir,
		Env:   req.Env,
		Files: []uintptr{stdinR.Fd(), outW.Fd(), errW.Fd()},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	a.pid = pid
	a.mu.Unlock()
	stdinR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		stdinW.Close()
		outR.Close()
		errR.Close()
		return fail(err)
	}
	// The program's stdin is fed in order, never blocking this loop: the
	// queue is bounded by what sandboxd lets a caller send.
	stdinQ := newQueue()
	go func() {
		defer stdinW.Close()
		for {
			chunk, ok := stdinQ.pop()
			if !ok {
				return
			}
			if _, err := stdinW.Write(chunk); err != nil {
				return // the program closed its stdin
			}
		}
	}()
	stdinQ.push(req.Stdin)
	stdinOpen := req.StdinLive
	if !stdinOpen {
		stdinQ.close()
	}
	var drained sync.WaitGroup
	for stream, r := range map[int]*os.File{agentproto.Stdout: outR, agentproto.Stderr: errR} {
		drained.Add(1)
		go func() {
			defer drained.Done()
			defer r.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := r.Read(buf)
				if n > 0 {
					a.send(agentproto.Frame{Stream: stream, Data: append([]byte(nil), buf[:n]...)})
				}
				if err != nil {
					return
				}
			}
		}()
	}
	// Kill requests may come while the program runs.
	open := true
	var ws syscall.WaitStatus
wait:
	for {
		select {
		case ws = <-exited:
			break wait
		case next, ok := <-reqs:
			if !ok {
				// sandboxd left in the middle: nobody wants this run.
				open, reqs = false, nil
				killOthers()
			} else if next.Exit {
				os.Exit(0)
			} else if next.Kill {
				killOthers()
			} else if stdinOpen && (len(next.StdinData) > 0 || next.StdinClose) {
				stdinQ.push(next.StdinData)
				if next.StdinClose {
					stdinOpen = false
					stdinQ.close()
				}
			}
		}
	}
	stdinQ.close()
	if req.Last || !open {
		// Orphans would hold the output open; the execution is over.
		killOthers()
	}
	drained.Wait()
	a.mu.Lock()
	a.exited, a.pid = nil, 0
	a.mu.Unlock()
	f := agentproto.Frame{}
	code := ws.ExitStatus()
	if ws.Signaled() {
		f.Signal = int(ws.Signal())
		code = 128 + f.Signal
	}
	f.Exit = &code
	a.send(f)
	return open
}

// collect answers a collect request: one frame a file, then an exit frame;
// or, when a matched file cannot be read, only an exit frame with the error.
func (a *agent) collect(req agentproto.Request) {
	files, err := collect(req.Collect, req.CollectMax)
	code := 0
	f := agentproto.Frame{Exit: &code}
	if err != nil {
		code, f.Error = 1, err.Error()
	}
	for i := range files {
		a.send(agentproto.Frame{File: &files[i]})
	}
	a.send(f)
}

// place writes a request's files into the workspace.
func place(files []agentproto.File) error {
	if len(files) == 0 {
		return nil
	}
	r, err := openRoot(Workspace)
	if err != nil {
		return fmt.Errorf("placing files: %v", err)
	}
	defer r.close()
	for _, f := range files {
		if err := r.writeFile(f.Path, f.Mode, bytes.NewReader(f.Data)); err != nil {
			return fmt.Errorf("placing %s in /workspace: %v", f.Path, err)
		}
	}
	return nil
}

// killOthers kills every process the sandbox's user runs but this one.
// kill(-1) is atomic against fork: nothing escapes by forking.
func killOthers() {
	syscall.Kill(-1, syscall.SIGKILL)
}

// queue is an unbounded FIFO of byte chunks.
type queue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	chunks [][]byte
	closed bool
}

func newQueue() *queue {
	q := &queue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *queue) push(b []byte) {
	if len(b) == 0 {
		return
	}
	q.mu.Lock()
	q.chunks = append(q.chunks, b)
	q.mu.Unlock()
	q.cond.Signal()
}

func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Signal()
}

// pop waits for a chunk; false once closed and drained.
func (q *queue) pop() ([]byte, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.chunks) == 0 && !q.closed {
		q.cond.Wait()
	}
	if len(q.chunks) == 0 {
		return nil, false
	}
	b := q.chunks[0]
	q.chunks = q.chunks[1:]
	return b, true
}

// lookPath finds a command named without a slash in the PATH of the
// program's environment, as a shell would: languages from images name
// their tools so, for the image's PATH to find them.
func lookPath(name string, env []string) string {
	if strings.Contains(name, "/") {
		return name
	}
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return name // ForkExec then fails with "no such file", which is the answer
}

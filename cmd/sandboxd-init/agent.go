package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
)

// The agent protocol, one JSON object per line on PID 1's stdin and
// stdout, or in a cell on its socket (channel). sandboxd writes a
// request; the agent answers with output frames and one exit frame. A kill
// request ends the running program early; a sync request is answered once
// everything before it is.
//
// Nothing here is a boundary: the agent runs as the sandbox's user, under
// its seccomp profile and limits, and its channel reaches only sandboxd.

type agent struct {
	mu  sync.Mutex
	out *json.Encoder
	// waits holds, by pid, where a started child's status goes.
	waits map[int]chan syscall.WaitStatus
	// next is a jail built ahead, waiting for its program (prepare). The
	// request loop alone uses it, and interp.
	next *child
	// ending is the last run's jail, whose end is to come (endJail). The
	// request loop alone uses it.
	ending *child
	// interp is an interpreter session's interpreter, once started;
	// starts counts those started.
	interp *interp
	starts int64
	// outBufs are the buffers a run's stdout and stderr are read into,
	// one each, kept from run to run (run): a fresh 64 KiB each run was
	// zeroed, page by page, as the program started.
	outBufs [3][]byte
	// procBuf is what cellClean reads /proc's entries into.
	procBuf [8 << 10]byte
}

// proc is a process the agent started, whose status the reaper hands on.
type proc struct {
	pid    int
	exited chan syscall.WaitStatus // its status, once reaped
}

func newProc() proc { return proc{exited: make(chan syscall.WaitStatus, 1)} }

// ended reports whether p has exited; its status stays for a receive.
func (p *proc) ended() bool {
	select {
	case ws := <-p.exited:
		p.exited <- ws
		return true
	default:
		return false
	}
}

// wait returns p's status, once it has exited; it stays for a receive.
func (p *proc) wait() syscall.WaitStatus {
	ws := <-p.exited
	p.exited <- ws
	return ws
}

// child is a program, or a jail's init, that the agent started, with the
// agent's ends of its stdio.
type child struct {
	proc
	stdin  *os.File
	stdout *os.File
	stderr *os.File
	// A jail's init: the pipe its status comes on, the one its program is
	// handed over on, and the jail it builds.
	status  *os.File
	program *os.File
	jail    agentproto.Jail
	// statusLines reads status; built is closed once its first line is
	// in: the jail is built, or early is why it never was.
	statusLines *bufio.Reader
	built       chan struct{}
	early       *jailStatus
	// mounts holds the jail's mount namespace, whose teardown (tens of
	// mounts) would otherwise come with its init's exit, before the run's
	// answer: it comes when this is closed, after.
	mounts *os.File
	// hold keeps a jail's init, alone in its jail once its program has
	// ended, from exiting until it is closed (endJail).
	hold *os.File
}

// close closes the agent's ends of c's pipes.
func (c *child) close() {
	for _, f := range []*os.File{c.stdin, c.stdout, c.stderr, c.status, c.program, c.mounts, c.hold} {
		if f != nil {
			f.Close()
		}
	}
}

func (a *agent) send(f agentproto.Frame) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.out.Encode(f)
}

// runAgent is PID 1 of sandboxes that sandboxd drives through stdio, or a
// cell's socket (channel).
func runAgent() {
	// Same-user processes may not read or write this process's memory or
	// open its file descriptors through /proc.
	syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0)
	// Before any program can fill the sandbox's task limit (threads.go).
	boundThreads()
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
	a := &agent{waits: map[int]chan syscall.WaitStatus{}}
	go a.reap(chld)
	src, in, out := agentChannel()
	a.out = json.NewEncoder(out)
	reqs := make(chan agentproto.Request)
	go a.read(src, in, reqs)
	for req := range reqs {
		// Whatever comes next waits for the last jail's end.
		a.endJail()
		switch {
		case req.Exit:
			os.Exit(0)
		case req.Kill || req.Sync != "":
			if req.Kill {
				a.killOthers()
			}
			if req.Sync != "" {
				a.send(agentproto.Frame{Sync: req.Sync})
			}
		case req.Prepare:
			if req.Jail != nil {
				a.prepare(*req.Jail, req.PrepareID)
			}
		case len(req.Collect) > 0:
			a.collect(req)
		case req.WriteFiles:
			a.done(writeFiles(req.Files))
		case req.ReadFile != "":
			a.done(a.readFile(req.ReadFile, req.ReadMax))
		case req.ListFiles:
			a.done(a.listFiles())
		case req.StdinData != nil || req.StdinClose:
			// input for a run that is over
		case len(req.Args) == 0:
			a.send(agentproto.Frame{Error: "a request without args"})
		case req.Cell != nil:
			if !a.runCell(req, reqs) {
				select {} // as below
			}
		default:
			if !a.run(req, reqs) {
				// sandboxd is gone for good: stay as a plain init, so
				// that the sandbox's orphans still have their reaper.
				select {}
			}
		}
	}
	select {}
}

// read reads requests until the stream ends. A malformed request, or one
// whose files stop coming (its daemon died while writing it), is skipped:
// reading goes on at the next line, where a daemon that attaches anew
// starts with a newline and a sync request.
func (a *agent) read(src *stallReader, in *bufio.Reader, reqs chan<- agentproto.Request) {
	defer close(reqs)
	for {
		req, err := agentproto.ReadRequestLine(in)
		if err == nil && len(req.Files) > 0 {
			src.arm(true)
			err = agentproto.ReadFiles(in, &req)
			src.arm(false)
		}
		switch {
		case err == nil:
			reqs <- req
		case errors.Is(err, agentproto.ErrMalformed) || errors.Is(err, os.ErrDeadlineExceeded):
			a.send(agentproto.Frame{Error: "request skipped: " + err.Error()})
		default:
			if err != io.EOF {
				a.send(agentproto.Frame{Error: "request stream: " + err.Error()})
			}
			return
		}
	}
}

// requestStall bounds the wait for the rest of a request's files: sandboxd
// writes them at once, from memory, so a request that stalls this long was
// torn by its daemon's death.
const requestStall = 10 * time.Second

// stallReader reads the agent's channel, bounding each read by stall
// while armed. Where stdin cannot take a deadline, reads are unbounded.
type stallReader struct {
	f interface {
		io.Reader
		SetReadDeadline(time.Time) error
	}
	stall time.Duration
	armed bool
}

// newStallReader takes stdin, a blocking descriptor that nothing else
// reads from: the file it returns shares it.
func newStallReader(stdin *os.File, stall time.Duration) *stallReader {
	// A deadline needs a descriptor that Go's poller holds, which it takes
	// only in non-blocking mode.
	if err := syscall.SetNonblock(int(stdin.Fd()), true); err == nil {
		f := os.NewFile(stdin.Fd(), "stdin")
		if f.SetReadDeadline(time.Time{}) == nil {
			return &stallReader{f: f, stall: stall}
		}
		syscall.SetNonblock(int(stdin.Fd()), false)
	}
	return &stallReader{f: stdin, stall: stall}
}

func (s *stallReader) arm(on bool) {
	s.armed = on
	if !on {
		s.f.SetReadDeadline(time.Time{})
	}
}

func (s *stallReader) Read(p []byte) (int, error) {
	if s.armed {
		s.f.SetReadDeadline(time.Now().Add(s.stall))
	}
	return s.f.Read(p)
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
			if c, ok := a.waits[pid]; ok {
				delete(a.waits, pid)
				c <- ws
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
	var c *child
	var err error
	if req.Jail != nil {
		if c = a.preparedJail(*req.Jail); c == nil {
			c, err = a.startJail(*req.Jail)
		}
		if err == nil {
			c.handOver(req)
		}
	} else {
		if err := place(req.Files); err != nil {
			return fail(err)
		}
		dir := req.Dir
		if dir == "" {
			dir = Workspace
		}
		c, err = a.spawn(func(stdio []uintptr) (int, error) {
			return syscall.ForkExec(lookPath(req.Args[0], req.Env), req.Args, &syscall.ProcAttr{
				Dir:   dir,
				Env:   req.Env,
				Files: stdio,
				Sys:   &syscall.SysProcAttr{Setsid: true},
			})
		})
	}
	if err != nil {
		return fail(err)
	}
	// The program's stdin is fed in order, never blocking this loop: the
	// queue is bounded by what sandboxd lets a caller send.
	stdinQ := newQueue()
	go func() {
		defer c.stdin.Close()
		for {
			chunk, ok := stdinQ.pop()
			if !ok {
				return
			}
			if _, err := c.stdin.Write(chunk); err != nil {
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
	for stream, r := range map[int]*os.File{agentproto.Stdout: c.stdout, agentproto.Stderr: c.stderr} {
		if a.outBufs[stream] == nil {
			a.outBufs[stream] = make([]byte, 64<<10)
		}
		buf := a.outBufs[stream] // this run's alone: it ends with drained
		drained.Add(1)
		go func() {
			defer drained.Done()
			defer r.Close()
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
	// A plain run ends when its process exits; a jailed one when the
	// jail's init reports how its program ended, or exits without a word.
	exited := c.exited
	var report <-chan *jailStatus
	var st *jailStatus
	if c.status != nil {
		r := make(chan *jailStatus, 1)
		go func() { r <- c.reported() }()
		exited, report = nil, r
	}
	// Kill requests may come while the program runs.
	open := true
	var syncs []string // answered after the exit frame, which they follow
	var ws syscall.WaitStatus
wait:
	for {
		select {
		case ws = <-exited:
			break wait
		case st = <-report:
			break wait
		case next, ok := <-reqs:
			if !ok {
				// sandboxd left in the middle: nobody wants this run.
				open, reqs = false, nil
				a.killOthers()
			} else if next.Exit {
				os.Exit(0)
			} else if next.Kill || next.Sync != "" {
				if next.Kill {
					a.killOthers()
				}
				if next.Sync != "" {
					syncs = append(syncs, next.Sync)
				}
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
	if !open || req.Last && c.status == nil {
		// Orphans would hold the output open; the execution is over. A
		// jail's end with its init.
		a.killOthers()
	}
	// When nothing but a jail's init is left in the jail, nothing can
	// start there any more: the answer need not wait for the init's exit,
	// which ends the jail. Otherwise what is left ends with the init.
	alive := 0 // the jail's init, still running
	if c.status != nil {
		if st != nil && st.Alone {
			alive = c.pid
		} else {
			ws = c.wait()
		}
	}
	drained.Wait()
	f := agentproto.Frame{}
	code := ws.ExitStatus()
	if ws.Signaled() {
		f.Signal = int(ws.Signal())
		code = 128 + f.Signal
	}
	if c.status != nil {
		if st == nil {
			s := killedStatus(ws)
			st = &s
		}
		code, f.Signal, f.Error = st.Exit, st.Signal, st.Error
		f.Clean = a.cellClean(alive)
	}
	f.Exit = &code
	a.send(f)
	for _, id := range syncs {
		a.send(agentproto.Frame{Sync: id})
	}
	if c.status != nil {
		// The jail ends when the next request comes (sandboxd sends the
		// next jail's once the answer is out): its init's exit and its
		// namespaces' teardown, a millisecond of the kernel's work, do
		// not share the CPUs with the answer on its way.
		a.ending = c
	}
	return open
}

// endJail ends the jail of the last run, if its end is still to come:
// its init, alone in it, exits once its hold is closed; then its mount
// namespace goes.
func (a *agent) endJail() {
	c := a.ending
	if c == nil {
		return
	}
	a.ending = nil
	c.hold.Close()
	c.wait()
	c.status.Close()
	c.mounts.Close()
}

// spawn starts a child with fork, which gets the child's ends of three
// new pipes for its stdio.
func (a *agent) spawn(fork func(stdio []uintptr) (int, error)) (*child, error) {
	var ends [6]*os.File // stdin's, stdout's and stderr's read and write ends
	for i := 0; i < 6; i += 2 {
		r, w, err := os.Pipe()
		if err != nil {
			for _, f := range ends[:i] {
				f.Close()
			}
			return nil, err
		}
		ends[i], ends[i+1] = r, w
	}
	c := &child{proc: newProc(), stdin: ends[1], stdout: ends[2], stderr: ends[4]}
	// Registered before the reaper can see it exit.
	a.mu.Lock()
	pid, err := fork([]uintptr{ends[0].Fd(), ends[3].Fd(), ends[5].Fd()})
	if err == nil {
		c.pid = pid
		a.waits[pid] = c.exited
	}
	a.mu.Unlock()
	ends[0].Close()
	ends[3].Close()
	ends[5].Close()
	if err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// collect answers a collect request: one frame a file, then an exit frame;
// or, when a matched file cannot be read, only an exit frame with the error.
func (a *agent) collect(req agentproto.Request) {
	files, err := collect(req.Collect, req.CollectMax)
	if err == nil {
		for i := range files {
			a.send(agentproto.Frame{File: &files[i]})
		}
	}
	a.done(err)
}

// done ends a file operation with its exit frame.
func (a *agent) done(err error) {
	code := 0
	f := agentproto.Frame{Exit: &code}
	if err != nil {
		code, f.Error, f.Code = 1, err.Error(), errorCode(err)
	}
	a.send(f)
}

func collect(globs []string, max int64) ([]agentproto.Collected, error) {
	r, err := openRoot(Workspace)
	if err != nil {
		return nil, err
	}
	defer r.close()
	return r.collect(globs, max)
}

// writeFiles writes files into the workspace.
func writeFiles(files []agentproto.File) error {
	for _, f := range files {
		if f.Mode > 0o777 {
			return fmt.Errorf("%s: mode %o: %w", f.Path, f.Mode, errInvalid)
		}
		if f.Code {
			return fmt.Errorf("%s: code outside a jailed run: %w", f.Path, errInvalid)
		}
	}
	r, err := openRoot(Workspace)
	if err != nil {
		return err
	}
	defer r.close()
	for _, f := range files {
		if err := r.writeFile(f.Path, f.Mode, bytes.NewReader(f.Data)); err != nil {
			return err
		}
	}
	return nil
}

// readFile sends a workspace file's content, at most max+1 bytes of it.
func (a *agent) readFile(p string, max int64) error {
	r, err := openRoot(Workspace)
	if err != nil {
		return err
	}
	defer r.close()
	f, err := r.openFile(p)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	src := io.LimitReader(f, max+1)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			a.send(agentproto.Frame{Stream: agentproto.Stdout, Data: buf[:n]})
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// listFiles sends an entry frame for each entry of the workspace.
func (a *agent) listFiles() error {
	r, err := openRoot(Workspace)
	if err != nil {
		return err
	}
	defer r.close()
	return r.list(func(e entry) { a.send(agentproto.Frame{Entry: &e}) })
}

// place writes a request's files into the workspace.
func place(files []agentproto.File) error {
	listed := make([]jailFile, len(files))
	data := make([]io.Reader, len(files))
	for i, f := range files {
		listed[i] = jailFile{Path: f.Path, Mode: f.Mode, Size: int64(len(f.Data)), Code: f.Code}
		data[i] = bytes.NewReader(f.Data)
	}
	return placeFrom(io.MultiReader(data...), listed, nil)
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

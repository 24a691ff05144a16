package main

// The interpreter of an interpreter session: our driver (runtime/drivers),
// started once and kept, runs each cell in one global state. The agent
// hands it cells on its fd 3 and reads its results on its fd 4, streaming
// what it writes on its stdout and stderr meanwhile. It is not a wall: it
// runs the session's code, as the session's user, as any execution of the
// session does.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
)

const (
	// interpStart bounds the wait for a driver's ready line: a cold
	// interpreter's start on a loaded machine.
	interpStart = 60 * time.Second
	// interruptGrace is how long an interrupted cell has to end before
	// its interpreter is killed, and its state with it.
	interruptGrace = 2 * time.Second
)

// interp is a running driver.
type interp struct {
	proc
	// control is the driver's fd 3, where cells go, a JSON line each.
	control *os.File
	// The agent's ends of the driver's stdout, stderr and fd 4 (results),
	// raw and non-blocking: one goroutine polls them at a time (pump).
	stdout, stderr, results int
	pending                 []byte // read from results, past the last line
	served                  bool   // it ran a cell: it holds state
}

// startInterp starts a driver with args and env, and waits for its ready
// line.
func (a *agent) startInterp(args, env []string) (*interp, error) {
	var pipes [4][2]int // stdout, stderr, control, results
	closeAll := func() {
		for _, p := range pipes {
			for _, fd := range p {
				if fd > 0 {
					unix.Close(fd)
				}
			}
		}
	}
	for i := range pipes {
		if err := unix.Pipe2(pipes[i][:], unix.O_CLOEXEC); err != nil {
			closeAll()
			return nil, err
		}
	}
	devNull, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		closeAll()
		return nil, err
	}
	defer unix.Close(devNull)
	it := &interp{proc: newProc()}
	a.mu.Lock()
	it.pid, err = syscall.ForkExec(lookPath(args[0], env), args, &syscall.ProcAttr{
		Dir:   Workspace,
		Env:   env,
		Files: []uintptr{uintptr(devNull), uintptr(pipes[0][1]), uintptr(pipes[1][1]), uintptr(pipes[2][0]), uintptr(pipes[3][1])},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err == nil {
		a.waits[it.pid] = it.exited
	}
	a.mu.Unlock()
	// The driver's ends are its own now.
	for _, fd := range []int{pipes[0][1], pipes[1][1], pipes[2][0], pipes[3][1]} {
		unix.Close(fd)
	}
	if err != nil {
		for _, fd := range []int{pipes[0][0], pipes[1][0], pipes[2][1], pipes[3][0]} {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("starting the interpreter: %w", err)
	}
	it.stdout, it.stderr, it.results = pipes[0][0], pipes[1][0], pipes[3][0]
	it.control = os.NewFile(uintptr(pipes[2][1]), "control")
	for _, fd := range []int{it.stdout, it.stderr, it.results} {
		unix.SetNonblock(fd, true)
	}
	lines := make(chan []byte, 1)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		it.pump(a, lines, quit)
	}()
	var ready []byte
	select {
	case ready = <-lines:
	case ws := <-it.exited:
		it.exited <- ws // for wait
	case <-time.After(interpStart):
	}
	close(quit)
	<-done
	var hello struct {
		Ready bool `json:"ready"`
	}
	if ready == nil || json.Unmarshal(ready, &hello) != nil || !hello.Ready {
		a.endInterp(it)
		return nil, errors.New("the interpreter did not start (see its stderr)")
	}
	return it, nil
}

// endInterp kills a driver and frees what the agent holds of it.
func (a *agent) endInterp(it *interp) {
	if !it.ended() { // once reaped, its pid may be another's
		syscall.Kill(it.pid, syscall.SIGKILL)
	}
	it.wait()
	it.control.Close()
	for _, fd := range []int{it.stdout, it.stderr, it.results} {
		unix.Close(fd)
	}
}

// pump forwards the driver's output as output frames until it writes a
// line on its results, which goes to lines once the output written before
// it is forwarded (the driver flushes its output before its result); nil
// goes to lines when the results end (the driver is gone). It returns
// then, or when quit closes, forwarding what output is left first.
func (it *interp) pump(a *agent, lines chan<- []byte, quit <-chan struct{}) {
	fds := []unix.PollFd{{Fd: int32(it.stdout), Events: unix.POLLIN}, {Fd: int32(it.stderr), Events: unix.POLLIN}, {Fd: int32(it.results), Events: unix.POLLIN}}
	streams := []int{agentproto.Stdout, agentproto.Stderr}
	buf := make([]byte, 64<<10)
	// forward sends what the driver's output holds, up to a bound: a
	// process the cell left writing must not keep the result waiting.
	forward := func() {
		for i, stream := range streams {
			for reads := 0; fds[i].Fd >= 0 && reads < 16; reads++ {
				n, err := unix.Read(int(fds[i].Fd), buf)
				if n > 0 {
					a.send(agentproto.Frame{Stream: stream, Data: append([]byte(nil), buf[:n]...)})
					continue
				}
				if err == nil { // the end: no one writes it any more
					fds[i].Fd = -1
				}
				break
			}
		}
	}
	for {
		select {
		case <-quit:
			forward()
			return
		default:
		}
		// A bounded wait, to see quit.
		if _, err := unix.Poll(fds, 100); err != nil && err != unix.EINTR {
			return
		}
		forward()
		if fds[2].Revents == 0 {
			continue
		}
		for {
			if i := bytes.IndexByte(it.pending, '\n'); i >= 0 {
				line := it.pending[:i]
				it.pending = append([]byte(nil), it.pending[i+1:]...)
				forward()
				lines <- line
				return
			}
			n, err := unix.Read(it.results, buf)
			if n > 0 {
				if len(it.pending)+n > agentproto.MaxFileSize {
					lines <- nil // a result past any bound: a broken driver
					return
				}
				it.pending = append(it.pending, buf[:n]...)
				continue
			}
			if err == nil {
				forward()
				lines <- nil
				return
			}
			break // EAGAIN: the rest of the line is to come
		}
	}
}

// runCell runs a cell request in the session's interpreter, starting one
// when none runs, and answers kill requests that arrive meanwhile. It
// returns false when the request stream ended.
func (a *agent) runCell(req agentproto.Request, reqs <-chan agentproto.Request) bool {
	code := 0
	f := agentproto.Frame{Exit: &code}
	answer := func() {
		f.Starts = a.starts
		a.send(f)
	}
	if a.interp != nil && (req.Cell.Restart || a.interp.ended()) {
		// Asked for, or it died between cells (killed with the rest of
		// a run beside it, say): its state is gone.
		f.Lost = a.interp.served && !req.Cell.Restart
		a.endInterp(a.interp)
		a.interp = nil
	}
	if a.interp == nil {
		it, err := a.startInterp(req.Args, req.Env)
		if err != nil {
			code, f.Error = 127, err.Error()
			answer()
			return true
		}
		a.interp = it
		a.starts++
	}
	if req.Cell.Restart {
		answer()
		return true
	}
	if err := place(req.Files); err != nil {
		code, f.Error = 127, err.Error()
		answer()
		return true
	}
	it := a.interp
	line, err := json.Marshal(agentproto.Cell{ID: req.Cell.ID, Code: req.Cell.Code})
	if err != nil {
		code, f.Error = 127, err.Error()
		answer()
		return true
	}
	// Written while the output is read: the driver reads the whole line
	// before it runs anything.
	go it.control.Write(append(line, '\n'))
	lines := make(chan []byte, 1)
	quit := make(chan struct{})
	pumped := make(chan struct{})
	go func() {
		defer close(pumped)
		it.pump(a, lines, quit)
	}()
	open := true
	var syncs []string
	var result []byte
	var grace <-chan time.Time
	interrupt := func() {
		if grace == nil {
			syscall.Kill(it.pid, syscall.SIGINT)
			grace = time.After(interruptGrace)
		}
	}
	died := false
wait:
	for {
		select {
		case result = <-lines:
			died = result == nil
			break wait
		case ws := <-it.exited:
			it.exited <- ws
			died = true
			break wait
		case <-grace:
			// It did not answer the interrupt: its state goes with it.
			syscall.Kill(it.pid, syscall.SIGKILL)
			it.wait()
			died = true
			break wait
		case next, ok := <-reqs:
			switch {
			case !ok:
				// sandboxd left in the middle: nobody wants this cell.
				open, reqs = false, nil
				interrupt()
			case next.Exit:
				os.Exit(0)
			case next.Kill || next.Sync != "":
				if next.Kill {
					interrupt()
				}
				if next.Sync != "" {
					syncs = append(syncs, next.Sync)
				}
			}
		}
	}
	close(quit)
	<-pumped
	if died {
		ws := it.wait()
		code = ws.ExitStatus()
		if ws.Signaled() {
			f.Signal = int(ws.Signal())
			code = 128 + f.Signal
		}
		f.Lost = true
		a.endInterp(it)
		a.interp = nil
	} else {
		f.Cell = result
		it.served = true
	}
	// What the cell started besides ends with it; the interpreter stays.
	a.killOthers()
	answer()
	for _, id := range syncs {
		a.send(agentproto.Frame{Sync: id})
	}
	return open
}

// killOthers kills every process of the sandbox but the agent and the
// session's interpreter. Without an interpreter, kill(-1) does it, atomic
// against fork. With one, every process is stopped first (kill(-1) again),
// so that none forks while the others are killed one by one, and the
// interpreter is then let go on.
func (a *agent) killOthers() {
	if a.interp == nil || a.interp.ended() {
		syscall.Kill(-1, syscall.SIGKILL)
		return
	}
	spare := a.interp.pid
	syscall.Kill(-1, syscall.SIGSTOP)
	self := os.Getpid()
	for range 2 {
		entries, err := os.ReadDir("/proc")
		if err != nil {
			break
		}
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == self || pid == spare || pid <= 0 {
				continue
			}
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	syscall.Kill(spare, syscall.SIGCONT)
}

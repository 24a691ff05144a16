package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/daemon/api"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// baseEnv is every sandboxed process's environment before the language's
// and the request's: nothing comes from the daemon.
var baseEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/workspace",
	"TMPDIR=/tmp",
	"LANG=C.UTF-8",
	"USER=sandbox",
}

// execute runs one request, in a fresh sandbox or in a session. Call done
// once the result is sent: the execution is logged then, and a fresh
// sandbox torn down, off the caller's path, but still in its execution
// slot.
func (s *Server) execute(ctx context.Context, req *api.ExecuteRequest, caller Caller, st *stream) (_ *api.ExecuteResult, done func(), _ error) {
	if req.SessionID != "" {
		return s.executeInSession(ctx, req, caller, st)
	}
	c, err := s.validate(req, "")
	if err != nil {
		return nil, nil, err
	}
	slot, err := s.slots.acquireSlot(ctx, callerUID(caller))
	if err != nil {
		return nil, nil, err
	}
	releaseNow := true
	defer func() {
		if releaseNow {
			slot.release()
		}
	}()

	id := newID()
	limits := s.sandboxLimits(c.memory)
	// A program that a jail can hold runs in a cell: a used one of the
	// caller's when one waits, otherwise a fresh one.
	class := c.class
	class.Cells = s.jailable(c, req)
	key := cellKey{uid: callerUID(caller), class: class, limits: limits}
	var cl *cell
	var sb Sandbox
	if class.Cells {
		if cl = s.cellFor(key); cl != nil {
			sb = cl.sb
		}
	}
	if sb == nil {
		sb, err = s.acquireSandbox(ctx, class, limits, func(ctx context.Context) (Sandbox, error) {
			return s.create(ctx, sandbox.Config{
				ID:         "sbx-" + newID(),
				Kind:       sandbox.KindExecute,
				Env:        baseEnv,
				Limits:     limits,
				Image:      class.Image,
				OCIRuntime: class.Runtime,
				Jails:      class.Cells,
			})
		})
		if err != nil {
			return nil, nil, s.createErrorFor(ctx, err, c.lang)
		}
		if class.Cells {
			cl = s.newCell(key, sb)
		}
	}
	destroy := func() { s.destroy(ctx, sb) }
	deleteNow := true
	defer func() {
		switch {
		case !deleteNow:
		case cl != nil:
			s.releaseCell(key, cl, sandbox.ExitResult{}, errExecutionAborted)
		default:
			destroy()
		}
	}()

	runCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	o, err := s.runSteps(runCtx, sb, c, req, id, "", st, class.Cells)
	if err != nil {
		return nil, nil, err
	}
	res := &api.ExecuteResult{ID: id, Language: c.lang.Name, Runtime: c.class.Runtime}
	if u := o.exit.Usage; u != nil {
		// A cell's counters are its own: the execution's are the change.
		res.Usage = api.Usage{CPUMS: int64(u.CPUNanos / 1e6), MemoryPeakBytes: int64(u.MemoryPeakBytes)}
	} else if st, err := sb.Stats(ctx); err == nil {
		res.Usage = api.Usage{CPUMS: int64(st.CPUNanos / 1e6), MemoryPeakBytes: int64(st.MemoryPeakBytes)}
	}
	logged := s.finish(res, o, caller)
	deleteNow, releaseNow = false, false
	// Out of the count before the client can read the answer and send
	// another request; the run slot is held until the teardown is over.
	slot.answer()
	if cl != nil {
		// Back among the caller's cells before the answer, for its next
		// request; or destroyed off the caller's path.
		s.releaseCell(key, cl, o.exit, nil)
		return res, func() { sb.Answered(); logged(); slot.release() }, nil
	}
	return res, func() { logged(); destroy(); slot.release() }, nil
}

// executeInSession runs a request in a session, in the session's turn.
// Call done once the result is sent (execute).
func (s *Server) executeInSession(ctx context.Context, req *api.ExecuteRequest, caller Caller, st *stream) (_ *api.ExecuteResult, done func(), _ error) {
	x, err := s.sessionFor(req.SessionID, caller)
	if err != nil {
		return nil, nil, err
	}
	if req.Runtime != "" && req.Runtime != x.class.Runtime {
		return nil, nil, invalid("session %s runs on %s: runtime is chosen when a session is created", x.id, x.class.Runtime)
	}
	req.Runtime = x.class.Runtime
	c, err := s.validate(req, x.lang)
	if err != nil {
		return nil, nil, err
	}
	if c.cell = x.interp != nil && c.lang.Name == x.lang; c.cell {
		if err := checkCell(req); err != nil {
			return nil, nil, err
		}
	}
	if c.class.Image != x.class.Image {
		return nil, nil, invalid("language %s does not run in session %s, whose root is %s", c.lang.Name, x.id, describeRoot(x.class.Image))
	}
	if !x.sb.Alive() {
		return nil, nil, api.Errorf(api.CodeFailedPrecondition, "session %s is dead: its sandbox was killed (see its state); delete it", x.id)
	}
	id := newID()
	res := &api.ExecuteResult{ID: id, SessionID: x.id, Language: c.lang.Name, Runtime: x.class.Runtime}
	// The timeout covers the wait for the session's turn.
	runCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	// Waiting for the session's turn, or for a slot, the timeout may come
	// before the program ever ran: that is a timed-out execution too.
	timedOut := func(err error) (*api.ExecuteResult, func(), error) {
		if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return nil, nil, err
		}
		res.Status, res.TimedOut, res.ExitCode, res.Signal = api.StatusTimedOut, true, 128+9, "SIGKILL"
		res.DurationMS = time.Since(start).Milliseconds()
		return res, func() {}, nil
	}
	if err := x.acquireTurn(runCtx); err != nil {
		return timedOut(err)
	}
	defer x.releaseTurn()
	slot, err := s.slots.acquireSlot(runCtx, callerUID(caller))
	if err != nil {
		return timedOut(err)
	}
	defer slot.release()
	o, err := s.runSteps(runCtx, x.sb, c, req, id, x.id, st, false)
	if c.cell {
		x.noteCell(o.exit.Cell)
	}
	if err != nil {
		return nil, nil, err
	}
	if st, err := x.sb.Stats(ctx); err == nil {
		// The counters are the session's: this execution's CPU is what
		// they grew by since the last one.
		x.mu.Lock()
		res.Usage = api.Usage{CPUMS: int64((st.CPUNanos - min(x.cpuNanos, st.CPUNanos)) / 1e6), MemoryPeakBytes: int64(st.MemoryPeakBytes)}
		x.cpuNanos = st.CPUNanos
		x.mu.Unlock()
	}
	s.touch(ctx, x, true)
	logged := s.finish(res, o, caller)
	if c.cell {
		s.cellResult(x, res, o.exit.Cell)
	}
	return res, logged, nil
}

// errExecutionAborted is why a cell whose execution never came to its end
// is destroyed.
var errExecutionAborted = errors.New("execution aborted")

// outcome is how an execution's steps went.
type outcome struct {
	files          []api.File
	exit           sandbox.ExitResult
	compiled       bool
	stdout, stderr *cappedBuffer
	duration       time.Duration
	// phase is the step the execution ended in (api.PhaseCompile or
	// api.PhaseRun).
	phase string
	// pidsLimit says the step was refused forks at the sandbox's pids
	// limit, which does not kill a process but fails it.
	pidsLimit bool
	// filesLost says the files to collect went with the sandbox, which
	// the kernel ended with the program.
	filesLost bool
}

// runSteps compiles (for compiled languages) and runs the code in sb. The
// code is placed for this execution, id, in /sandbox/id. With a stream,
// the run's output goes out as it comes.
func (s *Server) runSteps(ctx context.Context, sb Sandbox, c checked, req *api.ExecuteRequest, id, sessionID string, st *stream, jail bool) (outcome, error) {
	s.running.begin()
	defer s.running.end()
	start := time.Now()
	lang, workspace := c.lang, c.files
	filesDir, files := id, map[string][]byte{lang.FileName: []byte(req.Code)}
	// Live stdin is taken from before the start event, which tells the
	// client where to send it.
	var live *liveStdin
	if req.StdinStream && st != nil {
		live = s.openStdin(id, st.owner)
		defer s.closeStdin(id, live)
	}
	if d, ok := ctx.Deadline(); ok {
		st.setDeadline(d)
	}
	st.start(api.StreamEvent{Type: api.EventStart, ID: id, SessionID: sessionID, Language: lang.Name})
	codePath := "/sandbox/" + filesDir + "/" + lang.FileName
	if req.Entrypoint != "" {
		p, _ := checkFilePath(req.Entrypoint)
		codePath = "/workspace/" + p
	}
	env := append(append([]string(nil), lang.Env...), envList(req.Env)...)
	// The language's commands name its file in /sandbox: this execution's
	// code, or the entrypoint among the submitted files.
	cmd := func(c []string) []string {
		out := make([]string, len(c))
		for i, a := range c {
			out[i] = strings.Replace(a, "/sandbox/"+lang.FileName, codePath, 1)
		}
		return out
	}
	out := s.limits().OutputBytes
	o := outcome{compiled: true, phase: api.PhaseRun, stdout: newCappedBuffer(out), stderr: newCappedBuffer(out)}
	var err error
	if len(lang.Compile) > 0 {
		o.phase = api.PhaseCompile
		// The compiler's output is diagnostics, whichever of its streams
		// it writes them to: both go out as stderr events as they come,
		// and a program's stdout events carry only the program's output.
		const compilerStdout, compilerStderr = "compiler stdout", "compiler stderr"
		o.stdout.tee, o.stderr.tee = st.outputAs(compilerStdout, api.EventStderr), st.outputAs(compilerStderr, api.EventStderr)
		before, beforeErr := sb.Stats(ctx) // for compileLimit
		o.exit, err = sb.Exec(ctx, sandbox.Process{Args: cmd(lang.Compile), Env: env, Stdout: o.stdout, Stderr: o.stderr,
			Files: files, FilesDir: filesDir, WorkspaceFiles: workspace})
		st.flush(compilerStdout, api.EventStderr)
		st.flush(compilerStderr, api.EventStderr)
		workspace = nil // placed
		o.compiled = err == nil && o.exit.ExitCode == 0 && !o.exit.Killed
		if err == nil && !o.compiled && beforeErr == nil {
			if after, err := sb.Stats(ctx); err == nil {
				o.compileLimit(before, after)
			}
		}
		if o.compiled {
			// A successful compiler's chatter, streamed, is not the
			// program's output.
			o.stdout, o.stderr = newCappedBuffer(out), newCappedBuffer(out)
			o.phase = api.PhaseRun
		}
	}
	if err == nil && o.compiled {
		o.stdout.tee, o.stderr.tee = st.output(api.EventStdout), st.output(api.EventStderr)
		args := append(cmd(lang.Run), req.Args...)
		var stdin io.Reader = strings.NewReader(req.Stdin)
		if live != nil {
			stdin = io.MultiReader(stdin, live.r)
		}
		p := sandbox.Process{Args: args, Env: env, Stdin: stdin, Stdout: o.stdout, Stderr: o.stderr,
			Last: true, Files: files, FilesDir: filesDir, WorkspaceFiles: workspace, StdinLive: live != nil, Jail: jail}
		if c.cell {
			p = sandbox.Process{Env: env, Stdout: o.stdout, Stderr: o.stderr, WorkspaceFiles: workspace,
				Cell: &sandbox.Cell{Language: lang.Name, Code: req.Code}}
		}
		o.exit, err = sb.Exec(ctx, p)
	}
	o.duration = time.Since(start)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return o, ctx.Err()
		}
		if errdefs.IsFailedPrecondition(err) {
			return o, api.Errorf(api.CodeFailedPrecondition, "the sandbox died: %v", err)
		}
		return o, fmt.Errorf("run: %w", err)
	}
	if o.exit.Killed && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return o, ctx.Err() // the client left: nobody to answer
	}
	if len(req.Collect) > 0 {
		got, err := sb.Collect(context.WithoutCancel(ctx), req.Collect, s.limits().MaxFileBytes)
		switch {
		case err != nil && errdefs.IsFailedPrecondition(err) && (o.exit.OOMKilled || o.exit.SandboxKilled != ""):
			// The kernel ended the whole sandbox at one of its limits (as
			// gVisor's does at the memory and pids limits): the files went
			// with it, and the verdict is still the answer.
			o.filesLost = true
		case err != nil:
			return o, fmt.Errorf("collect: %w", err)
		}
		for _, f := range got {
			af := api.File{Path: f.Path, Size: f.Size, Truncated: f.Truncated}
			af.Content, af.Encoding = encodeOutput(f.Data)
			o.files = append(o.files, af)
		}
	}
	return o, nil
}

// compileLimit tells, for a failed compile, whether it ended at one of the
// sandbox's limits rather than on the code, from the kernel's counters
// before and after it. A compiler driver (g++, go build) whose own child
// the OOM killer ends, or that is refused a fork, exits 1 like a compiler
// that found an error: only the cgroup's counters tell them apart.
func (o *outcome) compileLimit(before, after sandbox.Stats) {
	switch {
	case o.exit.Killed || o.exit.OOMKilled || o.exit.SandboxKilled != "":
		// The runtime said already.
	case after.OOMKills > before.OOMKills:
		o.exit.OOMKilled = true
		o.exit.ExitCode, o.exit.Signal = 128+int(unix.SIGKILL), int(unix.SIGKILL)
	case after.PidsLimitHits > before.PidsLimitHits:
		o.pidsLimit = true
	}
}

// compileError says the compiler failed on the code, not at a limit.
func (o *outcome) compileError() bool {
	return !o.compiled && !o.pidsLimit && o.exit.SandboxKilled == ""
}

// note is the result's message: how the execution ended, when its status
// alone does not say it.
func (o *outcome) note() string {
	switch {
	case o.phase == api.PhaseCompile && o.pidsLimit:
		return "the compiler reached the sandbox's process limit"
	case o.exit.SandboxKilled != "":
		return o.exit.SandboxKilled
	case o.phase == api.PhaseCompile && o.exit.OOMKilled:
		return "the compiler reached the memory limit"
	case o.phase == api.PhaseCompile && o.exit.Killed:
		return "the timeout came while compiling"
	}
	return ""
}

// finish fills a result from an outcome and counts it; it returns the
// execution's log line, to write once the result is sent (a write to a
// log file or the journal need not delay the answer).
func (s *Server) finish(res *api.ExecuteResult, o outcome, caller Caller) (logged func()) {
	res.DurationMS = o.duration.Milliseconds()
	res.ExitCode = o.exit.ExitCode
	res.TimedOut = o.exit.Killed
	res.OOMKilled = o.exit.OOMKilled
	res.Stdout, res.StdoutEncoding = encodeOutput(o.stdout.Bytes())
	res.Stderr, res.StderrEncoding = encodeOutput(o.stderr.Bytes())
	res.StdoutTruncated, res.StderrTruncated = o.stdout.Truncated(), o.stderr.Truncated()
	res.Status, res.Signal = status(o.exit, o.compileError())
	res.Phase = o.phase
	res.Message = o.note()
	if o.filesLost {
		if res.Message == "" {
			res.Message = "the sandbox ended at its memory limit"
		}
		res.Message += ": no files were collected"
	}
	res.Files = o.files
	s.metrics.executions.WithLabelValues(res.Language, res.Status).Inc()
	s.metrics.duration.WithLabelValues(res.Language).Observe(o.duration.Seconds())
	if res.OOMKilled {
		s.metrics.oomKills.Inc()
	}
	if res.TimedOut {
		s.metrics.timeouts.Inc()
	}
	attrs := []any{"id", res.ID, "session_id", res.SessionID, "language", res.Language, "uid", caller.UID, "pid", caller.PID,
		"status", res.Status, "exit_code", res.ExitCode, "duration", o.duration.Round(time.Millisecond),
		"stdout_bytes", o.stdout.Total(), "stderr_bytes", o.stderr.Total()}
	return func() { s.log.Info("execute", attrs...) }
}

func (s *Server) sandboxLimits(memory int64) sandbox.Limits {
	return sandbox.Limits{
		MemoryBytes:   memory,
		CPUs:          s.limits().CPUs,
		Pids:          s.limits().Pids,
		TmpfsBytes:    s.limits().TmpfsBytes,
		NoFile:        1024,
		FileSizeBytes: uint64(s.limits().TmpfsBytes),
	}
}

// createError classifies a failure to create a sandbox.
func (s *Server) createError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	info := s.rt.Info(ctx)
	if !info.Serving {
		return api.Errorf(api.CodeUnavailable, "containerd does not answer: %v", err)
	}
	if info.StateDirErr != nil {
		return stateDirError(info.StateDir, info.StateDirErr)
	}
	if errdefs.IsNotFound(err) || errdefs.IsInvalidArgument(err) {
		// A missing image or runtime: the language cannot run until an
		// administrator acts.
		return api.Errorf(api.CodeUnavailable, "%v", err)
	}
	return fmt.Errorf("create sandbox: %w", err)
}

// stateDirError says why no sandbox can be created in the state directory:
// 507 when it is full, 503 when it cannot be written.
func stateDirError(dir string, err error) error {
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return errorf(errDiskFull, "the state directory %s is full: no sandbox can be created (%v)", dir, err)
	}
	return api.Errorf(api.CodeUnavailable, "the state directory %s cannot be written: no sandbox can be created (%v)", dir, err)
}

// createErrorFor is createError for a sandbox of a language: one whose
// image or runtime is missing is unavailable, with the reason and the fix.
func (s *Server) createErrorFor(ctx context.Context, err error, lang Language) error {
	if ctx.Err() == nil && (errdefs.IsNotFound(err) || errdefs.IsInvalidArgument(err)) {
		if why := s.unavailable(ctx, lang); why != "" {
			return api.Errorf(api.CodeUnavailable, "language %s is unavailable: %s", lang.Name, why)
		}
	}
	return s.createError(ctx, err)
}

// describeRoot names where a sandbox's root comes from.
func describeRoot(image string) string {
	if image == "" {
		return "the host's"
	}
	return "image " + image
}

// status classifies how an execution's last step ended; compileError says
// it was a compile that failed on the code.
func status(e sandbox.ExitResult, compileError bool) (status, signal string) {
	switch {
	case e.Killed:
		return api.StatusTimedOut, "SIGKILL"
	case e.OOMKilled:
		return api.StatusOOMKilled, "SIGKILL"
	case compileError:
		return api.StatusCompileError, ""
	case e.ExitCode == 0:
		return api.StatusOK, ""
	case e.Signal > 0:
		if name := unix.SignalName(unix.Signal(e.Signal)); name != "" {
			return api.StatusSignaled, name
		}
		return api.StatusSignaled, "signal " + strconv.Itoa(e.Signal)
	}
	return api.StatusFailed, ""
}

func encodeOutput(b []byte) (string, string) {
	if utf8.Valid(b) {
		return string(b), ""
	}
	return base64.StdEncoding.EncodeToString(b), api.EncodingBase64
}

func envList(env map[string]string) []string {
	list := make([]string, 0, len(env))
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	return list
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// cappedBuffer keeps the first limit bytes written to it and counts and
// drops the rest, so that a program is never blocked on its output.
type cappedBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	limit int64
	total int64
	// tee, when set, gets what is kept of each write, as it is written.
	tee func([]byte)
}

func newCappedBuffer(limit int64) *cappedBuffer { return &cappedBuffer{limit: limit} }

func (c *cappedBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.limit - int64(c.buf.Len()); room > 0 {
		kept := p[:min(int64(len(p)), room)]
		c.buf.Write(kept)
		if c.tee != nil {
			c.tee(kept)
		}
	}
	c.total += int64(len(p))
	return len(p), nil
}

func (c *cappedBuffer) Bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Bytes()
}

func (c *cappedBuffer) Total() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

func (c *cappedBuffer) Truncated() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total > c.limit
}

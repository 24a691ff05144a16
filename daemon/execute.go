package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/daemon/api"
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

// execute runs one request in a fresh sandbox. The sandbox is destroyed
// when the returned result has been sent and done is called: teardown is
// off the caller's path, but still holds its execution slot.
func (s *Server) execute(ctx context.Context, req *api.ExecuteRequest, caller Caller) (_ *api.ExecuteResult, done func(), _ error) {
	lang, timeout, memory, err := s.validate(req)
	if err != nil {
		return nil, nil, err
	}
	release, err := s.slots.acquire(ctx)
	if err != nil {
		return nil, nil, err
	}
	releaseNow := true
	defer func() {
		if releaseNow {
			release()
		}
	}()

	id := newID()
	res := &api.ExecuteResult{ID: id, Language: lang.Name}
	env := append(append(append([]string(nil), baseEnv...), lang.Env...), envList(req.Env)...)
	limits := s.limits()
	sb, err := s.rt.Create(ctx, SandboxConfig{
		ID:    "sbx-" + id,
		Kind:  "execute",
		Files: map[string][]byte{lang.FileName: []byte(req.Code)},
		Env:   env,
		Limits: SandboxLimits{
			MemoryBytes:   memory,
			CPUs:          limits.CPUs,
			Pids:          limits.Pids,
			TmpfsBytes:    limits.TmpfsBytes,
			NoFile:        1024,
			FileSizeBytes: uint64(limits.TmpfsBytes),
		},
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		if !s.rt.Info(ctx).Serving {
			return nil, nil, api.Errorf(api.CodeUnavailable, "containerd does not answer: %v", err)
		}
		return nil, nil, fmt.Errorf("create sandbox: %w", err)
	}
	destroy := func() {
		if err := sb.Delete(ctx); err != nil {
			s.log.Warn("delete sandbox", "container_id", "sbx-"+id, "err", err)
		}
	}
	deleteNow := true
	defer func() {
		if deleteNow {
			destroy()
		}
	}()

	start := time.Now()
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out := limits.OutputBytes
	stdout, stderr := newCappedBuffer(out), newCappedBuffer(out)
	var exit ExitResult
	compiled := true
	if len(lang.Compile) > 0 {
		exit, err = sb.Exec(runCtx, Process{Args: lang.Compile, Stdout: stdout, Stderr: stderr})
		compiled = err == nil && exit.ExitCode == 0 && !exit.Killed
		if compiled {
			// A successful compiler's chatter is not the program's output.
			stdout, stderr = newCappedBuffer(out), newCappedBuffer(out)
		}
	}
	if err == nil && compiled {
		args := append(append([]string(nil), lang.Run...), req.Args...)
		exit, err = sb.Exec(runCtx, Process{Args: args, Stdin: strings.NewReader(req.Stdin), Stdout: stdout, Stderr: stderr, Last: true})
	}
	res.DurationMS = time.Since(start).Milliseconds()
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, fmt.Errorf("run: %w", err)
	}
	if st, err := sb.Stats(ctx); err == nil {
		res.Usage = api.Usage{CPUMS: int64(st.CPUNanos / 1e6), MemoryPeakBytes: int64(st.MemoryPeakBytes)}
	}
	if exit.Killed && ctx.Err() != nil {
		return nil, nil, ctx.Err() // the client left: nobody to answer
	}
	res.ExitCode = exit.ExitCode
	res.TimedOut = exit.Killed
	res.OOMKilled = exit.OOMKilled
	res.Stdout, res.StdoutEncoding = encodeOutput(stdout.Bytes())
	res.Stderr, res.StderrEncoding = encodeOutput(stderr.Bytes())
	res.StdoutTruncated, res.StderrTruncated = stdout.Truncated(), stderr.Truncated()
	res.Status, res.Signal = status(exit, compiled)
	s.log.Info("execute",
		"id", id, "language", lang.Name, "uid", caller.UID, "pid", caller.PID,
		"status", res.Status, "exit_code", res.ExitCode, "duration", time.Duration(res.DurationMS)*time.Millisecond,
		"stdout_bytes", stdout.Total(), "stderr_bytes", stderr.Total())
	deleteNow, releaseNow = false, false
	return res, func() { destroy(); release() }, nil
}

// status classifies an exit. Like containerd, runc and docker, it can only
// tell a signal from an exit code by the shell convention of 128+signal.
func status(e ExitResult, compiled bool) (status, signal string) {
	switch {
	case e.Killed:
		return api.StatusTimedOut, "SIGKILL"
	case e.OOMKilled:
		return api.StatusOOMKilled, "SIGKILL"
	case !compiled:
		return api.StatusCompileError, ""
	case e.ExitCode == 0:
		return api.StatusOK, ""
	case e.ExitCode > 128 && e.ExitCode <= 128+64:
		if name := unix.SignalName(unix.Signal(e.ExitCode - 128)); name != "" {
			return api.StatusSignaled, name
		}
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
}

func newCappedBuffer(limit int64) *cappedBuffer { return &cappedBuffer{limit: limit} }

func (c *cappedBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.limit - int64(c.buf.Len()); room > 0 {
		c.buf.Write(p[:min(int64(len(p)), room)])
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

// slots bounds the executions that run at once, and those that wait. It
// counts both in one number taken under a lock, so that a request never
// sees a full queue that is only a waiter on its way to a free slot.
type slots struct {
	run      chan struct{}
	max      int // running and queued
	mu       sync.Mutex
	inflight int
}

func newSlots(running, queued int) *slots {
	return &slots{run: make(chan struct{}, running), max: running + queued}
}

var errBusy = api.Errorf(api.CodeResourceExhausted, "too many executions running and queued; try again later")

func (q *slots) acquire(ctx context.Context) (func(), error) {
	q.mu.Lock()
	if q.inflight >= q.max {
		q.mu.Unlock()
		return nil, errBusy
	}
	q.inflight++
	q.mu.Unlock()
	select {
	case q.run <- struct{}{}:
		return func() { <-q.run; q.leave() }, nil
	case <-ctx.Done():
		q.leave()
		return nil, ctx.Err()
	}
}

func (q *slots) leave() {
	q.mu.Lock()
	q.inflight--
	q.mu.Unlock()
}

func (q *slots) counts() (running, queued int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	running = len(q.run)
	return running, max(q.inflight-running, 0)
}

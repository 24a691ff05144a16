package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
)

// writeFiles writes files, whose names are plain file names, into dir.
func writeFiles(dir string, files map[string][]byte) error {
	for name, content := range files {
		if name != filepath.Base(name) || name == "." || name == ".." {
			return fmt.Errorf("sandbox file %q: %w", name, errdefs.ErrInvalidArgument)
		}
		if err := writeFileAtomic(filepath.Join(dir, name), content, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Process is one program to run in a sandbox.
type Process struct {
	Args   []string
	Env    []string // added to the sandbox's base environment
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Last says the execution ends with this process: what it leaves
	// running is killed when it exits, rather than holding its output open.
	// In a reusable sandbox that is every process but PID 1; otherwise the
	// whole sandbox.
	Last bool
	// Files are placed read-only in SandboxDir/FilesDir for the time of the
	// process; FilesDir is a plain name.
	Files    map[string][]byte
	FilesDir string
	// WorkspaceFiles are written into /workspace before the process runs.
	WorkspaceFiles []WorkspaceFile
	// StdinLive says Stdin is fed while the process runs: it is forwarded
	// as it comes rather than read whole first.
	StdinLive bool
}

// ExitResult is how a process ended.
type ExitResult struct {
	ExitCode  int
	Signal    int  // the signal that killed it, or 0
	Killed    bool // killed because ctx ended
	OOMKilled bool // the kernel's OOM killer struck in the sandbox
	// SandboxKilled, when set, says why the kernel ended the whole sandbox
	// during the process.
	SandboxKilled string
}

// Exec runs p in the sandbox and waits for it and for all of its output.
// When ctx ends first, everything in the sandbox is killed (the sandbox is
// then spent) and the result says Killed; the output written until then is
// kept.
func (s *Sandbox) Exec(ctx context.Context, p Process) (ExitResult, error) {
	cctx := s.c.ctx(context.WithoutCancel(ctx))
	if !s.Alive() {
		return ExitResult{}, fmt.Errorf("sandbox %s: its PID 1 is gone: %w", s.id, errdefs.ErrFailedPrecondition)
	}
	if len(p.Files) > 0 {
		if p.FilesDir == "" || p.FilesDir != filepath.Base(p.FilesDir) || p.FilesDir == ".." {
			return ExitResult{}, fmt.Errorf("files dir %q: %w", p.FilesDir, errdefs.ErrInvalidArgument)
		}
		dir := filepath.Join(s.dir, p.FilesDir)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return ExitResult{}, fmt.Errorf("sandbox %s: %w", s.id, err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			return ExitResult{}, fmt.Errorf("sandbox %s: %w", s.id, err)
		}
		defer os.RemoveAll(dir)
		if err := writeFiles(dir, p.Files); err != nil {
			return ExitResult{}, fmt.Errorf("sandbox %s: %w", s.id, err)
		}
	}
	// OOM kills are counted for the sandbox's life: only those after the
	// last count read are this process's, and an old event is not.
	oomBefore := s.oomSeen.Load()
	select {
	case <-s.oomC:
	default:
	}
	if s.agent == nil {
		for _, f := range p.WorkspaceFiles {
			code, err := s.Helper(ctx, bytes.NewReader(f.Data), io.Discard, "put", f.Path, strconv.FormatUint(uint64(f.Mode), 8))
			if err == nil && code != 0 {
				err = fmt.Errorf("placing %s in /workspace: helper exited %d: %w", f.Path, code, errdefs.ErrInvalidArgument)
			}
			if err != nil {
				return ExitResult{}, err
			}
		}
	}
	if s.agent != nil {
		res, err := s.agentExec(ctx, p)
		if err == nil && !res.Killed && res.Signal == int(syscall.SIGKILL) {
			res.OOMKilled = s.oomKilled(cctx, oomBefore)
		}
		if errors.Is(err, errAgentGone) {
			if killed, ok := s.endedAtLimit(cctx, oomBefore); ok {
				return killed, nil
			}
		}
		return res, err
	}
	execID := "p" + strconv.FormatUint(s.c.execSeq.Add(1), 10)
	ps := s.procSpec
	ps.Args = p.Args
	ps.Env = append(append([]string(nil), ps.Env...), p.Env...)
	stdin := &eofNotifier{r: p.Stdin, eof: make(chan struct{})}
	if stdin.r == nil {
		stdin.r = eofReader{}
	}
	proc, err := s.task.Exec(cctx, execID, &ps, cio.NewCreator(
		cio.WithStreams(stdin, p.Stdout, p.Stderr),
		cio.WithFIFODir(fifoDir(s.c.cfg.StateDir)),
	))
	if err != nil {
		return ExitResult{}, fmt.Errorf("exec in %s: %w", s.id, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(cctx, cleanupTimeout)
		defer cancel()
		if _, err := proc.Delete(dctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			s.c.log.Warn("delete process", "container_id", s.id, "err", err)
		}
	}()
	statusC, err := proc.Wait(cctx)
	if err != nil {
		return ExitResult{}, fmt.Errorf("wait in %s: %w", s.id, err)
	}
	if err := proc.Start(cctx); err != nil {
		return ExitResult{}, fmt.Errorf("start in %s: %w", s.id, err)
	}
	exited := make(chan struct{})
	defer close(exited)
	go func() {
		// The shim holds the stdin FIFO open until told: tell it once all
		// the input is written, so that the program sees EOF.
		select {
		case <-stdin.eof:
			if err := proc.CloseIO(cctx, containerd.WithStdinCloser); err != nil && !errdefs.IsNotFound(err) {
				s.c.log.Warn("close stdin", "container_id", s.id, "err", err)
			}
		case <-exited:
		}
	}()
	var res ExitResult
	var status containerd.ExitStatus
	// ended says the sandbox ended with the process: runc exec'd
	// processes die with PID 1, and runsc exec exits 128 once the gVisor
	// sandbox it waited on is gone.
	ended := false
	select {
	case status = <-statusC:
		ended = status.ExitCode() != 0 && !s.running(cctx)
		if p.Last && !ended {
			s.end(cctx)
		}
	case <-ctx.Done():
		res.Killed = true
		s.end(cctx)
		select {
		case status = <-statusC:
		case <-time.After(cleanupTimeout):
			return res, fmt.Errorf("process in %s outlived its sandbox: %w", s.id, errdefs.ErrUnknown)
		}
	}
	// Drain the output before the process is deleted: deleting closes the
	// FIFOs and would drop what is still in flight.
	drained := make(chan struct{})
	go func() { proc.IO().Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(ioDrainTimeout):
		s.c.log.Warn("output not drained in time", "container_id", s.id)
	}
	if ended {
		if killed, ok := s.endedAtLimit(cctx, oomBefore); ok {
			return killed, nil
		}
		return res, fmt.Errorf("sandbox %s: its PID 1 ended during the process: %w", s.id, errdefs.ErrFailedPrecondition)
	}
	res.ExitCode = int(status.ExitCode())
	// runc tells a signal only by the shell convention of 128+signal.
	if res.ExitCode > 128 && res.ExitCode <= 128+64 {
		res.Signal = res.ExitCode - 128
	}
	if !res.Killed && res.Signal == int(syscall.SIGKILL) {
		res.OOMKilled = s.oomKilled(cctx, oomBefore)
	}
	return res, nil
}

// endedAtLimit tells whether the kernel ended the whole sandbox at one of
// its limits, as it does under gVisor, whose own kernel holds the memory
// and the tasks of the programs; if so, that is how the execution ended.
func (s *Sandbox) endedAtLimit(ctx context.Context, oomBefore uint64) (ExitResult, bool) {
	killed := ExitResult{ExitCode: 128 + int(syscall.SIGKILL), Signal: int(syscall.SIGKILL)}
	switch {
	case s.oomKilled(ctx, oomBefore):
		killed.OOMKilled = true
	case pidsLimitHit(s.c.cgroupV2, CgroupsPath(s.c.cfg.Namespace, s.id)):
		killed.SandboxKilled = "the sandbox reached its process limit"
	default:
		return ExitResult{}, false
	}
	return killed, true
}

// running reports whether the sandbox's PID 1 runs, as containerd knows it
// now (its exit event may come later); when containerd does not answer it
// is taken to run.
func (s *Sandbox) running(ctx context.Context) bool {
	if !s.Alive() {
		return false
	}
	st, err := s.task.Status(ctx)
	return err != nil || st.Status == containerd.Running
}

// end ends an execution: in a reusable sandbox it kills every process but
// PID 1, otherwise the sandbox.
func (s *Sandbox) end(ctx context.Context) {
	if !s.reusable {
		s.kill(ctx)
		return
	}
	if err := s.reap(ctx); err != nil {
		s.c.log.Warn("reap: killing the sandbox instead", "container_id", s.id, "err", err)
		s.kill(ctx)
	}
}

// reap kills every process of the sandbox but PID 1, from inside: the
// helper's kill(-1) reaches exactly the sandbox user's processes of its
// PID namespace, atomically against fork.
func (s *Sandbox) reap(ctx context.Context) error {
	if s.agent != nil {
		return s.agent.send(agentproto.Request{Kill: true})
	}
	res, err := s.Helper(ctx, nil, io.Discard, "reap")
	if err == nil && res != 0 {
		err = fmt.Errorf("reap exited %d", res)
	}
	return err
}

// Helper runs sandboxd-init with args in the sandbox, as the sandbox user,
// and returns its exit code.
func (s *Sandbox) Helper(ctx context.Context, stdin io.Reader, stdout io.Writer, args ...string) (int, error) {
	cctx := s.c.ctx(context.WithoutCancel(ctx))
	ps := s.procSpec
	ps.Args = append([]string{InitPath}, args...)
	if stdin == nil {
		stdin = eofReader{}
	}
	in := &eofNotifier{r: stdin, eof: make(chan struct{})}
	var stderr bytes.Buffer
	execID := "h" + strconv.FormatUint(s.c.execSeq.Add(1), 10)
	proc, err := s.task.Exec(cctx, execID, &ps, cio.NewCreator(cio.WithStreams(in, stdout, &stderr), cio.WithFIFODir(fifoDir(s.c.cfg.StateDir))))
	if err != nil {
		return 0, fmt.Errorf("helper in %s: %w", s.id, err)
	}
	defer proc.Delete(cctx, containerd.WithProcessKill)
	statusC, err := proc.Wait(cctx)
	if err != nil {
		return 0, err
	}
	if err := proc.Start(cctx); err != nil {
		return 0, err
	}
	exited := make(chan struct{})
	defer close(exited)
	go func() {
		select {
		case <-in.eof:
			proc.CloseIO(cctx, containerd.WithStdinCloser)
		case <-exited:
		}
	}()
	var status containerd.ExitStatus
	select {
	case status = <-statusC:
	case <-ctx.Done():
		proc.Kill(cctx, syscall.SIGKILL)
		status = <-statusC
	}
	proc.IO().Wait()
	if code := int(status.ExitCode()); code != 0 && code < 3 {
		return code, fmt.Errorf("helper %s: %s", args[0], bytes.TrimSpace(stderr.Bytes()))
	}
	return int(status.ExitCode()), ctx.Err()
}

// eofNotifier closes eof when its reader is done.
type eofNotifier struct {
	r    io.Reader
	eof  chan struct{}
	once sync.Once
}

func (e *eofNotifier) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil {
		e.once.Do(func() { close(e.eof) })
	}
	return n, err
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

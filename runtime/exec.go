package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/containerd/errdefs"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// Exec runs p in the sandbox through its agent and waits for it and for
// all of its output. When ctx ends first, everything the execution started
// is killed (in a sandbox that is not reusable, the sandbox: it is then
// spent) and the result says Killed; the output written until then is
// kept.
func (s *Sandbox) Exec(ctx context.Context, p sandbox.Process) (sandbox.ExitResult, error) {
	cctx := s.c.ctx(context.WithoutCancel(ctx))
	if !s.Alive() {
		return sandbox.ExitResult{}, fmt.Errorf("sandbox %s: its PID 1 is gone: %w", s.id, errdefs.ErrFailedPrecondition)
	}
	// OOM kills are counted for the sandbox's life: only those after the
	// last count read are this process's, and an old event is not.
	oomBefore := s.oomSeen.Load()
	select {
	case <-s.oomC:
	default:
	}
	if len(p.Files) > 0 && !plainName(p.FilesDir) {
		return sandbox.ExitResult{}, fmt.Errorf("files dir %q: %w", p.FilesDir, errdefs.ErrInvalidArgument)
	}
	var before sandbox.Stats
	var beforeErr error
	var code []agentproto.File
	if p.Jail {
		// A jail not yet asked for is built for this execution's request.
		s.prepareDue.Store(0)
		// A cell's counters are its own: an execution's are what changed.
		// Without a count before, there is no usage (and the daemon does
		// not reuse the cell).
		before, beforeErr = s.countersBefore(cctx)
		// The code goes with the request, into the jail's own /sandbox:
		// no file on the host's disk.
		for name, content := range p.Files {
			if !plainName(name) {
				return sandbox.ExitResult{}, fmt.Errorf("sandbox file %q: %w", name, errdefs.ErrInvalidArgument)
			}
			code = append(code, agentproto.File{Path: p.FilesDir + "/" + name, Data: content, Mode: 0o644, Code: true})
		}
	} else if len(p.Files) > 0 {
		dir := filepath.Join(s.dir, p.FilesDir)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return sandbox.ExitResult{}, fmt.Errorf("sandbox %s: %w", s.id, err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			return sandbox.ExitResult{}, fmt.Errorf("sandbox %s: %w", s.id, err)
		}
		defer os.RemoveAll(dir)
		if err := writeFiles(dir, p.Files); err != nil {
			return sandbox.ExitResult{}, fmt.Errorf("sandbox %s: %w", s.id, err)
		}
	}
	res, err := s.agentExec(ctx, p, code)
	if p.Jail && err == nil && beforeErr == nil {
		if after, serr := s.Stats(cctx); serr == nil {
			res.Usage = &sandbox.Stats{CPUNanos: after.CPUNanos - before.CPUNanos, MemoryUsageBytes: after.MemoryUsageBytes,
				MemoryPeakBytes: after.MemoryPeakBytes, OOMKills: after.OOMKills - before.OOMKills,
				PidsLimitHits: after.PidsLimitHits - before.PidsLimitHits}
		}
	}
	if p.Jail && err == nil && res.Clean {
		// The cell may serve again: its next jail is built while it
		// waits, off the next execution's path, once this one's answer
		// is out (Answered).
		s.prepareDue.Store(s.prepareID.Add(1))
	}
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

// countersBefore returns a cell's counters before an execution, its memory
// peak reset: those read once the jail it takes was built (jailBuilt), or,
// when the execution comes before that, read now.
func (s *Sandbox) countersBefore(ctx context.Context) (sandbox.Stats, error) {
	s.aheadMu.Lock()
	defer s.aheadMu.Unlock()
	id := s.prepareID.Load()
	s.aheadTaken = id
	if id != 0 && s.aheadID == id && s.agent.prepared.Load() == id {
		return s.ahead, nil
	}
	st, err := s.Stats(ctx)
	s.resetPeak()
	return st, err
}

// jailBuilt reads a cell's counters, and resets its memory peak, once its
// agent says the jail of PrepareID id is built, unless an execution has
// started on it already (countersBefore).
func (s *Sandbox) jailBuilt(id uint64) {
	s.aheadMu.Lock()
	defer s.aheadMu.Unlock()
	if id != s.prepareID.Load() || id <= s.aheadTaken {
		return
	}
	st, err := s.Stats(s.c.ctx(context.Background()))
	if err != nil {
		return
	}
	s.resetPeak()
	s.ahead, s.aheadID = st, id
}

// prepareJail asks a cell's agent to build the jail of its next program
// now. A jail it cannot build fails that program's run instead.
func (s *Sandbox) prepareJail() {
	if s.jail != nil {
		s.sendPrepare(s.prepareID.Add(1))
	}
}

// sendPrepare asks for the jail of PrepareID id, apart: an execution's
// answer need not wait for it.
func (s *Sandbox) sendPrepare(id uint64) {
	s.agent.sendApart(agentproto.Request{Jail: s.jail, Prepare: true, PrepareID: id})
}

// Answered says that the answer of the cell's last execution is out: its
// agent then ends that execution's jail and builds the next one, about a
// millisecond of the kernel's and the agent's work that would otherwise
// share the CPUs with the answer on its way. An execution that comes
// first builds its jail itself.
func (s *Sandbox) Answered() {
	if id := s.prepareDue.Swap(0); id != 0 && id == s.prepareID.Load() {
		s.sendPrepare(id)
	}
}

// JailReady reports whether a cell's next jail is built, so that an
// execution would only hand its program over; always true for a sandbox
// that is not a cell.
func (s *Sandbox) JailReady() bool {
	return s.jail == nil || s.agent.prepared.Load() == s.prepareID.Load()
}

// writeFiles writes files, whose names are plain file names, into dir, a
// directory just made for them: none is there before, and nothing reads
// them until they are written.
func writeFiles(dir string, files map[string][]byte) error {
	for name, content := range files {
		if !plainName(name) {
			return fmt.Errorf("sandbox file %q: %w", name, errdefs.ErrInvalidArgument)
		}
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		_, err = f.Write(content)
		if err == nil {
			// The sandbox's user reads it, whatever the daemon's umask.
			err = f.Chmod(0o644)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// plainName reports whether name is a file name and no path.
func plainName(name string) bool {
	return name == filepath.Base(name) && name != "." && name != ".." && name != "/"
}

// endedAtLimit tells whether the kernel ended the whole sandbox at one of
// its limits, as it does under gVisor, whose own kernel holds the memory
// and the tasks of the programs; if so, that is how the execution ended.
func (s *Sandbox) endedAtLimit(ctx context.Context, oomBefore uint64) (sandbox.ExitResult, bool) {
	killed := sandbox.ExitResult{ExitCode: 128 + int(syscall.SIGKILL), Signal: int(syscall.SIGKILL)}
	switch {
	case s.oomKilled(ctx, oomBefore):
		killed.OOMKilled = true
	case pidsLimitHit(s.c.cgroupV2, CgroupsPath(s.c.cfg.Namespace, s.id)):
		killed.SandboxKilled = "the sandbox reached its process limit"
	default:
		return sandbox.ExitResult{}, false
	}
	return killed, true
}

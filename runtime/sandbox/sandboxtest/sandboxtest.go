// Package sandboxtest provides a fake container runtime for unit tests, as
// net/http/httptest provides a server: the daemon's tests and the CLI's
// share one fake rather than each keeping its own.
//
// Its Runtime and Sandbox speak package sandbox's values, as the real
// runtime does, and run nothing: a sandbox's Exec answers as the test
// scripts it. Create and AdoptSessions return this package's types, so a
// consumer wraps a Runtime in a few lines to meet its own interface, as
// cmd/sandboxd wraps the real runtime for the daemon.
//
// It imports only the standard library, package sandbox and containerd's
// errdefs (the classes the daemon tells errors apart by). Only tests may
// import it.
package sandboxtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// Image is the one image the fake holds: it is ready, and any other is
// not found, so tests can tell a language whose image is missing.
const Image = "present:1"

// ExecFunc answers a sandbox's Exec in place of a program.
type ExecFunc func(ctx context.Context, p sandbox.Process) (sandbox.ExitResult, error)

// Runtime is a fake container runtime that keeps what a test asserts on:
// the sandboxes created and deleted, the last process run, the list of
// containers. It may be "away", as containerd may: then it fails as the
// real runtime does when containerd does not answer.
//
// The zero Runtime is ready to use. Set its fields before the code under
// test uses it; the rest of its state is read through its methods, which
// are safe for concurrent use.
type Runtime struct {
	// Exec answers the Exec of every sandbox that has none of its own
	// (see Sandbox.SetExec). When nil, programs exit 0 at once.
	Exec ExecFunc
	// Collect answers every sandbox's Collect. When nil, nothing is
	// collected.
	Collect func() ([]sandbox.Collected, error)
	// Stats answers every sandbox's Stats. When nil, every sandbox has
	// counted 5ms of CPU and a 1 MiB memory peak.
	Stats func() (sandbox.Stats, error)
	// Creating, when set, is called by Create once the sandbox's container
	// is listed and before Create returns: a test that blocks in it sees
	// the daemon while a sandbox is being created.
	Creating func(cfg sandbox.Config)

	mu         sync.Mutex // guards what follows, and every Sandbox's state
	away       bool
	created    []sandbox.Config
	sandboxes  []*Sandbox
	containers []string
	deletes    int
	lastExec   sandbox.Process
	records    int // SetRecord calls
}

// RecordWrites counts the session records written (SetRecord).
func (r *Runtime) RecordWrites() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.records
}

// Adopted is a session's sandbox that AdoptSessions returns with its
// record, as the real runtime returns those an earlier daemon left.
type Adopted struct {
	Sandbox *Sandbox
	Record  sandbox.SessionRecord
}

// Create makes a sandbox and lists its container. Its record is
// cfg.Session's, kept to the millisecond.
func (r *Runtime) Create(_ context.Context, cfg sandbox.Config) (*Sandbox, error) {
	r.mu.Lock()
	if r.away {
		r.mu.Unlock()
		return nil, fmt.Errorf("create %s: %w", cfg.ID, errdefs.ErrUnavailable)
	}
	sb := &Sandbox{r: r, cfg: cfg}
	if cfg.Session != nil {
		sb.record = toMillisecond(*cfg.Session)
	}
	r.created = append(r.created, cfg)
	r.sandboxes = append(r.sandboxes, sb)
	r.containers = append(r.containers, cfg.ID)
	creating := r.Creating
	r.mu.Unlock()
	if creating != nil {
		creating(cfg)
	}
	return sb, nil
}

// AdoptSessions returns the session sandboxes not deleted, with their
// records, in the order they were created: what a daemon restarted on
// the same runtime finds.
func (r *Runtime) AdoptSessions(context.Context) ([]Adopted, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.away {
		return nil, fmt.Errorf("list containers: %w", errdefs.ErrUnavailable)
	}
	var out []Adopted
	for _, sb := range r.sandboxes {
		if sb.cfg.Kind == sandbox.KindSession && !sb.deleted {
			out = append(out, Adopted{Sandbox: sb, Record: sb.record})
		}
	}
	return out, nil
}

// List returns the ids of the containers listed: those of the sandboxes
// created and not deleted, and those added with AddContainer.
func (r *Runtime) List(context.Context) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.away {
		return nil, fmt.Errorf("list containers: %w", errdefs.ErrUnavailable)
	}
	return slices.Clone(r.containers), nil
}

// Info describes a containerd that serves unless the fake is away.
func (r *Runtime) Info(context.Context) sandbox.RuntimeInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return sandbox.RuntimeInfo{Address: "/fake.sock", Version: "1.0", CgroupVersion: 2, Serving: !r.away}
}

// OCIRuntimeReady says every OCI runtime can be used.
func (r *Runtime) OCIRuntimeReady(string) error { return nil }

// Images lists the one image the fake holds.
func (r *Runtime) Images(context.Context) ([]sandbox.ImageInfo, error) {
	return []sandbox.ImageInfo{{Ref: Image}}, nil
}

// ImportImages refuses every tarball: the fake's images are fixed.
func (r *Runtime) ImportImages(context.Context, io.Reader) ([]sandbox.ImageInfo, error) {
	return nil, fmt.Errorf("sandboxtest: images cannot be imported: %w", errdefs.ErrInvalidArgument)
}

// PullImage finds no image in any registry.
func (r *Runtime) PullImage(_ context.Context, ref string) error {
	return fmt.Errorf("image %s: %w", ref, errdefs.ErrNotFound)
}

// RemoveImage finds no image to remove: the fake's images are fixed.
func (r *Runtime) RemoveImage(_ context.Context, ref string) error {
	return fmt.Errorf("image %s: %w", ref, errdefs.ErrNotFound)
}

// ImageReady is ready for Image; any other image is not found.
func (r *Runtime) ImageReady(_ context.Context, ref string) error {
	if ref == Image {
		return nil
	}
	return fmt.Errorf("image %s: %w", ref, errdefs.ErrNotFound)
}

// SetAway makes containerd stop answering, or answer again: while away,
// creates, deletes and lists fail with an Unavailable error, and Info
// says it is not serving.
func (r *Runtime) SetAway(away bool) {
	r.mu.Lock()
	r.away = away
	r.mu.Unlock()
}

// AddContainer lists a container that no sandbox of the fake stands for,
// as one left by another program.
func (r *Runtime) AddContainer(id string) {
	r.mu.Lock()
	r.containers = append(r.containers, id)
	r.mu.Unlock()
}

// Created returns the configurations of the sandboxes created, in order.
func (r *Runtime) Created() []sandbox.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.created)
}

// Deletes returns how many times a sandbox's Delete succeeded.
func (r *Runtime) Deletes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.deletes
}

// LastExec returns the process that a sandbox ran last.
func (r *Runtime) LastExec() sandbox.Process {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastExec
}

// Sandbox returns the sandbox created with id, or nil.
func (r *Runtime) Sandbox(id string) *Sandbox {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, sb := range r.sandboxes {
		if sb.cfg.ID == id {
			return sb
		}
	}
	return nil
}

// Sandbox is a sandbox of the fake runtime. It keeps its session record,
// but no files: WriteFile, ReadFile and ListFiles fail as unsupported.
type Sandbox struct {
	r       *Runtime
	cfg     sandbox.Config
	exec    ExecFunc
	record  sandbox.SessionRecord
	deleted bool
	// building: its next jail is not built yet (SetJailReady).
	building bool
	// answers counts Answered.
	answers int
}

// ID returns the id the sandbox was created with.
func (s *Sandbox) ID() string { return s.cfg.ID }

// SetExec makes fn answer this sandbox's Exec in place of the runtime's
// Exec, so that one sandbox of many can be scripted.
func (s *Sandbox) SetExec(fn ExecFunc) {
	s.r.mu.Lock()
	s.exec = fn
	s.r.mu.Unlock()
}

// Deleted reports whether the sandbox's Delete succeeded.
func (s *Sandbox) Deleted() bool {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	return s.deleted
}

// Exec records p as the runtime's last process and answers with the
// sandbox's ExecFunc, or the runtime's, or exit 0.
func (s *Sandbox) Exec(ctx context.Context, p sandbox.Process) (sandbox.ExitResult, error) {
	s.r.mu.Lock()
	s.r.lastExec = p
	fn := s.exec
	if fn == nil {
		fn = s.r.Exec
	}
	s.r.mu.Unlock()
	if fn == nil {
		return sandbox.ExitResult{}, nil
	}
	return fn(ctx, p)
}

// Collect answers with the runtime's Collect, or collects nothing.
func (s *Sandbox) Collect(context.Context, []string, int64) ([]sandbox.Collected, error) {
	if s.r.Collect == nil {
		return nil, nil
	}
	return s.r.Collect()
}

// errNoFiles is why the fake's file operations fail: no test has needed
// a workspace yet, and succeeding without keeping the files would mislead
// one that does.
var errNoFiles = fmt.Errorf("sandboxtest: the fake keeps no files: %w", errors.ErrUnsupported)

// WriteFile fails: the fake keeps no files.
func (s *Sandbox) WriteFile(context.Context, string, uint32, []byte) error { return errNoFiles }

// ReadFile fails: the fake keeps no files.
func (s *Sandbox) ReadFile(context.Context, string, io.Writer, int64) error { return errNoFiles }

// ListFiles fails: the fake keeps no files.
func (s *Sandbox) ListFiles(context.Context) ([]sandbox.FileInfo, error) { return nil, errNoFiles }

// SetRecord replaces the sandbox's session record, kept to the
// millisecond as the real runtime keeps it, so that an adopted session
// reads back what a restarted daemon would.
func (s *Sandbox) SetRecord(_ context.Context, rec sandbox.SessionRecord) error {
	s.r.mu.Lock()
	s.record = toMillisecond(rec)
	s.r.records++
	s.r.mu.Unlock()
	return nil
}

// Stats answers with the runtime's Stats, or reports 5ms of CPU and a
// 1 MiB memory peak, so that a test sees usage carried through to results.
func (s *Sandbox) Stats(context.Context) (sandbox.Stats, error) {
	if s.r.Stats != nil {
		return s.r.Stats()
	}
	return sandbox.Stats{CPUNanos: 5e6, MemoryPeakBytes: 1 << 20}, nil
}

// SetJailReady says whether the sandbox's next jail is built, as a cell's
// agent does once it has built it; a sandbox is ready until told
// otherwise.
func (s *Sandbox) SetJailReady(ready bool) {
	s.r.mu.Lock()
	s.building = !ready
	s.r.mu.Unlock()
}

// JailReady reports what SetJailReady said last: true at first.
func (s *Sandbox) JailReady() bool {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	return !s.building
}

// Answered counts in Answers.
func (s *Sandbox) Answered() {
	s.r.mu.Lock()
	s.answers++
	s.r.mu.Unlock()
}

// Answers is how many times the daemon said an execution's answer was
// out.
func (s *Sandbox) Answers() int {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	return s.answers
}

// Alive reports whether the sandbox is not deleted: its PID 1 runs until
// then.
func (s *Sandbox) Alive() bool { return !s.Deleted() }

// Delete deletes the sandbox and unlists its container, unless the
// runtime is away. Each success counts in the runtime's Deletes.
func (s *Sandbox) Delete(context.Context) error {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	if s.r.away {
		return fmt.Errorf("delete %s: %w", s.cfg.ID, errdefs.ErrUnavailable)
	}
	s.r.deletes++
	s.deleted = true
	s.r.containers = slices.DeleteFunc(s.r.containers, func(id string) bool { return id == s.cfg.ID })
	return nil
}

// toMillisecond is rec with its times kept to the millisecond.
func toMillisecond(rec sandbox.SessionRecord) sandbox.SessionRecord {
	rec.Created, rec.LastUsed = time.UnixMilli(rec.Created.UnixMilli()), time.UnixMilli(rec.LastUsed.UnixMilli())
	return rec
}

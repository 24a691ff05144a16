package daemon

import (
	"context"
	"io"

	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// Runtime is what the daemon needs of a container runtime: sandboxes and
// the images they may be made from. cmd/sandboxd wires in the containerd
// one; tests use a fake. The values it speaks of are package sandbox's.
type Runtime interface {
	Sandboxes
	Images
}

// Sandboxes makes sandboxes and finds those an earlier daemon left.
type Sandboxes interface {
	// Create creates and starts a sandbox. On error nothing is left,
	// unless removing it failed too: a Sandbox returned with the error is
	// what is left, to be deleted later.
	Create(ctx context.Context, cfg sandbox.Config) (Sandbox, error)
	// AdoptSessions returns the sessions' sandboxes that an earlier daemon
	// left, alive or dead, with their records.
	AdoptSessions(ctx context.Context) ([]Adopted, error)
	// List returns the ids of every container the runtime holds for sandboxd.
	List(ctx context.Context) ([]string, error)
	// Info describes the runtime; Serving is false when it does not answer.
	Info(ctx context.Context) sandbox.RuntimeInfo
	// OCIRuntimeReady returns nil when an OCI runtime can be used, or why not.
	OCIRuntimeReady(name string) error
}

// Adopted is a session's sandbox left by an earlier daemon; Err says why
// its record could not be read back.
type Adopted struct {
	Sandbox Sandbox
	Record  sandbox.SessionRecord
	Err     error
}

// Images manages the images that sandboxes' roots may come from.
type Images interface {
	// Images lists the images in sandboxd's namespace.
	Images(ctx context.Context) ([]sandbox.ImageInfo, error)
	// ImportImages imports the images of a tarball (OCI layout or
	// docker-archive) and unpacks them.
	ImportImages(ctx context.Context, r io.Reader) ([]sandbox.ImageInfo, error)
	// PullImage fetches and unpacks an image from its registry.
	PullImage(ctx context.Context, ref string) error
	// RemoveImage deletes an image; a missing one is a NotFound error.
	RemoveImage(ctx context.Context, ref string) error
	// ImageReady returns nil when sandboxes can be made from an image,
	// readying it if need be, or why not (a NotFound error when missing).
	ImageReady(ctx context.Context, ref string) error
}

// Sandbox is one started sandbox.
type Sandbox interface {
	ID() string
	// Exec runs a process and waits for it and all of its output. When ctx
	// ends first, the execution is killed and the result says Killed.
	Exec(ctx context.Context, p sandbox.Process) (sandbox.ExitResult, error)
	// Collect returns the files of /workspace matching globs, with at most
	// max bytes of content in all, never following symlinks.
	Collect(ctx context.Context, globs []string, max int64) ([]sandbox.Collected, error)
	// WriteFile, ReadFile and ListFiles work on /workspace, never through
	// a symlink: a missing file is a NotFound error, a path that is not a
	// regular file or leaves /workspace an InvalidArgument one. ReadFile
	// copies at most max+1 bytes, so that w can tell a file over max.
	WriteFile(ctx context.Context, path string, mode uint32, data []byte) error
	ReadFile(ctx context.Context, path string, w io.Writer, max int64) error
	ListFiles(ctx context.Context) ([]sandbox.FileInfo, error)
	// SetRecord replaces the session record kept with the sandbox.
	SetRecord(ctx context.Context, r sandbox.SessionRecord) error
	// Stats reads the sandbox's kernel counters.
	Stats(ctx context.Context) (sandbox.Stats, error)
	// Alive reports whether the sandbox's PID 1 still runs.
	Alive() bool
	// JailReady reports whether a cell's next jail is built, so that an
	// execution there would only hand its program over; true for a
	// sandbox that is not a cell.
	JailReady() bool
	// Answered says that the answer of the sandbox's last execution is
	// out: a cell builds its next jail then, not while the answer is on
	// its way.
	Answered()
	// Delete destroys the sandbox and all in it, even when ctx is done.
	Delete(ctx context.Context) error
}

// sandboxClass is what makes sandboxes interchangeable: their root, their
// OCI runtime, and whether they are cells (see cells.go). A pool holds
// sandboxes of one class.
type sandboxClass struct {
	Image   string
	Runtime string
	Cells   bool
}

func (l Language) class() sandboxClass {
	rt := l.Runtime
	if rt == "" {
		rt = sandbox.DefaultOCIRuntime
	}
	return sandboxClass{Image: l.Image, Runtime: rt}
}

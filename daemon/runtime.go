package daemon

import (
	"context"
	"io"
	"time"
)

// Runtime is what the daemon needs of a container runtime. cmd/sandboxd
// wires in the containerd one; tests use a fake.
type Runtime interface {
	// Create creates and starts a sandbox. On error nothing is left,
	// unless removing it failed too: a Sandbox returned with the error is
	// what is left, to be deleted later.
	Create(ctx context.Context, cfg SandboxConfig) (Sandbox, error)
	// Adopt returns the sandboxes of a kind that an earlier daemon left,
	// alive or dead.
	Adopt(ctx context.Context, kind string) ([]Sandbox, error)
	// Info describes the runtime; Serving is false when it does not answer.
	Info(ctx context.Context) RuntimeInfo
	// List returns the ids of every container the runtime holds for sandboxd.
	List(ctx context.Context) ([]string, error)

	// Images lists the images in sandboxd's namespace.
	Images(ctx context.Context) ([]ImageInfo, error)
	// ImportImages imports the images of a tarball (OCI layout or
	// docker-archive) and unpacks them.
	ImportImages(ctx context.Context, r io.Reader) ([]ImageInfo, error)
	// PullImage fetches and unpacks an image from its registry.
	PullImage(ctx context.Context, ref string) error
	// RemoveImage deletes an image; a missing one is a NotFound error.
	RemoveImage(ctx context.Context, ref string) error
	// ImageReady returns nil when sandboxes can be made from an image,
	// readying it if need be, or why not (a NotFound error when missing).
	ImageReady(ctx context.Context, ref string) error
	// OCIRuntimeReady returns nil when an OCI runtime can be used, or why not.
	OCIRuntimeReady(name string) error
}

// ImageInfo describes an image.
type ImageInfo struct {
	Ref     string
	Digest  string
	Size    int64
	Created time.Time
}

// Sandbox is one started sandbox.
type Sandbox interface {
	ID() string
	// Exec runs a process and waits for it and all of its output. When ctx
	// ends first, the execution is killed and the result says Killed.
	Exec(ctx context.Context, p Process) (ExitResult, error)
	// Helper runs sandboxd-init with args inside the sandbox, as its user,
	// and returns the exit code.
	Helper(ctx context.Context, stdin io.Reader, stdout io.Writer, args ...string) (int, error)
	// Stats reads the sandbox's kernel counters.
	Stats(ctx context.Context) (Stats, error)
	// Labels and SetLabels keep what must outlive the daemon.
	Labels(ctx context.Context) (map[string]string, error)
	SetLabels(ctx context.Context, labels map[string]string) error
	// Alive reports whether the sandbox's PID 1 still runs.
	Alive() bool
	// Collect returns the files of /workspace matching globs, with at most
	// max bytes of content in all, never following symlinks.
	Collect(ctx context.Context, globs []string, max int64) ([]CollectedFile, error)
	// Delete destroys the sandbox and all in it, even when ctx is done.
	Delete(ctx context.Context) error
}

// SandboxConfig describes a sandbox to create.
type SandboxConfig struct {
	ID       string
	Kind     string            // what the sandbox is for: "execute" or "session"
	Labels   map[string]string // what must outlive the daemon
	Env      []string
	Limits   SandboxLimits
	Reusable bool // many executions; each ends by killing its processes only
	// Image, when set, is the OCI image the sandbox's root comes from.
	Image string
	// OCIRuntime is runc when empty, or another, such as runsc.
	OCIRuntime string
}

// sandboxClass is what makes sandboxes interchangeable: their root and
// their OCI runtime. A pool holds sandboxes of one class.
type sandboxClass struct {
	Image   string
	Runtime string
}

// defaultOCIRuntime is the OCI runtime of a language that names none.
const defaultOCIRuntime = "runc"

func (l Language) class() sandboxClass {
	rt := l.Runtime
	if rt == "" {
		rt = defaultOCIRuntime
	}
	return sandboxClass{Image: l.Image, Runtime: rt}
}

// SandboxLimits are enforced by the kernel on the whole sandbox.
type SandboxLimits struct {
	MemoryBytes   int64
	CPUs          float64
	Pids          int64
	TmpfsBytes    int64
	NoFile        uint64
	FileSizeBytes uint64
}

// Process is a program to run in a sandbox.
type Process struct {
	Args   []string
	Env    []string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Last says the execution ends with this process: what the process leaves
	// running is killed when it exits.
	Last bool
	// Files are placed read-only in /sandbox/FilesDir while it runs.
	Files    map[string][]byte
	FilesDir string
	// WorkspaceFiles are written into /workspace before it runs.
	WorkspaceFiles []WorkspaceFile
	// StdinLive says Stdin is fed while the process runs.
	StdinLive bool
}

// WorkspaceFile is a file placed in /workspace.
type WorkspaceFile struct {
	Path string
	Data []byte
	Mode uint32
}

// CollectedFile is a file of /workspace; Data is nil when over the cap.
type CollectedFile struct {
	Path      string
	Size      int64
	Data      []byte
	Truncated bool
}

// ExitResult is how a process ended.
type ExitResult struct {
	ExitCode  int
	Signal    int // the signal that killed the process, or 0
	Killed    bool
	OOMKilled bool
	// SandboxKilled, when set, says why the kernel ended the whole sandbox
	// during the process (its process limit, under gVisor).
	SandboxKilled string
}

// Stats are a sandbox's kernel counters.
type Stats struct {
	CPUNanos         uint64
	MemoryUsageBytes uint64
	MemoryPeakBytes  uint64
}

// RuntimeInfo describes the runtime.
type RuntimeInfo struct {
	Address       string
	Version       string
	Managed       bool
	CgroupVersion int
	Serving       bool
	// StateDir is where sandboxes' files live; StateDirErr says why no
	// sandbox can be created there (full, read-only), or is nil.
	StateDir    string
	StateDirErr error
}

// Package sandbox holds the values that the daemon and the runtime both
// speak of: what a sandbox is made of, what runs in it, how that ended,
// what it counted, its files, and what a session keeps across daemon
// restarts. The daemon declares the interfaces it consumes in these terms
// and the runtime implements them, so neither mirrors the other's types.
//
// It imports only the standard library.
package sandbox

import (
	"io"
	"time"
)

// Config describes a sandbox to create.
type Config struct {
	ID   string
	Kind string // what the sandbox is for: one of the Kind constants
	// Session, for a session's sandbox, is kept with the sandbox so that a
	// restarted daemon adopts it (SetRecord updates it).
	Session *SessionRecord
	Env     []string // the base environment of its processes
	Limits  Limits
	// Reusable sandboxes run many executions: at the end of each, its
	// processes are killed, not the sandbox.
	Reusable bool
	// Image, when set, is the OCI image whose root the sandbox has, as a
	// read-only view, instead of the host's.
	Image string
	// Jails makes the sandbox a cell: each process with Jail set runs in a
	// jail of its own that the sandbox's agent builds, so that the sandbox
	// can serve many executions. Only under runc.
	Jails bool
	// OCIRuntime is DefaultOCIRuntime when empty, or another, such as
	// runsc.
	OCIRuntime string
}

// DefaultOCIRuntime is the OCI runtime of a sandbox that names none.
const DefaultOCIRuntime = "runc"

// The kinds of sandboxes. Sessions outlive the daemon; the rest are
// deleted by the next one.
const (
	KindExecute = "execute" // one execution's
	KindPool    = "pool"    // made ahead, waiting for an execution
	KindSession = "session"
)

// Limits are enforced by the kernel on the whole sandbox.
type Limits struct {
	MemoryBytes   int64   // cgroup memory limit; swap is disabled
	CPUs          float64 // cgroup CPU quota, in CPUs
	Pids          int64   // cgroup pids limit
	TmpfsBytes    int64   // size of /tmp and of /workspace, each
	NoFile        uint64  // RLIMIT_NOFILE
	FileSizeBytes uint64  // RLIMIT_FSIZE
}

// Process is a program to run in a sandbox.
type Process struct {
	Args   []string
	Env    []string // added to the sandbox's base environment
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Last says the execution ends with this process: what it leaves
	// running is killed when it exits, rather than holding its output
	// open. In a reusable sandbox that is every process but PID 1;
	// otherwise the whole sandbox.
	Last bool
	// Files are placed read-only in /sandbox/FilesDir for the time of the
	// process; FilesDir is a plain name.
	Files    map[string][]byte
	FilesDir string
	// WorkspaceFiles are written into /workspace before the process runs.
	WorkspaceFiles []File
	// StdinLive says Stdin is fed while the process runs: it is forwarded
	// as it comes rather than read whole first.
	StdinLive bool
	// Jail runs the process in a fresh jail of the cell's (Config.Jails):
	// when it exits, nothing it started is left. WorkspaceFiles are then
	// written into the jail's /workspace.
	Jail bool
	// Cell runs code in the sandbox's long-lived interpreter, which Args
	// (its driver) starts when none runs: an interpreter session's cell.
	Cell *Cell
}

// Cell is code for a session's interpreter.
type Cell struct {
	// Language names the interpreter: python or javascript.
	Language string
	Code     string
	// Restart ends the interpreter and starts a fresh one, running no
	// code.
	Restart bool
}

// CellResult is how a cell ended.
type CellResult struct {
	// Result is the driver's result (runtime/drivers): value, error and
	// outputs, as JSON; nil when the interpreter died or was killed during
	// the cell.
	Result []byte
	// Lost says the interpreter that held the session's state died or was
	// killed since the last cell: its state is gone.
	Lost bool
	// Starts counts the interpreters the sandbox has started.
	Starts int64
}

// ExitResult is how a process ended.
type ExitResult struct {
	ExitCode  int
	Signal    int  // the signal that killed the process, or 0
	Killed    bool // killed because its context ended
	OOMKilled bool // the kernel's OOM killer struck in the sandbox
	// SandboxKilled, when set, says why the kernel ended the whole sandbox
	// during the process (its process limit, under gVisor).
	SandboxKilled string
	// Clean, after a jailed process, says that nothing of it is left in
	// the cell: no process but the agent.
	Clean bool
	// Usage, after a jailed process, is what the cell's counters counted
	// during it; its memory peak is the cell's own where the kernel cannot
	// reset it (cgroup v2).
	Usage *Stats
	// Cell is set after a cell (Process.Cell).
	Cell *CellResult
}

// Stats are a sandbox's kernel counters.
type Stats struct {
	CPUNanos         uint64
	MemoryUsageBytes uint64
	MemoryPeakBytes  uint64
	OOMKills         uint64
	// PidsLimitHits counts the forks refused at the pids limit.
	PidsLimitHits uint64
}

// File is a file to place in /workspace.
type File struct {
	Path string
	Data []byte
	Mode uint32
}

// FileInfo describes an entry of /workspace.
type FileInfo struct {
	Path string
	Size int64
	Mode uint32
	Type string // file, dir, symlink or other
}

// Collected is a file of /workspace returned after a run; Data is nil when
// it was over the cap.
type Collected struct {
	Path      string
	Size      int64
	Data      []byte
	Truncated bool
}

// SessionRecord is what a session keeps across daemon restarts.
type SessionRecord struct {
	Owner      uint32
	Language   string
	Created    time.Time // kept to the millisecond
	LastUsed   time.Time // kept to the millisecond
	Executions int64
	Limits     SessionLimits
	// Image and Runtime are the session's sandbox class.
	Image   string
	Runtime string
	// Interpreter is set for an interpreter session; Restarts counts its
	// interpreter's restarts.
	Interpreter bool
	Restarts    int64
}

// SessionLimits are the limits a session was created with.
type SessionLimits struct {
	MemoryBytes   int64   `json:"memory_bytes"`
	CPUs          float64 `json:"cpus"`
	Pids          int64   `json:"pids"`
	TmpfsBytes    int64   `json:"tmpfs_bytes"`
	IdleTimeoutMS int64   `json:"idle_timeout_ms"`
	MaxLifetimeMS int64   `json:"max_lifetime_ms"`
}

// ImageInfo describes an image.
type ImageInfo struct {
	Ref     string
	Digest  string
	Size    int64
	Created time.Time
}

// RuntimeInfo describes the runtime.
type RuntimeInfo struct {
	Address       string
	Version       string
	Managed       bool // sandboxd started this containerd itself
	CgroupVersion int
	Serving       bool // containerd answers
	// StateDir is where sandboxes' files live; StateDirErr says why no
	// sandbox can be created there (full, read-only), or is nil.
	StateDir    string
	StateDirErr error
}

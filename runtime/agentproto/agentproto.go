// Package agentproto is the protocol between sandboxd and sandboxd-init,
// its agent as PID 1 of each sandbox: JSON lines, requests on the agent's
// stdin and frames back on its stdout (in a cell, both on a socket:
// ChannelName). A request's files follow its line
// raw, in order, their sizes given in the line: neither side holds them
// in base64 (WriteRequest, ReadRequest).
//
// It imports only the standard library, so that sandboxd-init, a small
// static binary, shares these types with the runtime and nothing else.
package agentproto

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Request asks the agent to run a program, to feed or kill what runs, or
// to collect files.
type Request struct {
	Args  []string `json:"args,omitempty"`
	Env   []string `json:"env,omitempty"`
	Dir   string   `json:"dir,omitempty"`
	Stdin []byte   `json:"stdin,omitempty"`
	// Last kills whatever the program leaves running once it exits.
	Last bool `json:"last,omitempty"`
	// StdinLive keeps the program's stdin open after Stdin: more comes in
	// StdinData requests while it runs, until a StdinClose one.
	StdinLive  bool   `json:"stdin_live,omitempty"`
	StdinData  []byte `json:"stdin_data,omitempty"`
	StdinClose bool   `json:"stdin_close,omitempty"`
	Kill       bool   `json:"kill,omitempty"`
	// Exit ends the agent, and with it the sandbox: the kernel kills what
	// is left in its PID namespace. A spent sandbox is ended so, which
	// spares its teardown a kill from outside (a runtime process).
	Exit bool `json:"exit,omitempty"`
	// Files are written into the workspace before the program starts.
	Files []File `json:"files,omitempty"`
	// Collect, without Args, asks for the workspace's files that match
	// these globs, up to CollectMax bytes of content.
	Collect    []string `json:"collect,omitempty"`
	CollectMax int64    `json:"collect_max,omitempty"`

	// The workspace's file operations, without Args; each is answered by
	// its frames and an exit frame, whose Code classifies a failure.
	// WriteFiles writes Files. ReadFile sends a file's content in Stdout
	// frames, at most ReadMax+1 bytes of it, so that the reader tells a
	// file over its cap. ListFiles sends an Entry frame per entry.
	WriteFiles bool   `json:"write_files,omitempty"`
	ReadFile   string `json:"read_file,omitempty"`
	ReadMax    int64  `json:"read_max,omitempty"`
	ListFiles  bool   `json:"list_files,omitempty"`

	// Jail, when set, runs the program in a jail of its own that the agent
	// builds inside the sandbox (see Jail): a run leaves nothing behind.
	Jail *Jail `json:"jail,omitempty"`
	// Prepare, with Jail and without Args, builds that jail now, so that
	// the next run in the same jail only hands its program over. Once the
	// jail is built, a Prepared frame carrying PrepareID says so; a jail
	// that cannot be built fails that run.
	Prepare   bool   `json:"prepare,omitempty"`
	PrepareID uint64 `json:"prepare_id,omitempty"`

	// Cell, with Args (the interpreter's driver, runtime/drivers), runs
	// code as a cell of the sandbox's long-lived interpreter, which it
	// starts when none runs. See Cell.
	Cell *Cell `json:"cell,omitempty"`

	// Sync asks for a Sync frame carrying the same value once everything
	// asked before has been answered: a daemon that attaches to a running
	// agent (after a restart) discards what the stream holds until then.
	Sync string `json:"sync,omitempty"`
}

// Frame is one message back: output, a collected file, or the end of the
// run.
type Frame struct {
	Stream int        `json:"s,omitempty"` // Stdout or Stderr
	Data   []byte     `json:"d,omitempty"`
	Exit   *int       `json:"exit,omitempty"`
	Signal int        `json:"signal,omitempty"`
	Error  string     `json:"error,omitempty"`
	File   *Collected `json:"file,omitempty"`
	Entry  *Entry     `json:"entry,omitempty"`
	Sync   string     `json:"sync,omitempty"`
	// Code classifies the Error of a file operation's exit frame.
	Code string `json:"code,omitempty"`
	// Clean, on the exit frame of a jailed run, says that nothing of the
	// run is left: no process but the agent runs in the sandbox.
	Clean bool `json:"clean,omitempty"`
	// Cell, on the exit frame of a cell, is the driver's result line
	// (value, error, outputs), as it wrote it; absent when the interpreter
	// died or was killed during the cell.
	Cell json.RawMessage `json:"cell,omitempty"`
	// Lost, on the exit frame of a cell, says the interpreter that held
	// the session's state died or was killed since the last cell (its
	// state is gone); Starts counts the interpreters started.
	Lost   bool  `json:"lost,omitempty"`
	Starts int64 `json:"starts,omitempty"`
	// Prepared, alone in its frame, is the PrepareID of a jail built
	// ahead and waiting for its program. It may come in the middle of
	// another request's frames.
	Prepared uint64 `json:"prepared,omitempty"`
}

// Cell is code for the interpreter of a session. The agent writes it to
// the driver, streams what the interpreter writes meanwhile as output
// frames, and answers with an exit frame carrying the driver's result.
// A kill request interrupts the cell (SIGINT); an interpreter that does
// not answer within a grace is killed and started anew at the next cell.
// What the cell started besides is killed when it ends; the interpreter
// stays.
type Cell struct {
	ID   int64  `json:"id"`
	Code string `json:"code"`
	// Restart ends the interpreter and starts a fresh one, running no
	// code.
	Restart bool `json:"restart,omitempty"`
}

// Jail describes the jail a program runs in: new user (the sandbox's user
// mapped onto itself), PID, mount, IPC, UTS and network namespaces; a root
// of the sandbox's, read-only, with fresh size-capped tmpfs for /tmp,
// /workspace and /dev/shm and a fresh /proc masked as the sandbox's own
// would be; no capability; a second seccomp filter that refuses what only
// building jails needs.
type Jail struct {
	TmpfsBytes int64 `json:"tmpfs_bytes"`
	// ProcMasked are paths of /proc hidden from the program (a file under
	// /dev/null, a directory under an empty read-only tmpfs); ProcReadOnly
	// are made read-only.
	ProcMasked   []string `json:"proc_masked,omitempty"`
	ProcReadOnly []string `json:"proc_read_only,omitempty"`
	// Binds are the sandbox's bind mounts (a language's host paths) under
	// /tmp or /workspace, which the fresh ones would hide: the jail binds
	// them again.
	Binds []string `json:"binds,omitempty"`
}

// A cell's agent (ChannelEnv set to "1" in its environment) also listens
// on an abstract Unix socket, ChannelName, which only its sandbox's network
// namespace holds (a jail has its own): sandboxd connects there, from
// outside the sandbox, to speak this protocol without the round trips
// through containerd's shim that stdio takes. Whichever comes first, a
// connection or a request on stdin, is the channel for the agent's life;
// the listener is closed then.
const (
	ChannelEnv  = AgentEnvPrefix + "CHANNEL"
	ChannelName = "@sandboxd-agent"
)

// TaskLimitEnv, in every agent's environment, is its sandbox's task limit
// (processes and threads), which the agent shares with its programs: it
// makes its own threads within it at its start.
const TaskLimitEnv = AgentEnvPrefix + "TASK_LIMIT"

// AgentEnvPrefix begins the names of what the environment of a sandbox's
// PID 1 says to the agent alone: its programs do not get them. Every such
// name is made from it, so that none can reach a program by a typo.
const AgentEnvPrefix = "SANDBOXD_AGENT_"

// The classes of a file operation's failure.
const (
	CodeNotFound = "not_found" // no such file
	CodeInvalid  = "invalid"   // not a regular file, or a path that leaves the workspace
)

// Entry is an entry of the workspace, as ListFiles sends it.
type Entry struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
	Mode uint32 `json:"mode"`
	Type string `json:"type"` // file, dir, symlink, other
}

// The streams of a Frame's output.
const (
	Stdout = 1
	Stderr = 2
)

// File is a file to place in the workspace. Its Data travels after the
// request's line, Size bytes.
type File struct {
	Path string `json:"path"`
	Data []byte `json:"-"`
	Size int64  `json:"size"`
	Mode uint32 `json:"mode"`
	// Code, only in a jailed run, is the program's code: written under
	// the jail's own /sandbox, which the program sees read-only, rather
	// than into /workspace.
	Code bool `json:"code,omitempty"`
}

// MaxFileSize bounds a file's size as a request gives it, so that a
// corrupt stream cannot make the agent allocate without end.
const MaxFileSize = 1 << 30

// WriteRequest writes r's line, then its files' contents. Callers write
// one request at a time.
func WriteRequest(w io.Writer, r Request) error {
	r.Files = append([]File(nil), r.Files...) // the caller's stay as they are
	for i := range r.Files {
		r.Files[i].Size = int64(len(r.Files[i].Data))
	}
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := w.Write(append(line, '\n')); err != nil {
		return err
	}
	for _, f := range r.Files {
		if _, err := w.Write(f.Data); err != nil {
			return err
		}
	}
	return nil
}

// ErrMalformed says a request could not be read as one: a line that is
// not a request, or files of impossible sizes. The reader may go on at the
// next line: a request torn by a daemon that died while writing it is
// skipped so.
var ErrMalformed = errors.New("malformed request")

// ReadRequest reads a request's line and its files' contents.
func ReadRequest(r *bufio.Reader) (Request, error) {
	req, err := ReadRequestLine(r)
	if err != nil {
		return req, err
	}
	return req, ReadFiles(r, &req)
}

// ReadRequestLine reads a request's line; the contents of its files
// follow, for ReadFiles.
func ReadRequestLine(r *bufio.Reader) (Request, error) {
	var req Request
	line, err := r.ReadBytes('\n')
	if err != nil {
		if errors.Is(err, io.EOF) && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return req, err
	}
	if err := json.Unmarshal(line, &req); err != nil {
		return req, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	for _, f := range req.Files {
		if f.Size < 0 || f.Size > MaxFileSize {
			return req, fmt.Errorf("%w: file %q: size %d", ErrMalformed, f.Path, f.Size)
		}
	}
	return req, nil
}

// ReadFiles reads the contents of req's files, which follow its line.
func ReadFiles(r io.Reader, req *Request) error {
	for i, f := range req.Files {
		req.Files[i].Data = make([]byte, f.Size)
		if _, err := io.ReadFull(r, req.Files[i].Data); err != nil {
			return fmt.Errorf("file %q: %w", f.Path, err)
		}
	}
	return nil
}

// Collected is a file of the workspace returned after a run; Data is nil
// when it was over the cap.
type Collected struct {
	Path      string `json:"path"`
	Size      int64  `json:"size"`
	Data      []byte `json:"data,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`
}

// Package api holds the wire types of sandboxd's HTTP API: requests,
// responses, error codes and the mapping of codes to HTTP statuses.
//
// It imports only the standard library, so that clients (such as ctl) can use
// it without pulling in the daemon.
package api

import (
	"fmt"
	"net/http"
)

// VersionHeader carries the daemon's version on every response.
const VersionHeader = "Sandboxd-Version"

// DefaultSocket is where sandboxd listens unless told otherwise.
const DefaultSocket = "/run/sandboxd/sandboxd.sock"

// Status of an execution.
const (
	StatusOK           = "ok"
	StatusFailed       = "failed"
	StatusSignaled     = "signaled"
	StatusTimedOut     = "timed_out"
	StatusOOMKilled    = "oom_killed"
	StatusCompileError = "compile_error"
)

// Phases of an execution: the step it ended in.
const (
	PhaseCompile = "compile" // a compiled language's compile step
	PhaseRun     = "run"
)

// EncodingBase64 marks an output stream that is not valid UTF-8.
const EncodingBase64 = "base64"

// ExecuteRequest is the body of POST /v1/execute.
type ExecuteRequest struct {
	Language    string            `json:"language"`
	Code        string            `json:"code"`
	Stdin       string            `json:"stdin,omitempty"`
	TimeoutMS   int64             `json:"timeout_ms,omitempty"`
	MemoryBytes int64             `json:"memory_bytes,omitempty"`
	Args        []string          `json:"args,omitempty"`
	Env         map[string]string `json:"env,omitempty"`
	// SessionID runs the code in a session; Language may then be left out.
	SessionID string `json:"session_id,omitempty"`
	// Files are placed under /workspace before the run; Entrypoint names
	// the one to run, instead of Code.
	Files      []File `json:"files,omitempty"`
	Entrypoint string `json:"entrypoint,omitempty"`
	// Collect lists globs, relative to /workspace, of files to return.
	Collect []string `json:"collect,omitempty"`
	// StdinStream, with a streamed (NDJSON) execution, keeps the program's
	// stdin open after Stdin: more comes by POST /v1/executions/{id}/stdin,
	// the id being the start event's, until that request's body ends.
	StdinStream bool `json:"stdin_stream,omitempty"`
	// Runtime asks for an OCI runtime other than the language's, such as
	// "runsc" (gVisor), for a language that runs on runc by default; a
	// language configured with another runtime always runs on it.
	Runtime string `json:"runtime,omitempty"`
}

// File is a file of a submission, or one returned by collect.
type File struct {
	Path     string `json:"path"`
	Content  string `json:"content,omitempty"`
	Encoding string `json:"encoding,omitempty"` // "utf-8" (the default) or "base64"
	Mode     uint32 `json:"mode,omitempty"`     // permissions; default 0644
	// Size and Truncated are set on returned files: over the cap, a file
	// is listed with Truncated and no content.
	Size      int64 `json:"size,omitempty"`
	Truncated bool  `json:"truncated,omitempty"`
}

// Usage is what an execution consumed, as the kernel's cgroup counted it.
type Usage struct {
	CPUMS           int64 `json:"cpu_ms"`
	MemoryPeakBytes int64 `json:"memory_peak_bytes"`
}

// ExecuteResult is the answer to POST /v1/execute, whatever the program did.
type ExecuteResult struct {
	ID              string `json:"id"`
	SessionID       string `json:"session_id,omitempty"`
	Language        string `json:"language"`
	Runtime         string `json:"runtime"` // the OCI runtime it ran on
	Status          string `json:"status"`
	ExitCode        int    `json:"exit_code"`
	Signal          string `json:"signal,omitempty"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	StdoutEncoding  string `json:"stdout_encoding,omitempty"`
	StderrEncoding  string `json:"stderr_encoding,omitempty"`
	StdoutTruncated bool   `json:"stdout_truncated"`
	StderrTruncated bool   `json:"stderr_truncated"`
	TimedOut        bool   `json:"timed_out"`
	OOMKilled       bool   `json:"oom_killed"`
	DurationMS      int64  `json:"duration_ms"`
	// Phase is the step the execution ended in: PhaseCompile when a
	// compiled language's compiler failed or was ended by a limit (the
	// status says which: compile_error, oom_killed, timed_out…),
	// PhaseRun otherwise. It is empty only when the execution timed out
	// before either step began (waiting for its session's turn).
	Phase string `json:"phase,omitempty"`
	// Message is sandboxd's note on how the execution ended, when the
	// status alone does not say it: "the sandbox reached its process
	// limit"; the limit that ended a compile; and, when the files to
	// collect went with a sandbox the kernel ended, "no files were
	// collected".
	Message string `json:"message,omitempty"`
	Usage   Usage  `json:"usage"`
	Files   []File `json:"files,omitempty"`

	// A cell of an interpreter session (see CreateSessionRequest).
	// Value is the text form of the cell's last expression, as a REPL
	// shows it (repr in python, util.inspect in node); omitted when the
	// cell ends with a statement or its value is None/undefined.
	Value string `json:"value,omitempty"`
	// Error is set when the cell raised: the status is then failed and
	// the interpreter's state is kept.
	Error *CellError `json:"error,omitempty"`
	// Outputs are the rich outputs the cell displayed, in order.
	Outputs []Output `json:"outputs,omitempty"`
	// StateLost says the interpreter was restarted (a timeout it did not
	// answer, an OOM kill, a restart asked for) since the last result its
	// caller received: the variables and imports of earlier cells are
	// gone.
	StateLost bool `json:"state_lost,omitempty"`
}

// CellError is an exception a cell raised.
type CellError struct {
	Name      string `json:"name"`
	Message   string `json:"message"`
	Traceback string `json:"traceback,omitempty"`
}

// Output is a rich output of a cell: a figure drawn, an object displayed.
type Output struct {
	// MIME is image/png, image/svg+xml, text/html, application/json or
	// text/plain.
	MIME string `json:"mime"`
	// Data is the content: base64 for image/png, text otherwise.
	Data string `json:"data"`
}

// NDJSON is the media type of streamed executions: ask for it in Accept.
const NDJSON = "application/x-ndjson"

// Event types of a streamed execution.
const (
	EventStart  = "start"
	EventStdout = "stdout"
	EventStderr = "stderr"
	EventResult = "result"
	EventError  = "error"
)

// StreamEvent is one line of a streamed execution: a start event, output
// chunks as the program writes them, then exactly one result event (or an
// error event when the execution could not finish).
type StreamEvent struct {
	Type      string `json:"type"`
	ID        string `json:"id,omitempty"`
	SessionID string `json:"session_id,omitempty"`
	Language  string `json:"language,omitempty"`
	// Data is a chunk of output; base64 when Encoding says so (a chunk
	// that is not valid UTF-8).
	Data     string `json:"data,omitempty"`
	Encoding string `json:"encoding,omitempty"`
	// Error and Code are set on an error event.
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`
}

// ResultEvent is the last event of a streamed execution: the full result,
// with its type.
type ResultEvent struct {
	Type string `json:"type"`
	ExecuteResult
}

// Language is one entry of GET /v1/languages.
type Language struct {
	Name       string   `json:"name"`
	Aliases    []string `json:"aliases,omitempty"`
	Extensions []string `json:"extensions,omitempty"`
	Version    string   `json:"version"`
	FileName   string   `json:"file_name"`
	Compiled   bool     `json:"compiled"`
	// Runtime is the OCI runtime its sandboxes run on: runc or runsc.
	Runtime string `json:"runtime"`
	// Image is the OCI image its sandboxes' root comes from; empty: the
	// host's runtimes.
	Image string `json:"image,omitempty"`
	// Available says whether the language can run now; when not,
	// Unavailable says why (its tool is not on the host, its image is
	// missing, say) and how to fix it.
	Available   bool   `json:"available"`
	Unavailable string `json:"unavailable,omitempty"`
	// Missing is the tool the host lacks, when that is why it is
	// unavailable: installing Package provides it.
	Missing string `json:"missing,omitempty"`
	// Package is the Debian package that provides its tools on the host
	// (a built-in language's; for one from an image, see Image).
	Package string `json:"package,omitempty"`
	// TimeoutMS and MemoryBytes are its executions' defaults where they
	// are not the daemon's: what its tools need (a compiler on a JVM).
	TimeoutMS   int64 `json:"timeout_ms,omitempty"`
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
}

// Image is an OCI image in sandboxd's containerd namespace.
type Image struct {
	Ref       string `json:"ref"`
	Digest    string `json:"digest"`
	SizeBytes int64  `json:"size_bytes"`
	Created   string `json:"created,omitempty"` // RFC 3339
	// Languages are those configured to run from it.
	Languages []string `json:"languages,omitempty"`
}

// ImagesResponse is the answer to GET /v1/images and to an import.
type ImagesResponse struct {
	Images []Image `json:"images"`
}

// PullRequest is the body of POST /v1/images/pull.
type PullRequest struct {
	Ref string `json:"ref"`
}

// LanguagesResponse is the answer to GET /v1/languages.
type LanguagesResponse struct {
	Languages []Language `json:"languages"`
}

// Limits are the defaults and maxima the daemon applies.
type Limits struct {
	TimeoutMS      int64   `json:"timeout_ms"`
	MaxTimeoutMS   int64   `json:"max_timeout_ms"`
	MemoryBytes    int64   `json:"memory_bytes"`
	MaxMemoryBytes int64   `json:"max_memory_bytes"`
	CPUs           float64 `json:"cpus"`
	Pids           int64   `json:"pids"`
	TmpfsBytes     int64   `json:"tmpfs_bytes"`
	OutputBytes    int64   `json:"output_bytes"`
	MaxCodeBytes   int64   `json:"max_code_bytes"`
	MaxStdinBytes  int64   `json:"max_stdin_bytes"`
	MaxConcurrent  int     `json:"max_concurrent"`
	MaxQueued      int     `json:"max_queued"`
}

// Info is the answer to GET /v1/info.
type Info struct {
	Version           string `json:"version"`
	StartedAt         string `json:"started_at"`
	UptimeSeconds     int64  `json:"uptime_seconds"`
	ContainerdAddress string `json:"containerd_address"`
	ContainerdVersion string `json:"containerd_version"`
	ContainerdManaged bool   `json:"containerd_managed"`
	CgroupVersion     int    `json:"cgroup_version"`
	Running           int    `json:"running"`
	Queued            int    `json:"queued"`
	Sessions          int    `json:"sessions"`
	Limits            Limits `json:"limits"`
	// Runtimes are the OCI runtimes requests may name: runc and those
	// configured, such as runsc.
	Runtimes []string `json:"runtimes"`
}

// Health is the answer to GET /v1/health.
type Health struct {
	Status     string `json:"status"` // "ok" or "unavailable"
	Containerd string `json:"containerd"`
	// StateDir is "writable", or why no sandbox can be created in the
	// daemon's state directory (full, read-only).
	StateDir string `json:"state_dir,omitempty"`
	// Draining is true once POST /v1/drain was called: the daemon takes no
	// new executions or sessions, and is not ready.
	Draining bool `json:"draining,omitempty"`
	// Pool, asked with ?ready=1, is "warm" once each pool that can be
	// filled has made its size of sandboxes since start, or says how far
	// the pools are.
	Pool string `json:"pool,omitempty"`
}

// Session states.
const (
	SessionRunning = "running"
	// SessionDead is a session whose sandbox died (its PID 1 was killed,
	// by the OOM killer for example): it answers no execution, and stays
	// listed until deleted or expired, never silently replaced.
	SessionDead = "dead"
)

// CreateSessionRequest is the body of POST /v1/sessions.
type CreateSessionRequest struct {
	Language      string            `json:"language"`
	MemoryBytes   int64             `json:"memory_bytes,omitempty"`
	IdleTimeoutMS int64             `json:"idle_timeout_ms,omitempty"`
	MaxLifetimeMS int64             `json:"max_lifetime_ms,omitempty"`
	Env           map[string]string `json:"env,omitempty"`
	// Runtime is as ExecuteRequest's.
	Runtime string `json:"runtime,omitempty"`
	// Interpreter runs one long-lived interpreter of Language (python or
	// javascript) in the session: each execution of that language is a
	// cell run in its global state, as in a notebook. Executions of other
	// languages still run beside it.
	Interpreter bool `json:"interpreter,omitempty"`
}

// SessionLimits cover a whole session.
type SessionLimits struct {
	MemoryBytes   int64   `json:"memory_bytes"`
	CPUs          float64 `json:"cpus"`
	Pids          int64   `json:"pids"`
	TmpfsBytes    int64   `json:"tmpfs_bytes"`
	IdleTimeoutMS int64   `json:"idle_timeout_ms"`
	MaxLifetimeMS int64   `json:"max_lifetime_ms"`
}

// Session is a long-lived sandbox whose /workspace persists across
// executions.
type Session struct {
	ID               string        `json:"id"`
	Language         string        `json:"language"`
	OwnerUID         uint32        `json:"owner_uid"`
	CreatedAt        string        `json:"created_at"`
	ExpiresAt        string        `json:"expires_at"`
	LastUsedAt       string        `json:"last_used_at"`
	State            string        `json:"state"`
	Executions       int64         `json:"executions"`
	MemoryUsageBytes int64         `json:"memory_usage_bytes"`
	Limits           SessionLimits `json:"limits"`
	Runtime          string        `json:"runtime"`
	// Interpreter is set for an interpreter session.
	Interpreter *Interpreter `json:"interpreter,omitempty"`
}

// Interpreter is the state of an interpreter session's interpreter.
type Interpreter struct {
	// Restarts counts the interpreter's restarts: timeouts it did not
	// answer, OOM kills, restarts asked for.
	Restarts int64 `json:"restarts"`
	// State is "fresh" (no cell has run since it started) or "kept".
	State string `json:"state"`
}

// The states of an interpreter.
const (
	InterpreterFresh = "fresh"
	InterpreterKept  = "kept"
)

// SessionsResponse is the answer to GET /v1/sessions.
type SessionsResponse struct {
	Sessions []Session `json:"sessions"`
}

// FileInfo describes a file of a session's workspace.
type FileInfo struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
	Mode uint32 `json:"mode"`
	Type string `json:"type"` // file, dir, symlink or other
}

// FilesResponse is the answer to GET /v1/sessions/{id}/files/.
type FilesResponse struct {
	Files []FileInfo `json:"files"`
}

// Error codes carried in Error.Code.
const (
	CodeInvalidArgument    = "invalid_argument"
	CodeFailedPrecondition = "failed_precondition"
	CodeNotFound           = "not_found"
	CodePermissionDenied   = "permission_denied"
	CodeResourceExhausted  = "resource_exhausted"
	CodeUnavailable        = "unavailable"
	CodeInternal           = "internal"
)

// Error is the body of every failed request, and an error in Go.
type Error struct {
	Message string `json:"error"`
	Code    string `json:"code"`
	// Status is the HTTP status the error came with; it is not sent.
	Status int `json:"-"`
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the given code.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Status: StatusOf(code)}
}

// StatusOf returns the HTTP status for an error code.
func StatusOf(code string) int {
	switch code {
	case CodeInvalidArgument:
		return http.StatusBadRequest
	case CodeNotFound:
		return http.StatusNotFound
	case CodeFailedPrecondition:
		return http.StatusConflict
	case CodePermissionDenied:
		return http.StatusForbidden
	case CodeResourceExhausted:
		return http.StatusTooManyRequests
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// CodeOfStatus guesses an error code from an HTTP status, for bodies that
// carry none (ServeMux's own 404 and 405, proxies).
func CodeOfStatus(status int) string {
	switch {
	case status == http.StatusNotFound:
		return CodeNotFound
	case status == http.StatusConflict:
		return CodeFailedPrecondition
	case status == http.StatusForbidden || status == http.StatusUnauthorized:
		return CodePermissionDenied
	case status == http.StatusTooManyRequests:
		return CodeResourceExhausted
	case status == http.StatusServiceUnavailable:
		return CodeUnavailable
	case status >= 400 && status < 500:
		return CodeInvalidArgument
	default:
		return CodeInternal
	}
}

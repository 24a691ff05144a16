// Package agentproto is the protocol between sandboxd and sandboxd-init,
// its agent as PID 1 of each sandbox: JSON lines, requests on the agent's
// stdin and frames back on its stdout. A request's files follow its line
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

// ReadRequest reads a request's line and its files' contents.
func ReadRequest(r *bufio.Reader) (Request, error) {
	var req Request
	line, err := r.ReadBytes('\n')
	if err != nil {
		if errors.Is(err, io.EOF) && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return req, err
	}
	if err := json.Unmarshal(line, &req); err != nil {
		return req, err
	}
	for i, f := range req.Files {
		if f.Size < 0 || f.Size > MaxFileSize {
			return req, fmt.Errorf("file %q: size %d", f.Path, f.Size)
		}
		req.Files[i].Data = make([]byte, f.Size)
		if _, err := io.ReadFull(r, req.Files[i].Data); err != nil {
			return req, fmt.Errorf("file %q: %w", f.Path, err)
		}
	}
	return req, nil
}

// Collected is a file of the workspace returned after a run; Data is nil
// when it was over the cap.
type Collected struct {
	Path      string `json:"path"`
	Size      int64  `json:"size"`
	Data      []byte `json:"data,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`
}

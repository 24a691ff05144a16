// Package agentproto is the protocol between sandboxd and sandboxd-init,
// its agent as PID 1 of each sandbox: JSON lines, requests on the agent's
// stdin and frames back on its stdout.
//
// It imports only the standard library, so that sandboxd-init, a small
// static binary, shares these types with the runtime and nothing else.
package agentproto

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

// File is a file to place in the workspace.
type File struct {
	Path string `json:"path"`
	Data []byte `json:"data"`
	Mode uint32 `json:"mode"`
}

// Collected is a file of the workspace returned after a run; Data is nil
// when it was over the cap.
type Collected struct {
	Path      string `json:"path"`
	Size      int64  `json:"size"`
	Data      []byte `json:"data,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`
}

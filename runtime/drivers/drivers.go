// Package drivers holds the programs that run an interpreter session's
// interpreter: python.py for python and node.js for javascript, each
// written in its own language with its standard library only. The
// runtime puts them in the sandbox, read-only, under Dir; the agent starts
// one and feeds it cells. A driver keeps one interpreter's global state
// across cells, as a notebook kernel does.
//
// # Starting
//
// For gives the command line: python3 -u /.sandboxd/drivers/python.py or
// node /.sandboxd/drivers/node.js (python needs -u for its output to
// stream), run with the working directory /workspace and these
// descriptors:
//
//   - 0: the cells' stdin (/dev/null will do);
//   - 1, 2: the cells' stdout and stderr. What a cell writes goes there
//     as it writes it (python unbuffered; node through write-through
//     stand-ins for process.stdout and process.stderr, which leave fds 1
//     and 2 blocking), and all of it is written before the cell's result;
//   - 3 (ControlFD): cells, one JSON line each, read by the driver;
//   - 4 (ResultsFD): the driver's JSON lines.
//
// A driver writes no file. Once started it writes one line on fd 4, a
// Ready: {"ready":true,"language":"python","version":"3.11.2"} (language
// "python" or "javascript"; the version without a "v").
//
// # Cells
//
// A cell is a line {"id":<int>,"code":"<source>"} (a Cell). The driver
// runs it in the session's global namespace, then writes one Result line
// on fd 4, {"id":<same>,"value":…,"error":{…},"outputs":[…]}, in which
// value, error and outputs are each omitted when empty. One cell runs at a
// time; cells sent while one runs wait their turn. A line that is not a
// cell gets an error named "ProtocolError" (id null unless it had an
// integer id), and the driver goes on.
//
//   - value: the text of the cell's last expression, as a REPL shows it.
//     Python: the repr of the last statement's value when that statement
//     is an expression and the value is not None (builtins._ then holds
//     it, as in the REPL). Node: util.inspect of the completion value
//     when it is not undefined; a promise is shown, not waited for, as in
//     node's REPL; a cell that starts with "{" and does not end with ";"
//     is an object literal if it compiles as one.
//   - error: what the cell raised (threw, in node): name (python: the
//     exception class's name; node: the error's name, "Uncaught" for a
//     thrown value that is not an error), message (str of the exception;
//     the error's message), and traceback, the text python or node would
//     print, from the cell on: the frames of the driver and of what runs
//     the cell (python's asyncio, node's vm and inspector) are left out;
//     the cell's frames are named "<cell ID>". A SyntaxError's traceback
//     shows the cell's line and where in it. sys.exit is a SystemExit error (message: the code) and the driver
//     goes on; in node, process.exit(code) throws an error named
//     "ProcessExit" (message: the code) instead of ending the process.
//   - outputs: what the cell displayed, in order, each {"mime","data"}
//     (an Output); data is text: base64 for image/png, JSON text for
//     application/json. Both drivers define display(...objs) globally
//     (python: in the namespace and builtins, for imported modules too),
//     put back before a cell if one deleted it. Python shows an object
//     through the first of _repr_png_, _repr_svg_, _repr_html_ and
//     _repr_json_ that it has and that does not return None (image/png,
//     image/svg+xml, text/html, application/json), a matplotlib figure as
//     image/png, anything else as its repr (text/plain). Node shows a
//     Buffer or Uint8Array holding a PNG as image/png, an array or plain
//     object as application/json, a string as it is (text/plain), an
//     object {mime, data} as it says (binary data in base64), anything
//     else through util.inspect (text/plain).
//
// Python renders every matplotlib figure still open after a cell, failed
// or not, into image/png outputs (with savefig's defaults: the figure's
// size and dpi) and closes them. The driver sets MPLBACKEND=Agg at start, so plt.show()
// neither blocks nor fails; it never imports matplotlib itself.
//
// Python compiles a cell with top-level await allowed and runs such a
// cell on an event loop of the driver's. Node evaluates a cell in V8's
// REPL mode, through an in-process inspector session, as Chrome's console
// does: top-level await, and let, const and class of an earlier cell
// declared again; the cell's frames are named "<cell_ID>" in stacks that
// user code sees (a source URL ends at a space), "<cell ID>" in the
// result. A node without the inspector runs cells as scripts
// (vm.Script.runInThisContext), which allow neither;
// SANDBOXD_DRIVER_SCRIPT_MODE=1 in the driver's environment forces that,
// for tests. Either way top-level declarations of one cell are seen by
// the next, and require resolves from the working directory.
//
// # Interrupting
//
// SIGINT during a cell interrupts it, and its result follows, with the
// state kept: python raises KeyboardInterrupt in the cell's code (error
// name "KeyboardInterrupt"; a cell's coroutine waiting on the event loop
// is cancelled); node breaks the cell's synchronous part (vm's
// breakOnSigint) or stops waiting for what it awaits, with the error name
// "Interrupted" (message "Script execution was interrupted by `SIGINT`").
// SIGINT between cells does nothing. A SIGINT handler a cell installs
// holds until the cell ends.
//
// What a driver cannot interrupt, the agent kills after its grace: python
// code that ignores or blocks SIGINT, or waits in C for something that
// does not come back on EINTR; in node, code after a cell's first await
// that never yields (it runs outside vm's watch), and, rarely, a SIGINT
// that lands in the microseconds around the end of a cell's synchronous
// part, where node itself may lose it or, handing SIGINT back to its
// listeners, be ended by it.
//
// At the end of fd 3 the driver exits with status 0, without waiting for
// the threads or timers cells left.
//
// # What is and is not protected
//
// A driver runs as the user's code's own process, with its rights: it is
// not a wall, and it holds nothing secret. It keeps out of ordinary code's
// way: it moves its channels off fds 3 and 4 (python: to a high
// close-on-exec descriptor; node: reopened through /proc/self/fd,
// close-on-exec, with /dev/null left on 3 and 4; without /proc node keeps
// 3 and 4), so a cell that closes or reuses 3 or 4 does not reach them and
// the programs a cell starts do not inherit them; it binds what it calls
// at start, so a cell that patches os, json, fs or JSON does not break
// it; it survives a cell that replaces or closes sys.stdout or fd 1,
// deletes display, raises any BaseException, recurses too deep, or prints
// without a newline. It does not survive a cell that ends the process
// (os._exit, process.reallyExit, a signal, the OOM killer) or closes the
// driver's own descriptors: the agent restarts it, and the state is lost.
package drivers

import (
	"embed"
	"io/fs"
)

// Dir is where drivers live in a sandbox, read-only.
const Dir = "/.sandboxd/drivers"

// The descriptors a driver reads cells from and writes results to.
const (
	ControlFD = 3
	ResultsFD = 4
)

//go:embed python.py node.js
var files embed.FS

// FS holds the drivers by file name, to be put under Dir.
func FS() fs.FS { return files }

// Files returns the drivers' contents by file name (python.py, node.js).
func Files() map[string][]byte {
	m := make(map[string][]byte)
	for _, name := range []string{"python.py", "node.js"} {
		data, err := files.ReadFile(name)
		if err != nil {
			panic(err) // embedded: present at build time
		}
		m[name] = data
	}
	return m
}

// For returns the driver of a language ("python" or "javascript") and
// the command line that runs it in a sandbox; its first word is looked
// up in PATH. ok is false for other languages.
func For(language string) (file string, args []string, ok bool) {
	switch language {
	case "python":
		return "python.py", []string{"python3", "-u", Dir + "/python.py"}, true
	case "javascript":
		return "node.js", []string{"node", Dir + "/node.js"}, true
	}
	return "", nil, false
}

// Ready is the first line a driver writes.
type Ready struct {
	Ready    bool   `json:"ready"`
	Language string `json:"language"`
	Version  string `json:"version"`
}

// Cell is one line the agent writes to a driver.
type Cell struct {
	ID   int64  `json:"id"`
	Code string `json:"code"`
}

// Result is a driver's line for a cell. A malformed cell line gets an
// error named "ProtocolError" (and a null id when it has none).
type Result struct {
	ID      int64    `json:"id"`
	Value   string   `json:"value,omitempty"`
	Error   *Error   `json:"error,omitempty"`
	Outputs []Output `json:"outputs,omitempty"`
}

// Error is what a cell raised.
type Error struct {
	Name      string `json:"name"`
	Message   string `json:"message"`
	Traceback string `json:"traceback"`
}

// Output is one rich output: Data is base64 for image/png, JSON text for
// application/json, text otherwise.
type Output struct {
	MIME string `json:"mime"`
	Data string `json:"data"`
}

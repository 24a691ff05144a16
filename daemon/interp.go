package daemon

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/sandboxd/sandboxd/daemon/api"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// An interpreter session runs one long-lived interpreter of its language
// in its sandbox (the runtime's driver for it), and each execution of that
// language is a cell run in the interpreter's global state. The
// interpreter lives in the sandbox, not in the daemon: a restarted daemon
// finds it as it was.

// interpState is what the daemon knows of a session's interpreter, under
// its session's mu.
type interpState struct {
	restarts int64
	// fresh: no cell has run in this interpreter.
	fresh bool
	// lostUnseen: the interpreter was restarted, not on request, since
	// the last result a caller received.
	lostUnseen bool
}

// cellOutput is the driver's result of a cell (runtime/drivers).
type cellOutput struct {
	Value   *string        `json:"value"`
	Error   *api.CellError `json:"error"`
	Outputs []api.Output   `json:"outputs"`
}

// checkCell refuses what a cell cannot take: its input is the code alone.
func checkCell(req *api.ExecuteRequest) error {
	switch {
	case req.Stdin != "" || req.StdinStream:
		return invalid("a cell of an interpreter session reads no stdin: pass data in the code, or in a file")
	case len(req.Args) > 0:
		return invalid("a cell of an interpreter session takes no args")
	case req.Entrypoint != "":
		return invalid("a cell of an interpreter session has no entrypoint: its code is the cell")
	}
	return nil
}

// startInterpreter starts a fresh interpreter in a session's sandbox,
// ending the one that runs; the caller holds the session's turn.
func (s *Server) startInterpreter(ctx context.Context, x *session, lang Language) error {
	var stderr strings.Builder
	exit, err := x.sb.Exec(ctx, sandbox.Process{Env: lang.Env, Stdout: &stderr, Stderr: &stderr,
		Cell: &sandbox.Cell{Language: lang.Name, Restart: true}})
	if err != nil {
		return err
	}
	if exit.ExitCode != 0 {
		return api.Errorf(api.CodeUnavailable, "the %s interpreter did not start: %s", lang.Name, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// restartInterpreter serves POST /v1/sessions/{id}/restart.
func (s *Server) restartInterpreter(ctx context.Context, x *session) (*api.Session, error) {
	if x.interp == nil {
		return nil, invalid("session %s is not an interpreter session", x.id)
	}
	lang, err := s.lookupLanguage(x.lang)
	if err != nil {
		return nil, err
	}
	err = s.fileOp(ctx, x, func(ctx context.Context) error { return s.startInterpreter(ctx, x, lang) })
	if err != nil {
		return nil, err
	}
	x.mu.Lock()
	x.interp.restarts++
	x.interp.fresh, x.interp.lostUnseen = true, false
	x.mu.Unlock()
	s.touch(ctx, x, false)
	s.log.Info("interpreter restarted", "session_id", x.id)
	return s.sessionInfo(ctx, x, false), nil
}

// noteCell keeps what a cell's end says of the session's interpreter,
// whether or not its result reaches a caller.
func (x *session) noteCell(cr *sandbox.CellResult) {
	if cr == nil || x.interp == nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if cr.Lost {
		x.interp.restarts++
		x.interp.lostUnseen = true
	}
	// The interpreter that ran the cell holds its state, unless it died
	// with it: the next cell starts a fresh one.
	x.interp.fresh = cr.Result == nil
}

// cellResult fills a cell's result from the driver's: a cell that raised
// failed, the state kept. The result says the state was lost when that
// happened since the last result a caller was given.
func (s *Server) cellResult(x *session, res *api.ExecuteResult, cr *sandbox.CellResult) {
	var out cellOutput
	if cr != nil && cr.Result != nil {
		if err := json.Unmarshal(cr.Result, &out); err != nil {
			s.log.Warn("a cell's result does not read", "session_id", x.id, "err", err)
		}
	}
	if out.Value != nil {
		res.Value = *out.Value
	}
	res.Error, res.Outputs = out.Error, out.Outputs
	if res.Error != nil && res.Status == api.StatusOK {
		res.Status, res.ExitCode = api.StatusFailed, 1
	}
	x.mu.Lock()
	res.StateLost = x.interp.lostUnseen
	x.interp.lostUnseen = false
	x.mu.Unlock()
}

// interpreterInfo describes a session's interpreter for the API.
func (x *session) interpreterInfo() *api.Interpreter {
	if x.interp == nil {
		return nil
	}
	state := api.InterpreterKept
	if x.interp.fresh {
		state = api.InterpreterFresh
	}
	return &api.Interpreter{Restarts: x.interp.restarts, State: state}
}

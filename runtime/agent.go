package runtime

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// agentConn is sandboxd's end of the agent's stdio, the one channel into a
// sandbox: programs run and workspace files are read and written through
// it, without a runc exec each (the sandbox's seccomp filter and limits
// were set up once, when the sandbox started). Its FIFOs outlive the
// daemon, so that a restarted one attaches to them again (attach).
type agentConn struct {
	mu     sync.Mutex // one run or file operation at a time
	sendMu sync.Mutex // one request's bytes at a time
	// apart is closed once the request sent apart (sendApart) is out;
	// every request waits for it, so that requests keep their order.
	apartMu sync.Mutex
	apart   chan struct{}
	// in takes requests: the agent's stdin, or its socket once useSocket.
	in     io.Writer
	stdin  *io.PipeWriter
	stdout *io.PipeReader
	socket *net.UnixConn // nil: stdio
	frames chan agentproto.Frame
	// decoders counts those that pass frames on; the last to end closes
	// frames.
	decoders atomic.Int32
	// prepared is the PrepareID of the last jail the agent said it built
	// (a Prepared frame, which goes no further); built, when set, is
	// called with it before any later frame is passed on.
	prepared atomic.Uint64
	built    atomic.Pointer[func(id uint64)]
	stderr   *lockedBuffer // the agent's own complaints
	log      *slog.Logger
	id       string
	// closed ends the decoder, even while it waits for a reader of frames.
	closed    chan struct{}
	closeOnce sync.Once
}

func newAgentConn(log *slog.Logger, id string) (*agentConn, io.Reader, io.Writer, io.Writer) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	a := &agentConn{in: inW, stdin: inW, stdout: outR, frames: make(chan agentproto.Frame, 256), stderr: &lockedBuffer{b: &bytes.Buffer{}},
		log: log, id: id, closed: make(chan struct{})}
	a.decoders.Add(1)
	go func() {
		defer a.decoded()
		outR.CloseWithError(a.decode(outR))
	}()
	return a, inR, outW, a.stderr
}

// useSocket makes c, a connection to the agent's socket (dialAgent), the
// channel: requests go there and frames come from there. Call it before
// the first request.
func (a *agentConn) useSocket(c *net.UnixConn) {
	a.socket, a.in = c, c
	if a.decoders.Add(1) == 1 {
		// stdout has ended, and frames with it: the agent is gone.
		a.decoders.Add(-1)
		return
	}
	go func() {
		defer a.decoded()
		a.decode(c)
	}()
}

func (a *agentConn) decoded() {
	if a.decoders.Add(-1) == 0 {
		close(a.frames)
	}
}

// decode passes the frames read from r on to a.frames, until r ends or the
// connection is closed; it returns why it stopped.
func (a *agentConn) decode(r io.Reader) error {
	br := bufio.NewReaderSize(r, 256<<10)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			if err != io.EOF && err != io.ErrClosedPipe && !errors.Is(err, errAgentGone) && !errors.Is(err, net.ErrClosed) {
				a.log.Warn("agent stream", "container_id", a.id, "err", err)
			}
			return err
		}
		var f agentproto.Frame
		if err := json.Unmarshal(line, &f); err != nil {
			// Only a frame that an earlier daemon read in part, before
			// this one attached: the sync that follows skips it.
			a.log.Debug("agent frame skipped", "container_id", a.id, "err", err)
			continue
		}
		if f.Prepared != 0 {
			a.prepared.Store(f.Prepared)
			if built := a.built.Load(); built != nil {
				(*built)(f.Prepared)
			}
			continue
		}
		select {
		case a.frames <- f:
		case <-a.closed:
			return errAgentGone
		}
	}
}

// close ends both directions: a write to the agent fails, the copy of its
// output into the decoder fails (so the task's IO can be waited for), and
// the decoders return. Nothing of the connection outlives its sandbox.
func (a *agentConn) close() {
	a.closeOnce.Do(func() {
		close(a.closed)
		a.stdin.CloseWithError(errAgentGone)
		a.stdout.CloseWithError(errAgentGone)
		if a.socket != nil {
			a.socket.Close()
		}
	})
}

type lockedBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

// head returns up to n bytes of what was written.
func (l *lockedBuffer) head(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b.Bytes()[:min(n, l.b.Len())])
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 64<<10 {
		l.b.Write(p)
	}
	return len(p), nil
}

func (a *agentConn) send(r agentproto.Request) error {
	a.apartMu.Lock()
	apart := a.apart
	a.apartMu.Unlock()
	if apart != nil {
		<-apart
	}
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	return agentproto.WriteRequest(a.in, r)
}

// sendApart sends r without waiting for it to be taken (a write to the
// agent passes the shim's copy), ahead of every request sent after it.
func (a *agentConn) sendApart(r agentproto.Request) {
	a.apartMu.Lock()
	defer a.apartMu.Unlock()
	prev, done := a.apart, make(chan struct{})
	a.apart = done
	go func() {
		defer close(done)
		if prev != nil {
			<-prev
		}
		a.sendMu.Lock()
		defer a.sendMu.Unlock()
		agentproto.WriteRequest(a.in, r)
	}()
}

// errAgentGone says the sandbox's agent is dead or does not answer: the
// sandbox cannot run anything more.
var errAgentGone = fmt.Errorf("the sandbox's agent is gone: %w", errdefs.ErrFailedPrecondition)

// Attaching to an agent that an earlier daemon drove (sync).
const (
	// syncRetry is when a sync is asked again: a first one that the agent
	// took as the rest of a request torn by the earlier daemon's death is
	// skipped with that request, after agentproto's stall bound (10 s).
	syncRetry = 12 * time.Second
	// syncTimeout bounds the wait for the agent to answer.
	syncTimeout = 30 * time.Second
)

// sync makes the stream clean for this daemon: it ends whatever an
// execution of an earlier daemon left running and drops every frame up to
// the agent's answer. The request starts with a newline, which ends a line
// that the earlier daemon left half written.
func (a *agentConn) sync(ctx context.Context, dead <-chan struct{}) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	id := rand.Text()
	ask := func() {
		a.sendMu.Lock()
		defer a.sendMu.Unlock()
		if _, err := a.in.Write([]byte("\n")); err == nil {
			agentproto.WriteRequest(a.in, agentproto.Request{Kill: true, Sync: id})
		}
	}
	go ask()
	retry := time.After(syncRetry)
	for {
		select {
		case f, ok := <-a.frames:
			if !ok {
				return errAgentGone
			}
			if f.Sync == id {
				return nil
			}
		case <-retry:
			go ask()
		case <-dead:
			return errAgentGone
		case <-ctx.Done():
			return fmt.Errorf("the sandbox's agent did not answer: %w", errAgentGone)
		}
	}
}

// agentExec runs p through the agent and waits for its exit frame, which
// comes after all of its output. code is a jailed run's code (Exec).
func (s *Sandbox) agentExec(ctx context.Context, p sandbox.Process, code []agentproto.File) (sandbox.ExitResult, error) {
	a := s.agent
	a.mu.Lock()
	defer a.mu.Unlock()
	var stdin []byte
	if p.Stdin != nil && !p.StdinLive {
		var err error
		if stdin, err = io.ReadAll(p.Stdin); err != nil {
			return sandbox.ExitResult{}, err
		}
	}
	env := append(append([]string(nil), s.procSpec.Env...), p.Env...)
	req := agentproto.Request{Args: p.Args, Env: env, Stdin: stdin, Last: p.Last, Files: append(protoFiles(p.WorkspaceFiles), code...), StdinLive: p.StdinLive}
	if p.Jail {
		if s.jail == nil {
			return sandbox.ExitResult{}, fmt.Errorf("sandbox %s is not a cell: %w", s.id, errdefs.ErrFailedPrecondition)
		}
		req.Jail = s.jail
	}
	if p.Cell != nil {
		args, err := driverArgs(p.Cell.Language)
		if err != nil {
			return sandbox.ExitResult{}, err
		}
		req.Args = args
		req.Cell = &agentproto.Cell{ID: s.cells.Add(1), Code: p.Cell.Code, Restart: p.Cell.Restart}
	}
	sent := make(chan error, 1)
	go func() {
		err := a.send(req)
		sent <- err
		if err == nil && p.StdinLive {
			// Forward the input as it comes; the agent drops what arrives
			// after the run.
			buf := make([]byte, 32<<10)
			for {
				n, rerr := p.Stdin.Read(buf)
				if n > 0 && a.send(agentproto.Request{StdinData: append([]byte(nil), buf[:n]...)}) != nil {
					return
				}
				if rerr != nil {
					a.send(agentproto.Request{StdinClose: true})
					return
				}
			}
		}
	}()
	var res sandbox.ExitResult
	var killTimer <-chan time.Time
	done := ctx.Done()
	for {
		select {
		case err := <-sent:
			if err != nil {
				return res, errAgentGone
			}
			sent = nil
		case f, ok := <-a.frames:
			if !ok {
				return res, errAgentGone
			}
			switch {
			case f.Exit != nil:
				res.ExitCode, res.Signal, res.Clean = *f.Exit, f.Signal, f.Clean
				if p.Cell != nil {
					res.Cell = &sandbox.CellResult{Result: f.Cell, Lost: f.Lost, Starts: f.Starts}
				}
				if f.Error != "" {
					fmt.Fprintf(p.Stderr, "sandboxd: %s\n", f.Error)
				}
				return res, nil
			case f.Stream == agentproto.Stdout:
				p.Stdout.Write(f.Data)
			case f.Stream == agentproto.Stderr:
				p.Stderr.Write(f.Data)
			case f.Error != "":
				s.c.log.Warn("agent", "container_id", s.id, "err", f.Error)
			}
		case <-done:
			// The timeout, or the client left: the agent kills every
			// process of the execution, which ends the run.
			res.Killed, done = true, nil
			go a.send(agentproto.Request{Kill: true})
			killTimer = time.After(5 * time.Second)
		case <-killTimer:
			// The agent does not answer: end the sandbox from outside.
			s.kill(context.WithoutCancel(ctx))
			return res, errAgentGone
		case <-s.dead:
			return res, errAgentGone
		}
	}
}

func protoFiles(files []sandbox.File) []agentproto.File {
	out := make([]agentproto.File, len(files))
	for i, f := range files {
		out[i] = agentproto.File{Path: f.Path, Data: f.Data, Mode: f.Mode}
	}
	return out
}

// fileOp sends a workspace file operation and hands each of its frames to
// each, until its exit frame. When ctx ends first, the rest of its frames
// are drained before the next operation may start.
func (s *Sandbox) fileOp(ctx context.Context, req agentproto.Request, each func(agentproto.Frame)) error {
	if !s.Alive() {
		return fmt.Errorf("sandbox %s: its PID 1 is gone: %w", s.id, errdefs.ErrFailedPrecondition)
	}
	a := s.agent
	a.mu.Lock()
	sent := make(chan error, 1)
	go func() { sent <- a.send(req) }()
	for {
		select {
		case err := <-sent:
			if err != nil {
				a.mu.Unlock()
				return errAgentGone
			}
			sent = nil
		case f, ok := <-a.frames:
			if !ok {
				a.mu.Unlock()
				return errAgentGone
			}
			if f.Exit != nil {
				a.mu.Unlock()
				return fileOpError(f)
			}
			if each != nil {
				each(f)
			}
		case <-s.dead:
			a.mu.Unlock()
			return errAgentGone
		case <-ctx.Done():
			go func() {
				defer a.mu.Unlock()
				for {
					select {
					case f, ok := <-a.frames:
						if !ok || f.Exit != nil {
							return
						}
					case <-s.dead:
						return
					}
				}
			}()
			return ctx.Err()
		}
	}
}

// fileOpError turns a file operation's exit frame into its error, of the
// errdefs class the agent gave.
func fileOpError(f agentproto.Frame) error {
	if *f.Exit == 0 {
		return nil
	}
	switch f.Code {
	case agentproto.CodeNotFound:
		return fmt.Errorf("%s: %w", f.Error, errdefs.ErrNotFound)
	case agentproto.CodeInvalid:
		return fmt.Errorf("%s: %w", f.Error, errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("sandboxd-init: %s", f.Error)
}

// Collect returns the files of /workspace that match globs, with at most
// max bytes of content in all. Symlinks are never followed.
func (s *Sandbox) Collect(ctx context.Context, globs []string, max int64) ([]sandbox.Collected, error) {
	if len(globs) == 0 {
		return nil, nil
	}
	var files []sandbox.Collected
	err := s.fileOp(ctx, agentproto.Request{Collect: globs, CollectMax: max}, func(f agentproto.Frame) {
		if f.File != nil {
			files = append(files, sandbox.Collected(*f.File))
		}
	})
	if err != nil {
		return nil, err
	}
	return files, nil
}

// WriteFile writes data to a file of /workspace, with mode, creating its
// directories. A path through a symlink, or one that leaves /workspace,
// is an InvalidArgument error.
func (s *Sandbox) WriteFile(ctx context.Context, path string, mode uint32, data []byte) error {
	return s.fileOp(ctx, agentproto.Request{WriteFiles: true, Files: []agentproto.File{{Path: path, Data: data, Mode: mode}}}, nil)
}

// ReadFile copies a regular file of /workspace to w, at most max+1 bytes
// of it, so that w can tell a file over max. A missing file is a NotFound
// error; what is not a regular file, an InvalidArgument one.
func (s *Sandbox) ReadFile(ctx context.Context, path string, w io.Writer, max int64) error {
	return s.fileOp(ctx, agentproto.Request{ReadFile: path, ReadMax: max}, func(f agentproto.Frame) {
		if f.Stream == agentproto.Stdout {
			w.Write(f.Data)
		}
	})
}

// ListFiles lists /workspace, never following symlinks.
func (s *Sandbox) ListFiles(ctx context.Context) ([]sandbox.FileInfo, error) {
	files := []sandbox.FileInfo{}
	err := s.fileOp(ctx, agentproto.Request{ListFiles: true}, func(f agentproto.Frame) {
		if f.Entry != nil {
			files = append(files, sandbox.FileInfo(*f.Entry))
		}
	})
	if err != nil {
		return nil, err
	}
	return files, nil
}

package runtime

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
)

// WorkspaceFile is a file placed in /workspace before a process runs.
type WorkspaceFile = agentproto.File

// CollectedFile is a file of /workspace returned after a run; Data is nil
// when it was over the cap.
type CollectedFile = agentproto.Collected

// agentConn is sandboxd's end of the agent's stdio. Programs run through
// it without a runc exec each: the sandbox's seccomp filter and limits
// were set up once, when the sandbox started.
type agentConn struct {
	mu     sync.Mutex // one run at a time
	sendMu sync.Mutex // one request's bytes at a time
	in     *io.PipeWriter
	out    *io.PipeReader
	frames chan agentproto.Frame
	stderr *bytes.Buffer // the agent's own complaints
	// closed ends the decoder, even while it waits for a reader of frames.
	closed    chan struct{}
	closeOnce sync.Once
}

func newAgentConn(log *slog.Logger, id string) (*agentConn, io.Reader, io.Writer, io.Writer) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	a := &agentConn{in: inW, out: outR, frames: make(chan agentproto.Frame, 256), stderr: &bytes.Buffer{}, closed: make(chan struct{})}
	go func() {
		defer close(a.frames)
		dec := json.NewDecoder(bufio.NewReaderSize(outR, 256<<10))
		for {
			var f agentproto.Frame
			if err := dec.Decode(&f); err != nil {
				if err != io.EOF && err != io.ErrClosedPipe && !errors.Is(err, errAgentGone) {
					log.Warn("agent stream", "container_id", id, "err", err)
				}
				outR.CloseWithError(err)
				return
			}
			select {
			case a.frames <- f:
			case <-a.closed:
				return
			}
		}
	}()
	return a, inR, outW, &lockedBuffer{b: a.stderr}
}

// close ends both directions: a write to the agent fails, the copy of its
// output into the decoder fails (so the task's IO can be waited for), and
// the decoder returns. Nothing of the connection outlives its sandbox.
func (a *agentConn) close() {
	a.closeOnce.Do(func() {
		close(a.closed)
		a.in.CloseWithError(errAgentGone)
		a.out.CloseWithError(errAgentGone)
	})
}

type lockedBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
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
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	return agentproto.WriteRequest(a.in, r)
}

// errAgentGone says the sandbox's agent is dead or does not answer: the
// sandbox cannot run anything more.
var errAgentGone = fmt.Errorf("the sandbox's agent is gone: %w", errdefs.ErrFailedPrecondition)

// agentExec runs p through the agent and waits for its exit frame, which
// comes after all of its output.
func (s *Sandbox) agentExec(ctx context.Context, p Process) (ExitResult, error) {
	a := s.agent
	a.mu.Lock()
	defer a.mu.Unlock()
	var stdin []byte
	if p.Stdin != nil && !p.StdinLive {
		var err error
		if stdin, err = io.ReadAll(p.Stdin); err != nil {
			return ExitResult{}, err
		}
	}
	env := append(append([]string(nil), s.procSpec.Env...), p.Env...)
	sent := make(chan error, 1)
	go func() {
		err := a.send(agentproto.Request{Args: p.Args, Env: env, Stdin: stdin, Last: p.Last, Files: p.WorkspaceFiles, StdinLive: p.StdinLive})
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
	var res ExitResult
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
				res.ExitCode, res.Signal = *f.Exit, f.Signal
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

// Collect returns the files of /workspace that match globs, with at most
// max bytes of content in all. Symlinks are never followed.
func (s *Sandbox) Collect(ctx context.Context, globs []string, max int64) ([]CollectedFile, error) {
	if len(globs) == 0 {
		return nil, nil
	}
	if s.agent == nil {
		var out bytes.Buffer
		code, err := s.Helper(ctx, nil, &out, append([]string{"collect", strconv.FormatInt(max, 10)}, globs...)...)
		if err != nil {
			return nil, err
		}
		if code != 0 {
			return nil, fmt.Errorf("collect exited %d", code)
		}
		var files []CollectedFile
		dec := json.NewDecoder(&out)
		for {
			var f CollectedFile
			if err := dec.Decode(&f); err != nil {
				break
			}
			files = append(files, f)
		}
		return files, nil
	}
	a := s.agent
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.send(agentproto.Request{Collect: globs, CollectMax: max}); err != nil {
		return nil, errAgentGone
	}
	var files []CollectedFile
	for {
		select {
		case f, ok := <-a.frames:
			if !ok {
				return nil, errAgentGone
			}
			if f.File != nil {
				files = append(files, *f.File)
			}
			if f.Exit != nil {
				if *f.Exit != 0 {
					return files, fmt.Errorf("sandboxd-init: %s", f.Error)
				}
				return files, nil
			}
		case <-s.dead:
			return nil, errAgentGone
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

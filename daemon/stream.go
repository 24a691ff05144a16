package daemon

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// stream writes a streamed execution's events as NDJSON, one flushed line
// each. Writing blocks while the client does not read, and the program
// then blocks on its output: back-pressure, never unbounded buffering.
// But a write never outlasts the execution's deadline by more than
// stalledGrace: a client that has not taken the output by then is
// disconnected, and the execution ends at its timeout whatever the client
// does. Output past the caps is not
// streamed, as it is not kept.
type stream struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	rc      *http.ResponseController
	enc     *json.Encoder
	started bool
	// deadline is the execution's: no write of its output lasts past it.
	deadline time.Time
	// broken says a write failed: the client is gone or too slow, and
	// nothing more is sent.
	broken bool
	// pending holds, per writer (see outputAs), the start of a UTF-8
	// sequence cut by a chunk's end, sent with the next chunk.
	pending map[string][]byte
	// owner is the caller's uid: only it (or root) may feed live stdin.
	owner uint32
}

func newStream(w http.ResponseWriter) *stream {
	return &stream{w: w, rc: http.NewResponseController(w), enc: json.NewEncoder(w), pending: map[string][]byte{}}
}

// stalledGrace is how long past the execution's deadline a blocked write
// of its output may last. The write's failure cancels the request; the
// deadline comes first, so that the execution ends as timed out, not as
// abandoned by its client.
const stalledGrace = time.Second

// finalWriteTimeout bounds the write of the last event, the result or an
// error, which comes after the execution's deadline when it timed out.
const finalWriteTimeout = 10 * time.Second

// setDeadline sets the execution's deadline, which bounds its writes.
func (s *stream) setDeadline(d time.Time) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.deadline = d
	s.mu.Unlock()
}

// outputDeadline bounds a write; none when the deadline is zero. Called
// with mu.
func (s *stream) outputDeadline() time.Time {
	if s.deadline.IsZero() {
		return s.deadline
	}
	return s.deadline.Add(stalledGrace)
}

// send writes and flushes one event, within its deadline. Called with mu.
func (s *stream) send(v any) {
	if s.broken {
		return
	}
	// Set before each write: a deadline on the connection outlives the
	// response, and is cleared once the stream is over.
	s.rc.SetWriteDeadline(s.outputDeadline())
	err := s.enc.Encode(v)
	if err == nil {
		err = s.rc.Flush()
	}
	if err != nil {
		s.broken = true
	}
}

// sendFinal sends the last event, then lifts the write deadline for the
// connection's next request. Called with mu.
func (s *stream) sendFinal(v any) {
	s.send(v)
	if !s.broken {
		s.rc.SetWriteDeadline(time.Time{})
	}
}

// start commits the answer to 200 and sends the start event. Errors before
// it are plain HTTP errors.
func (s *stream) start(ev api.StreamEvent) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return
	}
	s.started = true
	s.w.Header().Set("Content-Type", api.NDJSON)
	s.w.WriteHeader(http.StatusOK)
	s.send(ev)
}

// output returns the tee of one of the program's output streams.
func (s *stream) output(kind string) func([]byte) { return s.outputAs(kind, kind) }

// outputAs returns a tee whose chunks go out as events of kind; writer
// names what writes them, so that a UTF-8 sequence one writer cut is
// completed by its own next chunk, not by another's.
func (s *stream) outputAs(writer, kind string) func([]byte) {
	if s == nil {
		return nil
	}
	return func(p []byte) {
		s.mu.Lock()
		defer s.mu.Unlock()
		data := append(s.pending[writer], p...)
		// Hold back an incomplete sequence at the end, up to 3 bytes.
		cut := len(data)
		for i := len(data) - 1; i >= 0 && i >= len(data)-3; i-- {
			if utf8.RuneStart(data[i]) {
				if !utf8.FullRune(data[i:]) {
					cut = i
				}
				break
			}
		}
		s.pending[writer] = append([]byte(nil), data[cut:]...)
		if cut > 0 {
			s.chunk(kind, data[:cut])
		}
	}
}

// flush sends what a writer of outputAs held back, as an event of kind:
// the writer is done.
func (s *stream) flush(writer, kind string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending[writer]) > 0 {
		s.chunk(kind, s.pending[writer])
		s.pending[writer] = nil
	}
}

func (s *stream) chunk(kind string, data []byte) {
	ev := api.StreamEvent{Type: kind, Data: string(data)}
	if !utf8.Valid(data) {
		ev.Data, ev.Encoding = base64.StdEncoding.EncodeToString(data), api.EncodingBase64
	}
	s.send(ev)
}

// result sends what is held back, then the result event.
func (s *stream) result(res *api.ExecuteResult) {
	s.runOver()
	s.start(api.StreamEvent{Type: api.EventStart, ID: res.ID, SessionID: res.SessionID, Language: res.Language})
	for _, kind := range []string{api.EventStdout, api.EventStderr} {
		s.flush(kind, kind)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sendFinal(api.ResultEvent{Type: api.EventResult, ExecuteResult: *res})
}

// runOver gives the writes that end the stream, which may come after the
// execution's deadline, a bound of their own.
func (s *stream) runOver() {
	s.setDeadline(time.Now().Add(finalWriteTimeout))
}

// fail ends a started stream with an error event.
func (s *stream) fail(e *api.Error) {
	s.runOver()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sendFinal(api.StreamEvent{Type: api.EventError, Error: e.Message, Code: e.Code})
}

func (s *stream) isStarted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started
}

// liveStdin is the open stdin of a running execution, fed by POST
// /v1/executions/{id}/stdin.
type liveStdin struct {
	r     *io.PipeReader
	w     *io.PipeWriter
	owner uint32
	mu    sync.Mutex
	taken bool
}

// openStdin registers an execution's live stdin; the caller owns it.
func (s *Server) openStdin(id string, owner uint32) *liveStdin {
	r, w := io.Pipe()
	l := &liveStdin{r: r, w: w, owner: owner}
	s.stdins.Store(id, l)
	return l
}

// closeStdin ends an execution's live stdin: a writer still sending gets
// an error.
func (s *Server) closeStdin(id string, l *liveStdin) {
	s.stdins.Delete(id)
	l.r.CloseWithError(errors.New("the execution is over"))
}

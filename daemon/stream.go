package daemon

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"sync"
	"unicode/utf8"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// stream writes a streamed execution's events as NDJSON, one flushed line
// each. Writing blocks while the client does not read, and the program
// then blocks on its output: back-pressure, never unbounded buffering.
// Output past the caps is not streamed, as it is not kept.
type stream struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	enc     *json.Encoder
	started bool
	// pending holds, per stream, the start of a UTF-8 sequence cut by a
	// chunk's end, sent with the next chunk.
	pending map[string][]byte
}

func newStream(w http.ResponseWriter) *stream {
	return &stream{w: w, enc: json.NewEncoder(w), pending: map[string][]byte{}}
}

func (s *stream) send(v any) {
	s.enc.Encode(v)
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
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

// output returns the tee of one output stream.
func (s *stream) output(kind string) func([]byte) {
	if s == nil {
		return nil
	}
	return func(p []byte) {
		s.mu.Lock()
		defer s.mu.Unlock()
		data := append(s.pending[kind], p...)
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
		s.pending[kind] = append([]byte(nil), data[cut:]...)
		if cut > 0 {
			s.chunk(kind, data[:cut])
		}
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
	s.start(api.StreamEvent{Type: api.EventStart, ID: res.ID, SessionID: res.SessionID, Language: res.Language})
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, kind := range []string{api.EventStdout, api.EventStderr} {
		if len(s.pending[kind]) > 0 {
			s.chunk(kind, s.pending[kind])
			s.pending[kind] = nil
		}
	}
	s.send(api.ResultEvent{Type: api.EventResult, ExecuteResult: *res})
}

// fail ends a started stream with an error event.
func (s *stream) fail(e *api.Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.send(api.StreamEvent{Type: api.EventError, Error: e.Message, Code: e.Code})
}

func (s *stream) isStarted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started
}

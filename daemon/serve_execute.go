package daemon

import (
	"errors"
	"io"
	"net/http"

	"github.com/sandboxd/sandboxd/daemon/api"
)

func (s *Server) serveExecute(w http.ResponseWriter, r *http.Request) error {
	if err := s.admitWork(w); err != nil {
		return err
	}
	defer s.drain.leave()
	var req api.ExecuteRequest
	release, err := s.readJSON(w, r, s.limits().MaxBodyBytes(), &req)
	if err != nil {
		return err
	}
	defer release()
	var st *stream
	if accepts(r, api.NDJSON) {
		st = newStream(w)
		st.owner = callerUID(callerOf(r.Context()))
	} else if req.StdinStream {
		return invalid("stdin_stream needs a streamed execution (Accept: %s), whose start event gives the id to send stdin to", api.NDJSON)
	}
	res, done, err := s.execute(r.Context(), &req, callerOf(r.Context()), st)
	if err != nil {
		if st != nil && st.isStarted() {
			if r.Context().Err() == nil {
				e := apiError(err)
				s.log.Error("streamed execution failed", "status", e.Status, "err", err)
				st.fail(e)
			}
			return nil
		}
		return err
	}
	if st != nil {
		st.result(res)
	} else {
		writeJSON(w, http.StatusOK, res)
	}
	// The answer goes out before the sandbox is torn down, and the
	// teardown runs apart: a client that keeps its connection may send
	// its next request at once (HTTP/1.1 reads it only once this handler
	// returns). The slot stays held until the teardown is over.
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		done()
	}()
	return nil
}

func (s *Server) serveStdin(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	v, ok := s.stdins.Load(id)
	c := callerOf(r.Context())
	if !ok || (v.(*liveStdin).owner != callerUID(c) && callerUID(c) != 0) {
		return api.Errorf(api.CodeNotFound, "no running execution %q takes stdin", truncate(id, 40))
	}
	l := v.(*liveStdin)
	l.mu.Lock()
	taken := l.taken
	l.taken = true
	l.mu.Unlock()
	if taken {
		return api.Errorf(api.CodeFailedPrecondition, "execution %s already has its stdin writer", id)
	}
	max := s.limits().MaxStdinBytes
	n, err := io.Copy(l.w, io.LimitReader(r.Body, max+1))
	if n > max {
		l.w.CloseWithError(errors.New("stdin over its cap"))
		return errorf(errTooLarge, "stdin is more than the maximum of %d bytes", max)
	}
	if err != nil {
		return api.Errorf(api.CodeFailedPrecondition, "stdin of %s: %v", id, err)
	}
	// The end of the body is the end of the program's input.
	l.w.Close()
	writeJSON(w, http.StatusOK, map[string]int64{"bytes": n})
	return nil
}

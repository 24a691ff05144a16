package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// routes registers the API's handlers.
func (s *Server) routes() {
	for _, rt := range []struct {
		pattern string
		h       func(http.ResponseWriter, *http.Request) error
	}{
		{"POST /v1/drain", s.serveDrain},
		{"POST /v1/execute", s.serveExecute},
		{"GET /v1/health", s.serveHealth},
		{"GET /v1/info", s.serveInfo},
		{"GET /v1/languages", s.serveLanguages},
		{"POST /v1/sessions", s.serveCreateSession},
		{"GET /v1/sessions", s.serveListSessions},
		{"GET /v1/sessions/{id}", s.serveShowSession},
		{"DELETE /v1/sessions/{id}", s.serveDeleteSession},
		{"POST /v1/sessions/{id}/restart", s.serveRestartSession},
		{"GET /v1/sessions/{id}/files/{path...}", s.serveGetFile},
		{"PUT /v1/sessions/{id}/files/{path...}", s.servePutFile},
		{"POST /v1/executions/{id}/stdin", s.serveStdin},
		{"GET /v1/images", s.serveListImages},
		{"POST /v1/images/import", s.serveImportImages},
		{"POST /v1/images/pull", s.servePullImage},
		{"DELETE /v1/images/{ref...}", s.serveRemoveImage},
	} {
		s.mux.HandleFunc(rt.pattern, s.handle(rt.h))
	}
	s.mux.Handle("GET /metrics", s.MetricsHandler())
}

// ServeHTTP refuses browser requests and callers access control leaves
// out, stamps the version, and routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Counted, so that Wait sees every request through, and what a request
	// starts in the background (the record of a session's use) too.
	s.wg.Add(1)
	defer s.wg.Done()
	w.Header().Set(api.VersionHeader, s.version)
	if err := s.admit(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	// ServeMux's own 404 and 405 answers are plain text: answer in JSON.
	if _, pattern := s.mux.Handler(r); pattern == "" {
		rec := &headerRecorder{header: http.Header{}}
		s.mux.ServeHTTP(rec, r)
		if rec.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", rec.header.Get("Allow"))
			s.writeError(w, r, errorf(errMethodNotAllowed, "method %s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, rec.header.Get("Allow")))
			return
		}
		s.writeError(w, r, api.Errorf(api.CodeNotFound, "no route %s %s", r.Method, truncate(r.URL.Path, 200)))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// headerRecorder keeps the status and headers of ServeMux's error answers.
type headerRecorder struct {
	header http.Header
	status int
}

func (h *headerRecorder) Header() http.Header         { return h.header }
func (h *headerRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (h *headerRecorder) WriteHeader(status int)      { h.status = status }

// handle adapts a handler that returns an error, which writeError answers.
func (s *Server) handle(h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			// A body's deadline cancels the request's context too; that
			// client is still there to be told.
			if r.Context().Err() != nil && !errors.Is(err, errBodyTimeout) {
				s.log.Debug("client left", "route", r.Pattern)
				return
			}
			s.writeError(w, r, err)
		}
	}
}

// writeError answers with err, as apiError classifies it.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := apiError(err)
	route := r.Pattern
	if route == "" {
		route = "none"
	}
	s.metrics.requestErrors.WithLabelValues(route, strconv.Itoa(e.Status)).Inc()
	if e.Status >= 500 {
		s.log.Error("request failed", "route", r.Pattern, "status", e.Status, "err", err)
	} else {
		s.log.Debug("request refused", "route", r.Pattern, "status", e.Status, "err", err)
	}
	writeJSON(w, e.Status, e)
}

// Classes of errors whose HTTP status is not their API code's own. They
// are made with errorf; apiError alone gives them their statuses.
var (
	errMethodNotAllowed = errors.New("method not allowed")     // 405
	errBodyTimeout      = errors.New("request body timeout")   // 408
	errTooLarge         = errors.New("too large")              // 413
	errUnsupportedType  = errors.New("unsupported media type") // 415
	errDiskFull         = errors.New("disk full")              // 507
)

// classedError is an error of one of those classes, with its own message.
type classedError struct {
	class error
	msg   string
}

func (e *classedError) Error() string { return e.msg }
func (e *classedError) Unwrap() error { return e.class }

// errorf returns an error of a class, with the format's message.
func errorf(class error, format string, args ...any) error {
	return &classedError{class: class, msg: fmt.Sprintf(format, args...)}
}

// apiError is the one place where an error becomes what a client sees: its
// code, its HTTP status and its message. An *api.Error has its code's
// status; the classes above have theirs; other errors are classified by
// their errdefs class, or by the system error they carry.
func apiError(err error) *api.Error {
	var e *api.Error
	if errors.As(err, &e) {
		return e
	}
	msg := err.Error()
	var c *classedError
	if errors.As(err, &c) {
		msg = c.msg
	}
	var tooBig *http.MaxBytesError
	code, status := api.CodeInvalidArgument, 0
	switch {
	case errors.Is(err, errMethodNotAllowed):
		status = http.StatusMethodNotAllowed
	case errors.Is(err, errBodyTimeout):
		status = http.StatusRequestTimeout
	case errors.As(err, &tooBig):
		status, msg = http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", tooBig.Limit)
	case errors.Is(err, errTooLarge):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, errUnsupportedType):
		status = http.StatusUnsupportedMediaType
	case errors.Is(err, errDiskFull):
		code, status = api.CodeResourceExhausted, http.StatusInsufficientStorage
	case errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT):
		// The daemon's disk is full: the error names the path.
		code, status, msg = api.CodeResourceExhausted, http.StatusInsufficientStorage, "the daemon's disk is full: "+msg
	case errors.Is(err, unix.EROFS):
		code, msg = api.CodeUnavailable, "the daemon cannot write its files: "+msg
	case errdefs.IsInvalidArgument(err):
		code = api.CodeInvalidArgument
	case errdefs.IsNotFound(err):
		code = api.CodeNotFound
	case errdefs.IsPermissionDenied(err):
		code = api.CodePermissionDenied
	case errdefs.IsResourceExhausted(err):
		code = api.CodeResourceExhausted
	case errdefs.IsUnavailable(err):
		code = api.CodeUnavailable
	default:
		code = api.CodeInternal
	}
	if status == 0 {
		status = api.StatusOf(code)
	}
	return &api.Error{Code: code, Status: status, Message: msg}
}

// writeJSON answers with v. The length is set so that the answer is whole
// once flushed, even while the handler goes on cleaning up.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encode response","code":"internal"}`)
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

// accepts reports whether the request's Accept header names a media type.
func accepts(r *http.Request, mediaType string) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == mediaType {
			return true
		}
	}
	return false
}

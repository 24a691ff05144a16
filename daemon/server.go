// Package daemon is sandboxd's API server: it validates requests, runs them
// in sandboxes through the Runtime it is given, and answers in the wire
// types of package api.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// Limits are the daemon's defaults and maxima.
type Limits struct {
	DefaultTimeout time.Duration
	MaxTimeout     time.Duration
	DefaultMemory  int64
	MaxMemory      int64
	CPUs           float64
	Pids           int64
	TmpfsBytes     int64
	OutputBytes    int64 // per stream
	MaxCodeBytes   int64
	MaxStdinBytes  int64
	MaxConcurrent  int
	MaxQueued      int
	// MaxConcurrentPerUID bounds one uid's running and waiting executions;
	// 0 is no quota.
	MaxConcurrentPerUID int
	// PoolSize is how many ready sandboxes wait for one-shot executions;
	// 0 turns the pool off.
	PoolSize int

	SessionIdleTimeout time.Duration // default idle timeout
	SessionMaxLifetime time.Duration // default maximum lifetime
	MaxSessionLifetime time.Duration // maximum of both
	MaxSessions        int
	MaxSessionsPerUser int
	MaxFileBytes       int64 // one file in or out of a session

	// BodyTimeout is how long a client has to send a body that is read
	// whole (JSON, a session's file); bodies that stream have none.
	BodyTimeout time.Duration
	// BodyWait is how long a body waits for room in the budget of bodies
	// held at once before it is refused with 429.
	BodyWait time.Duration
}

// DefaultLimits returns the built-in limits for a host with cpus CPUs.
func DefaultLimits(cpus int) Limits {
	return Limits{
		DefaultTimeout: 30 * time.Second,
		MaxTimeout:     300 * time.Second,
		DefaultMemory:  256 << 20,
		MaxMemory:      4 << 30,
		CPUs:           1,
		Pids:           128,
		TmpfsBytes:     64 << 20,
		OutputBytes:    1 << 20,
		MaxCodeBytes:   1 << 20,
		MaxStdinBytes:  1 << 20,
		MaxConcurrent:  2 * cpus,
		MaxQueued:      8 * cpus,
		PoolSize:       2 * cpus,

		SessionIdleTimeout: 10 * time.Minute,
		SessionMaxLifetime: time.Hour,
		MaxSessionLifetime: 24 * time.Hour,
		MaxSessions:        32,
		MaxSessionsPerUser: 8,
		MaxFileBytes:       32 << 20,

		BodyTimeout: 30 * time.Second,
		BodyWait:    10 * time.Second,
	}
}

// Config configures a Server. All fields are required but Access.
type Config struct {
	Runtime Runtime
	// OCIRuntimes are the OCI runtimes configured besides runc.
	OCIRuntimes []string
	// PullImages lets the daemon pull a language's missing image.
	PullImages bool
	Languages  []Language
	Limits     Limits
	Access     Access
	// BodyBudget is how many bytes of request bodies are held at once
	// (0: Limits.MaxBodyBytes); a body larger than it waits for all of it.
	BodyBudget int64
	Version    string
	Logger     *slog.Logger
}

// Access is who may use the API beyond the socket's permissions. Empty
// lists let everyone in who can open the socket; root always may.
type Access struct {
	UIDs, GIDs []uint32
}

// allows reports whether a caller may use the API: root always; others
// when no list is set, or their uid, primary gid or one of their groups is
// on one.
func (a Access) allows(c Caller) bool {
	if len(a.UIDs) == 0 && len(a.GIDs) == 0 {
		return true
	}
	if !c.Known {
		return false
	}
	if c.UID == 0 || slices.Contains(a.UIDs, c.UID) || slices.Contains(a.GIDs, c.GID) {
		return true
	}
	for _, g := range supplementaryGroups(c.PID) {
		if slices.Contains(a.GIDs, g) {
			return true
		}
	}
	return false
}

// supplementaryGroups reads a process's groups, which SO_PEERCRED lacks.
func supplementaryGroups(pid int32) []uint32 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			var gids []uint32
			for _, f := range strings.Fields(rest) {
				if g, err := strconv.ParseUint(f, 10, 32); err == nil {
					gids = append(gids, uint32(g))
				}
			}
			return gids
		}
	}
	return nil
}

// live is what a reload replaces.
type live struct {
	lim    Limits
	langs  []Language
	access Access
}

// Server serves the API.
type Server struct {
	rt      Runtime
	cfg     atomic.Pointer[live]
	version string
	log     *slog.Logger
	slots   *slots
	running activity // programs running, whom pool refills yield to
	started time.Time
	mux     *http.ServeMux
	wg      sync.WaitGroup

	metrics *metrics
	bodies  *bodyBudget
	// pools hold ready sandboxes, one pool per class that a language
	// runs in by default.
	pmu         sync.Mutex
	pools       map[sandboxClass]*pool
	poolCtx     context.Context
	ociRuntimes []string
	pullImages  bool
	pulling     sync.Map // image ref → struct{}: pulls under way
	// rootGen counts the changes of the host paths in sandboxes' roots.
	rootGen atomic.Uint64
	stdins  sync.Map // execution id → *liveStdin
	// known holds the ids of the containers this daemon uses now, from
	// before each is created until it is deleted, to tell leaked ones from
	// them.
	known sync.Map
	// undeleted holds the sandboxes whose deletion failed, by id, to be
	// deleted once containerd is back.
	undeleted sync.Map

	smu      sync.Mutex
	sessions map[string]*session
	creating map[uint32]int // sessions being created, by owner
}

// New returns a Server.
func New(cfg Config) *Server {
	s := &Server{
		rt:          cfg.Runtime,
		version:     cfg.Version,
		log:         cfg.Logger,
		slots:       newSlots(cfg.Limits),
		started:     time.Now(),
		mux:         http.NewServeMux(),
		sessions:    map[string]*session{},
		creating:    map[uint32]int{},
		pools:       map[sandboxClass]*pool{},
		ociRuntimes: cfg.OCIRuntimes,
		pullImages:  cfg.PullImages,
	}
	s.cfg.Store(&live{lim: cfg.Limits, langs: cfg.Languages, access: cfg.Access})
	if cfg.BodyBudget <= 0 {
		cfg.BodyBudget = cfg.Limits.MaxBodyBytes()
	}
	s.bodies = newBodyBudget(cfg.BodyBudget)
	s.metrics = newMetrics(s)
	for _, rt := range []struct {
		pattern string
		h       func(http.ResponseWriter, *http.Request) error
	}{
		{"POST /v1/execute", s.serveExecute},
		{"GET /v1/health", s.serveHealth},
		{"GET /v1/info", s.serveInfo},
		{"GET /v1/languages", s.serveLanguages},
		{"POST /v1/sessions", s.serveCreateSession},
		{"GET /v1/sessions", s.serveListSessions},
		{"GET /v1/sessions/{id}", s.serveShowSession},
		{"DELETE /v1/sessions/{id}", s.serveDeleteSession},
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
	return s
}

func (s *Server) limits() Limits        { return s.cfg.Load().lim }
func (s *Server) languages() []Language { return s.cfg.Load().langs }

// Reload replaces the limits, languages and access control. Executions and
// sessions under way keep what they started with.
func (s *Server) Reload(l Limits, langs []Language, access Access) {
	hostPathsChanged := !slices.Equal(HostPaths(s.languages()), HostPaths(langs))
	s.cfg.Store(&live{lim: l, langs: langs, access: access})
	s.slots.resize(l)
	if hostPathsChanged {
		// Ready sandboxes, and those being made, lack the new paths: the
		// pools make new ones.
		s.rootGen.Add(1)
		s.drainPools()
	}
	s.syncPools(l.PoolSize)
	s.pullMissing()
}

// Start fills the pools of ready sandboxes until Close, and pulls the
// languages' missing images.
func (s *Server) Start(ctx context.Context) {
	s.pmu.Lock()
	s.poolCtx = ctx
	s.pmu.Unlock()
	s.syncPools(s.limits().PoolSize)
	s.pullMissing()
}

// Close stops the pools and destroys their sandboxes.
func (s *Server) Close(ctx context.Context) {
	s.pmu.Lock()
	pools := s.pools
	s.pools = map[sandboxClass]*pool{}
	s.poolCtx = nil
	s.pmu.Unlock()
	for _, p := range pools {
		p.stop(ctx)
	}
}

// Status is a summary of what the daemon is doing.
type Status struct {
	Running, Queued, Sessions int
	ContainerdUp              bool
}

// Status summarizes the daemon's work, for systemd's STATUS= line.
func (s *Server) Status(ctx context.Context) Status {
	r, q := s.slots.counts()
	s.smu.Lock()
	n := len(s.sessions)
	s.smu.Unlock()
	return Status{Running: r, Queued: q, Sessions: n, ContainerdUp: s.rt.Info(ctx).Serving}
}

// Wait waits for the requests under way, and their clean-up, to end. Call
// it once the HTTP server no longer accepts requests.
func (s *Server) Wait() { s.wg.Wait() }

// ServeHTTP refuses browser requests, stamps the version, and routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Counted, so that Wait sees every request through, and what a request
	// starts in the background (the record of a session's use) too.
	s.wg.Add(1)
	defer s.wg.Done()
	w.Header().Set(api.VersionHeader, s.version)
	// A web page can make a browser send requests to a local socket through
	// a proxy; no legitimate caller of this API sends Origin.
	if r.Header.Get("Origin") != "" {
		s.writeError(w, r, api.Errorf(api.CodePermissionDenied, "requests from browsers are refused"))
		return
	}
	if c := callerOf(r.Context()); !s.cfg.Load().access.allows(c) {
		s.log.Warn("caller refused by access control", "uid", c.UID, "gid", c.GID, "pid", c.PID, "route", r.Method+" "+r.URL.Path)
		s.writeError(w, r, api.Errorf(api.CodePermissionDenied, "uid %d is not allowed to use sandboxd (see access in its configuration)", c.UID))
		return
	}
	// ServeMux's own 404 and 405 answers are plain text: answer in JSON.
	if _, pattern := s.mux.Handler(r); pattern == "" {
		rec := &headerRecorder{header: http.Header{}}
		s.mux.ServeHTTP(rec, r)
		if rec.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", rec.header.Get("Allow"))
			s.writeError(w, r, &api.Error{Code: api.CodeInvalidArgument, Status: rec.status,
				Message: fmt.Sprintf("method %s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, rec.header.Get("Allow"))})
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

// Caller is the peer of a request, from the socket's credentials.
type Caller struct {
	UID, GID uint32
	PID      int32
	Known    bool
}

type callerKey struct{}

// ConnContext records the peer's credentials (SO_PEERCRED); use it as
// http.Server.ConnContext.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	var caller Caller
	if tc, ok := c.(*trackedConn); ok {
		caller = tc.caller
	} else {
		caller = peerCaller(c)
	}
	if !caller.Known {
		return ctx
	}
	return context.WithValue(ctx, callerKey{}, caller)
}

func callerOf(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}

// handle adapts a handler that returns an error; errors are mapped to a
// status in one place.
func (s *Server) handle(h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			// A body's deadline cancels the request's context too; that
			// client is still there to be told.
			var e *api.Error
			if r.Context().Err() != nil && !(errors.As(err, &e) && e.Status == http.StatusRequestTimeout) {
				s.log.Debug("client left", "route", r.Pattern)
				return
			}
			s.writeError(w, r, err)
		}
	}
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := toAPIError(err)
	if e.Status >= 500 {
		s.log.Error("request failed", "route", r.Pattern, "status", e.Status, "err", err)
	} else {
		s.log.Debug("request refused", "route", r.Pattern, "status", e.Status, "err", err)
	}
	writeJSON(w, e.Status, e)
}

// toAPIError classifies err by its errdefs class.
func toAPIError(err error) *api.Error {
	var e *api.Error
	if errors.As(err, &e) {
		return e
	}
	var tooBig *http.MaxBytesError
	code := api.CodeInternal
	switch {
	case errors.As(err, &tooBig):
		return &api.Error{Code: api.CodeInvalidArgument, Status: http.StatusRequestEntityTooLarge,
			Message: fmt.Sprintf("request body is larger than %d bytes", tooBig.Limit)}
	case errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT):
		// The daemon's disk is full: the error names the path.
		return &api.Error{Code: api.CodeResourceExhausted, Status: http.StatusInsufficientStorage,
			Message: "the daemon's disk is full: " + err.Error()}
	case errors.Is(err, unix.EROFS):
		return api.Errorf(api.CodeUnavailable, "the daemon cannot write its files: %v", err)
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
	}
	return &api.Error{Code: code, Message: err.Error(), Status: api.StatusOf(code)}
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

// bodyLimit is what a request may weigh: code and stdin at their maxima,
// JSON-escaped (up to 6 bytes a byte), files at theirs in base64, and room
// for the rest.
func (s *Server) bodyLimit() int64 { return s.limits().MaxBodyBytes() }

// MaxBodyBytes is the largest request body the limits allow: that of an
// execution.
func (l Limits) MaxBodyBytes() int64 {
	return 6*(l.MaxCodeBytes+l.MaxStdinBytes) + 2*l.MaxFileBytes + maxArgsBytes*6 + maxEnvBytes*6 + 256<<10
}

func (s *Server) serveExecute(w http.ResponseWriter, r *http.Request) error {
	var req api.ExecuteRequest
	release, err := s.readJSON(w, r, s.bodyLimit(), &req)
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
				e := toAPIError(err)
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

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) error {
	info := s.rt.Info(r.Context())
	h := api.Health{Status: "ok", Containerd: "serving", StateDir: "writable"}
	if !info.Serving {
		h.Status, h.Containerd = "unavailable", "not answering"
	}
	if info.StateDirErr != nil {
		h.Status, h.StateDir = "unavailable", stateDirError(info.StateDir, info.StateDirErr).Message
	}
	status := http.StatusOK
	if h.Status != "ok" {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, h)
	return nil
}

func (s *Server) serveInfo(w http.ResponseWriter, r *http.Request) error {
	ri := s.rt.Info(r.Context())
	st := s.Status(r.Context())
	l := s.limits()
	writeJSON(w, http.StatusOK, api.Info{
		Version:           s.version,
		StartedAt:         s.started.UTC().Format(time.RFC3339),
		UptimeSeconds:     int64(time.Since(s.started).Seconds()),
		ContainerdAddress: ri.Address,
		ContainerdVersion: ri.Version,
		ContainerdManaged: ri.Managed,
		CgroupVersion:     ri.CgroupVersion,
		Runtimes:          append([]string{defaultOCIRuntime}, s.ociRuntimes...),
		Running:           st.Running,
		Queued:            st.Queued,
		Sessions:          st.Sessions,
		Limits: api.Limits{
			TimeoutMS:      l.DefaultTimeout.Milliseconds(),
			MaxTimeoutMS:   l.MaxTimeout.Milliseconds(),
			MemoryBytes:    l.DefaultMemory,
			MaxMemoryBytes: l.MaxMemory,
			CPUs:           l.CPUs,
			Pids:           l.Pids,
			TmpfsBytes:     l.TmpfsBytes,
			OutputBytes:    l.OutputBytes,
			MaxCodeBytes:   l.MaxCodeBytes,
			MaxStdinBytes:  l.MaxStdinBytes,
			MaxConcurrent:  l.MaxConcurrent,
			MaxQueued:      l.MaxQueued,
		},
	})
	return nil
}

func (s *Server) serveLanguages(w http.ResponseWriter, r *http.Request) error {
	resp := api.LanguagesResponse{Languages: make([]api.Language, 0, len(s.languages()))}
	for _, l := range s.languages() {
		resp.Languages = append(resp.Languages, api.Language{
			Name:        l.Name,
			Aliases:     l.Aliases,
			Extensions:  l.Extensions,
			Version:     l.Version,
			FileName:    l.FileName,
			Compiled:    len(l.Compile) > 0,
			Runtime:     l.class().Runtime,
			Image:       l.Image,
			Unavailable: s.unavailable(r.Context(), l),
		})
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Server) serveCreateSession(w http.ResponseWriter, r *http.Request) error {
	var req api.CreateSessionRequest
	release, err := s.readJSON(w, r, maxEnvBytes*6+64<<10, &req)
	if err != nil {
		return err
	}
	defer release()
	sess, err := s.createSession(r.Context(), &req, callerOf(r.Context()))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, sess)
	return nil
}

func (s *Server) serveListSessions(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, api.SessionsResponse{Sessions: s.listSessions(r.Context(), callerOf(r.Context()))})
	return nil
}

func (s *Server) serveShowSession(w http.ResponseWriter, r *http.Request) error {
	x, err := s.sessionFor(r.PathValue("id"), callerOf(r.Context()))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.sessionInfo(r.Context(), x, true))
	return nil
}

func (s *Server) serveDeleteSession(w http.ResponseWriter, r *http.Request) error {
	c := callerOf(r.Context())
	x, err := s.sessionFor(r.PathValue("id"), c)
	if err != nil {
		return err
	}
	if err := s.deleteSession(r.Context(), x); err != nil {
		return fmt.Errorf("delete session %s: %w", x.id, err)
	}
	s.log.Info("session deleted", "session_id", x.id, "uid", c.UID, "pid", c.PID)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) serveGetFile(w http.ResponseWriter, r *http.Request) error {
	x, err := s.sessionFor(r.PathValue("id"), callerOf(r.Context()))
	if err != nil {
		return err
	}
	if r.PathValue("path") == "" {
		files, err := s.listFiles(r.Context(), x)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, api.FilesResponse{Files: files})
		return nil
	}
	p, err := checkFilePath(r.PathValue("path"))
	if err != nil {
		return err
	}
	data, err := s.getFile(r.Context(), x, p)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Write(data)
	return nil
}

func (s *Server) servePutFile(w http.ResponseWriter, r *http.Request) error {
	x, err := s.sessionFor(r.PathValue("id"), callerOf(r.Context()))
	if err != nil {
		return err
	}
	p, err := checkFilePath(r.PathValue("path"))
	if err != nil {
		return err
	}
	mode := uint64(0o644)
	if m := r.URL.Query().Get("mode"); m != "" {
		if mode, err = strconv.ParseUint(m, 8, 32); err != nil || mode > 0o777 {
			return invalid("mode %q is not an octal permission such as 644", truncate(m, 20))
		}
	}
	body, release, err := s.readBody(w, r, s.limits().MaxFileBytes)
	if err != nil {
		return err
	}
	defer release()
	info, err := s.putFile(r.Context(), x, p, uint32(mode), body)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

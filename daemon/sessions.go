package daemon

import (
	"context"
	"fmt"
	"math"
	"path"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/sandboxd/sandboxd/daemon/api"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// timeFormat has the millisecond precision that session records keep, so
// that a session's times read the same after a daemon restart.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// sessionIDRE is the only shape of a session id: 128 random bits in hex.
var sessionIDRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// unknownUID owns the sessions of callers whose credentials are unknown;
// it is nobody's uid, and not root's.
const unknownUID = math.MaxUint32

type session struct {
	id     string
	owner  uint32
	lang   string
	class  sandboxClass
	sb     Sandbox
	limits api.SessionLimits
	// lock admits one execution or file operation at a time.
	lock chan struct{}

	mu         sync.Mutex
	created    time.Time
	lastUsed   time.Time
	executions int64
	deleted    bool
	cpuNanos   uint64 // the session's CPU counter after its last execution
	// interp is set for an interpreter session.
	interp *interpState

	// persisting serializes the record writes of touch; under mu,
	// persisted is when the last began, and persistQueued says one waits.
	persisting    sync.Mutex
	persisted     time.Time
	persistQueued bool
}

func (x *session) expiresAt() time.Time {
	x.mu.Lock()
	defer x.mu.Unlock()
	life := x.created.Add(time.Duration(x.limits.MaxLifetimeMS) * time.Millisecond)
	idle := x.lastUsed.Add(time.Duration(x.limits.IdleTimeoutMS) * time.Millisecond)
	if idle.Before(life) {
		return idle
	}
	return life
}

// record is what the runtime keeps of the session for a restarted daemon.
func (x *session) record() sandbox.SessionRecord {
	x.mu.Lock()
	defer x.mu.Unlock()
	r := sandbox.SessionRecord{Owner: x.owner, Language: x.lang, Created: x.created, LastUsed: x.lastUsed,
		Executions: x.executions, Limits: sandbox.SessionLimits(x.limits), Image: x.class.Image, Runtime: x.class.Runtime}
	if x.interp != nil {
		r.Interpreter, r.Restarts = true, x.interp.restarts
	}
	return r
}

// sessionFromRecord is a session that an earlier daemon left.
func sessionFromRecord(sb Sandbox, r sandbox.SessionRecord) (*session, error) {
	x := &session{id: strings.TrimPrefix(sb.ID(), "ses-"), owner: r.Owner, lang: r.Language, sb: sb,
		lock: make(chan struct{}, 1), created: r.Created, lastUsed: r.LastUsed, executions: r.Executions,
		limits: api.SessionLimits(r.Limits), class: sandboxClass{Image: r.Image, Runtime: r.Runtime}}
	if x.class.Runtime == "" { // made before runtimes were chosen
		x.class.Runtime = sandbox.DefaultOCIRuntime
	}
	if r.Interpreter {
		// It lives in the sandbox: as it was, unless it died meanwhile,
		// which its next cell tells.
		x.interp = &interpState{restarts: r.Restarts}
	}
	if !sessionIDRE.MatchString(x.id) {
		return nil, fmt.Errorf("session %s: not a session id", sb.ID())
	}
	return x, nil
}

// callerUID is who a request acts as.
func callerUID(c Caller) uint32 {
	if !c.Known {
		return unknownUID
	}
	return c.UID
}

// sessionFor finds a session the caller may use: its own, or any for root.
// Others' sessions are not found, as if they did not exist.
func (s *Server) sessionFor(id string, c Caller) (*session, error) {
	if !sessionIDRE.MatchString(id) {
		return nil, api.Errorf(api.CodeInvalidArgument, "session id %q is not 32 lowercase hex digits", truncate(id, 80))
	}
	s.smu.Lock()
	x, ok := s.sessions[id]
	s.smu.Unlock()
	if !ok || (callerUID(c) != x.owner && callerUID(c) != 0) || time.Now().After(x.expiresAt()) {
		return nil, api.Errorf(api.CodeNotFound, "session %s not found", id)
	}
	return x, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// AdoptSessions takes over the sessions an earlier daemon left running.
func (s *Server) AdoptSessions(ctx context.Context) error {
	adopted, err := s.rt.AdoptSessions(ctx)
	if err != nil {
		return err
	}
	for _, a := range adopted {
		sb, err := a.Sandbox, a.Err
		var x *session
		if err == nil {
			x, err = sessionFromRecord(sb, a.Record)
		}
		if err != nil {
			s.log.Warn("deleting a session that cannot be read back", "container_id", sb.ID(), "err", err)
			sb.Delete(ctx)
			continue
		}
		s.smu.Lock()
		s.sessions[x.id] = x
		s.smu.Unlock()
		s.known.Store(sb.ID(), struct{}{})
		if st, err := sb.Stats(ctx); err == nil {
			x.cpuNanos = st.CPUNanos
		}
		s.log.Info("adopted session", "session_id", x.id, "owner", x.owner, "alive", sb.Alive())
	}
	s.expire(ctx)
	return nil
}

// Sweep destroys expired sessions, and deletes again what containerd
// failed to delete, until ctx ends.
func (s *Server) Sweep(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.expire(ctx)
			s.retryDeletes(ctx)
			s.expireCells(false)
		}
	}
}

func (s *Server) expire(ctx context.Context) {
	now := time.Now()
	s.smu.Lock()
	var expired []*session
	for _, x := range s.sessions {
		if now.After(x.expiresAt()) {
			expired = append(expired, x)
		}
	}
	s.smu.Unlock()
	for _, x := range expired {
		s.log.Info("session expired", "session_id", x.id)
		s.deleteSession(ctx, x)
	}
}

func (s *Server) deleteSession(ctx context.Context, x *session) error {
	x.mu.Lock()
	already := x.deleted
	x.deleted = true
	x.mu.Unlock()
	if already {
		return nil
	}
	s.smu.Lock()
	delete(s.sessions, x.id)
	s.smu.Unlock()
	if err := x.sb.Delete(ctx); err != nil {
		s.deleteLater(x.sb)
		return err
	}
	s.known.Delete(x.sb.ID())
	return nil
}

func (s *Server) createSession(ctx context.Context, req *api.CreateSessionRequest, c Caller) (*api.Session, error) {
	lang, err := s.lookupLanguage(req.Language)
	if err != nil {
		return nil, err
	}
	l := lang.withDefaults(s.limits())
	memory, err := checkMemory(req.MemoryBytes, l)
	if err != nil {
		return nil, err
	}
	idle, err := checkDuration("idle_timeout_ms", req.IdleTimeoutMS, l.SessionIdleTimeout, l.MaxSessionLifetime)
	if err != nil {
		return nil, err
	}
	life, err := checkDuration("max_lifetime_ms", req.MaxLifetimeMS, l.SessionMaxLifetime, l.MaxSessionLifetime)
	if err != nil {
		return nil, err
	}
	if err := checkEnv(req.Env); err != nil {
		return nil, err
	}
	class, err := s.classFor(lang, req.Runtime)
	if err != nil {
		return nil, err
	}
	if req.Interpreter && !lang.Interpreter {
		return nil, invalid("language %s has no interpreter sessions (python and javascript have)", lang.Name)
	}
	owner := callerUID(c)
	// Count and reserve under one lock, so that racing creations cannot
	// pass the caps together.
	s.smu.Lock()
	mine := s.creating[owner]
	for _, x := range s.sessions {
		if x.owner == owner {
			mine++
		}
	}
	total := len(s.sessions)
	for _, n := range s.creating {
		total += n
	}
	if total >= l.MaxSessions {
		s.smu.Unlock()
		return nil, api.Errorf(api.CodeResourceExhausted, "the daemon holds its maximum of %d sessions; delete one first", l.MaxSessions)
	}
	if mine >= l.MaxSessionsPerUser {
		s.smu.Unlock()
		return nil, api.Errorf(api.CodeResourceExhausted, "uid %d holds its maximum of %d sessions; delete one first", owner, l.MaxSessionsPerUser)
	}
	s.creating[owner]++
	s.smu.Unlock()
	defer func() {
		s.smu.Lock()
		s.creating[owner]--
		s.smu.Unlock()
	}()

	now := time.Now()
	x := &session{id: newID(), owner: owner, lang: lang.Name, class: class, lock: make(chan struct{}, 1), created: now, lastUsed: now,
		limits: api.SessionLimits{MemoryBytes: memory, CPUs: l.CPUs, Pids: l.Pids, TmpfsBytes: l.TmpfsBytes,
			IdleTimeoutMS: idle.Milliseconds(), MaxLifetimeMS: life.Milliseconds()}}
	if req.Interpreter {
		x.interp = &interpState{fresh: true}
	}
	// The language's environment comes with each execution, whatever its
	// language; the session's own is the base.
	env := append(append([]string(nil), baseEnv...), envList(req.Env)...)
	rec := x.record()
	sb, err := s.create(ctx, sandbox.Config{
		ID:         "ses-" + x.id,
		Kind:       sandbox.KindSession,
		Session:    &rec,
		Env:        env,
		Limits:     s.sandboxLimits(memory),
		Reusable:   true,
		Image:      class.Image,
		OCIRuntime: class.Runtime,
	})
	if err != nil {
		return nil, s.createErrorFor(ctx, err, lang)
	}
	x.sb = sb
	if x.interp != nil {
		// Started now: a cell finds it running, and a language that cannot
		// run one is said at once.
		if err := s.startInterpreter(ctx, x, lang); err != nil {
			if derr := sb.Delete(context.WithoutCancel(ctx)); derr != nil {
				s.deleteLater(sb)
			}
			return nil, err
		}
	}
	s.smu.Lock()
	s.sessions[x.id] = x
	s.smu.Unlock()
	s.log.Info("session created", "session_id", x.id, "language", x.lang, "interpreter", x.interp != nil, "uid", c.UID, "pid", c.PID)
	return s.sessionInfo(ctx, x, false), nil
}

func (s *Server) sessionInfo(ctx context.Context, x *session, withUsage bool) *api.Session {
	expires := x.expiresAt()
	x.mu.Lock()
	info := &api.Session{
		ID: x.id, Language: x.lang, OwnerUID: x.owner,
		CreatedAt:   x.created.UTC().Format(timeFormat),
		ExpiresAt:   expires.UTC().Format(timeFormat),
		LastUsedAt:  x.lastUsed.UTC().Format(timeFormat),
		State:       api.SessionRunning,
		Executions:  x.executions,
		Limits:      x.limits,
		Runtime:     x.class.Runtime,
		Interpreter: x.interpreterInfo(),
	}
	x.mu.Unlock()
	if !x.sb.Alive() {
		info.State = api.SessionDead
	} else if withUsage {
		if st, err := x.sb.Stats(ctx); err == nil {
			info.MemoryUsageBytes = int64(st.MemoryUsageBytes)
		}
	}
	return info
}

func (s *Server) listSessions(ctx context.Context, c Caller) []api.Session {
	uid := callerUID(c)
	s.smu.Lock()
	var mine []*session
	for _, x := range s.sessions {
		if uid == 0 || x.owner == uid {
			mine = append(mine, x)
		}
	}
	s.smu.Unlock()
	out := make([]api.Session, 0, len(mine))
	for _, x := range mine {
		if time.Now().Before(x.expiresAt()) {
			out = append(out, *s.sessionInfo(ctx, x, false))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt < out[j].CreatedAt })
	return out
}

// acquireTurn waits for the session's turn within ctx.
func (x *session) acquireTurn(ctx context.Context) error {
	select {
	case x.lock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (x *session) releaseTurn() { <-x.lock }

// recordEvery bounds how often a session's record is written: a write is
// a containerd request and a database commit, where a cell of an
// interpreter session takes a millisecond or two.
const recordEvery = time.Second

// touch records a use, and keeps it where a restarted daemon finds it:
// in its sandbox's record, written off the caller's path; the uses of the
// second after a write, together once that second is over (or at once if
// the daemon closes).
func (s *Server) touch(ctx context.Context, x *session, execution bool) {
	x.mu.Lock()
	x.lastUsed = time.Now()
	if execution {
		x.executions++
	}
	if x.persistQueued {
		x.mu.Unlock()
		return // the queued write takes this use too
	}
	x.persistQueued = true
	wait := time.Until(x.persisted.Add(recordEvery))
	x.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-s.closing:
				t.Stop()
			}
		}
		x.mu.Lock()
		x.persistQueued, x.persisted = false, time.Now()
		deleted := x.deleted
		x.mu.Unlock()
		if deleted {
			return // while it waited
		}
		x.persisting.Lock()
		defer x.persisting.Unlock()
		// The newest values, whichever touch wrote them.
		if err := x.sb.SetRecord(context.WithoutCancel(ctx), x.record()); err != nil {
			s.log.Warn("record session use", "session_id", x.id, "err", err)
		}
	}()
}

// maxPathLen bounds a workspace path in the files API.
const maxPathLen = 4096

func checkFilePath(p string) (string, error) {
	if p == "" || len(p) > maxPathLen || strings.ContainsRune(p, 0) || strings.HasPrefix(p, "/") {
		return "", invalid("path %q must be relative to /workspace", truncate(p, 80))
	}
	c := path.Clean(p)
	if c == "." || c == ".." || strings.HasPrefix(c, "../") {
		return "", invalid("path %q leaves /workspace", truncate(p, 80))
	}
	return c, nil
}

// fileError is the API's form of a file operation's failure.
func fileError(err error, p string) error {
	switch {
	case errdefs.IsNotFound(err):
		return api.Errorf(api.CodeNotFound, "%s: no such file in /workspace", p)
	case errdefs.IsInvalidArgument(err):
		return invalid("%s: not a regular file, or a path that leaves /workspace", p)
	}
	return err
}

// fileOp runs a file operation in a session, in its turn.
func (s *Server) fileOp(ctx context.Context, x *session, fn func(ctx context.Context) error) error {
	if !x.sb.Alive() {
		return api.Errorf(api.CodeFailedPrecondition, "session %s is dead", x.id)
	}
	ctx, cancel := context.WithTimeout(ctx, s.limits().MaxTimeout)
	defer cancel()
	if err := x.acquireTurn(ctx); err != nil {
		return api.Errorf(api.CodeResourceExhausted, "session %s stayed busy: %v", x.id, err)
	}
	defer x.releaseTurn()
	err := fn(ctx)
	s.touch(ctx, x, false)
	return err
}

func (s *Server) putFile(ctx context.Context, x *session, p string, mode uint32, body []byte) (*api.FileInfo, error) {
	err := s.fileOp(ctx, x, func(ctx context.Context) error {
		return fileError(x.sb.WriteFile(ctx, p, mode, body), p)
	})
	if err != nil {
		return nil, err
	}
	return &api.FileInfo{Path: p, Size: int64(len(body)), Mode: mode, Type: "file"}, nil
}

func (s *Server) getFile(ctx context.Context, x *session, p string) ([]byte, error) {
	max := s.limits().MaxFileBytes
	out := newCappedBuffer(max)
	err := s.fileOp(ctx, x, func(ctx context.Context) error {
		return fileError(x.sb.ReadFile(ctx, p, out, max), p)
	})
	if err != nil {
		return nil, err
	}
	if out.Truncated() {
		return nil, errorf(errTooLarge, "%s is larger than the maximum of %d bytes", p, max)
	}
	return out.Bytes(), nil
}

func (s *Server) listFiles(ctx context.Context, x *session) ([]api.FileInfo, error) {
	var entries []sandbox.FileInfo
	err := s.fileOp(ctx, x, func(ctx context.Context) error {
		var err error
		entries, err = x.sb.ListFiles(ctx)
		return fileError(err, ".")
	})
	if err != nil {
		return nil, err
	}
	files := make([]api.FileInfo, len(entries))
	for i, e := range entries {
		files[i] = api.FileInfo(e)
	}
	return files, nil
}

package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// Labels that let a session outlive the daemon: a restarted daemon reads
// them back from containerd.
const (
	labelOwner      = "io.sandboxd.session.owner"
	labelLanguage   = "io.sandboxd.session.language"
	labelCreated    = "io.sandboxd.session.created"
	labelLastUsed   = "io.sandboxd.session.last-used"
	labelExecutions = "io.sandboxd.session.executions"
	labelLimits     = "io.sandboxd.session.limits"
	labelImage      = "io.sandboxd.session.image"
	labelRuntime    = "io.sandboxd.session.runtime"
)

// timeFormat has the millisecond precision that the labels keep, so that
// a session's times read the same after a daemon restart.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// sessionIDRE is the only shape of a session id: 128 random bits in hex.
var sessionIDRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// SessionKind labels the sandboxes of sessions, which outlive the daemon.
const SessionKind = "session"

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

	// persisting serializes the label writes that record uses.
	persisting sync.Mutex
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

func (x *session) labels() map[string]string {
	x.mu.Lock()
	defer x.mu.Unlock()
	limits, _ := json.Marshal(x.limits)
	return map[string]string{
		labelOwner:      strconv.FormatUint(uint64(x.owner), 10),
		labelLanguage:   x.lang,
		labelCreated:    strconv.FormatInt(x.created.UnixMilli(), 10),
		labelLastUsed:   strconv.FormatInt(x.lastUsed.UnixMilli(), 10),
		labelExecutions: strconv.FormatInt(x.executions, 10),
		labelLimits:     string(limits),
		labelImage:      x.class.Image,
		labelRuntime:    x.class.Runtime,
	}
}

func sessionFromLabels(sb Sandbox, l map[string]string) (*session, error) {
	owner, err1 := strconv.ParseUint(l[labelOwner], 10, 32)
	created, err2 := strconv.ParseInt(l[labelCreated], 10, 64)
	lastUsed, err3 := strconv.ParseInt(l[labelLastUsed], 10, 64)
	execs, err4 := strconv.ParseInt(l[labelExecutions], 10, 64)
	x := &session{id: strings.TrimPrefix(sb.ID(), "ses-"), owner: uint32(owner), lang: l[labelLanguage], sb: sb,
		lock: make(chan struct{}, 1), created: time.UnixMilli(created), lastUsed: time.UnixMilli(lastUsed), executions: execs,
		class: sandboxClass{Image: l[labelImage], Runtime: l[labelRuntime]}}
	if x.class.Runtime == "" { // made before runtimes were chosen
		x.class.Runtime = defaultOCIRuntime
	}
	err5 := json.Unmarshal([]byte(l[labelLimits]), &x.limits)
	for _, err := range []error{err1, err2, err3, err4, err5} {
		if err != nil {
			return nil, fmt.Errorf("session %s: labels: %w", sb.ID(), err)
		}
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
	sbs, err := s.rt.Adopt(ctx, SessionKind)
	if err != nil {
		return err
	}
	for _, sb := range sbs {
		labels, err := sb.Labels(ctx)
		var x *session
		if err == nil {
			x, err = sessionFromLabels(sb, labels)
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
	l := s.limits()
	lang, ok := findLanguage(s.languages(), req.Language)
	if !ok {
		if req.Language == "" {
			return nil, invalid("language is required (available: %s)", s.languageNames())
		}
		return nil, invalid("unknown language %q (available: %s)", req.Language, s.languageNames())
	}
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
	// The language's environment comes with each execution, whatever its
	// language; the session's own is the base.
	env := append(append([]string(nil), baseEnv...), envList(req.Env)...)
	sb, err := s.create(ctx, SandboxConfig{
		ID:         "ses-" + x.id,
		Kind:       SessionKind,
		Labels:     x.labels(),
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
	s.smu.Lock()
	s.sessions[x.id] = x
	s.smu.Unlock()
	s.log.Info("session created", "session_id", x.id, "language", x.lang, "uid", c.UID, "pid", c.PID)
	return s.sessionInfo(ctx, x, false), nil
}

func (s *Server) sessionInfo(ctx context.Context, x *session, withUsage bool) *api.Session {
	expires := x.expiresAt()
	x.mu.Lock()
	info := &api.Session{
		ID: x.id, Language: x.lang, OwnerUID: x.owner,
		CreatedAt:  x.created.UTC().Format(timeFormat),
		ExpiresAt:  expires.UTC().Format(timeFormat),
		LastUsedAt: x.lastUsed.UTC().Format(timeFormat),
		State:      api.SessionRunning,
		Executions: x.executions,
		Limits:     x.limits,
		Runtime:    x.class.Runtime,
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

// touch records a use, and keeps it where a restarted daemon finds it:
// in the container's labels, written off the caller's path.
func (s *Server) touch(ctx context.Context, x *session, execution bool) {
	x.mu.Lock()
	x.lastUsed = time.Now()
	if execution {
		x.executions++
	}
	x.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		x.persisting.Lock()
		defer x.persisting.Unlock()
		// The newest values, whichever touch wrote them.
		if err := x.sb.SetLabels(context.WithoutCancel(ctx), x.labels()); err != nil {
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

// Exit codes of sandboxd-init's file helpers.
const (
	helperNotFound = 3
	helperInvalid  = 4
)

func helperError(code int, op, p string) error {
	switch code {
	case 0:
		return nil
	case helperNotFound:
		return api.Errorf(api.CodeNotFound, "%s: no such file in /workspace", p)
	case helperInvalid:
		return invalid("%s: not a regular file, or a path that leaves /workspace", p)
	}
	return fmt.Errorf("%s %s: helper exited %d", op, p, code)
}

// fileOp runs a file helper in a session, in its turn.
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
	var info *api.FileInfo
	err := s.fileOp(ctx, x, func(ctx context.Context) error {
		code, err := x.sb.Helper(ctx, bytes.NewReader(body), io.Discard, "put", p, strconv.FormatUint(uint64(mode), 8))
		if err != nil {
			return err
		}
		if err := helperError(code, "upload", p); err != nil {
			return err
		}
		info = &api.FileInfo{Path: p, Size: int64(len(body)), Mode: mode, Type: "file"}
		return nil
	})
	return info, err
}

func (s *Server) getFile(ctx context.Context, x *session, p string) ([]byte, error) {
	out := newCappedBuffer(s.limits().MaxFileBytes)
	err := s.fileOp(ctx, x, func(ctx context.Context) error {
		code, err := x.sb.Helper(ctx, nil, out, "get", p)
		if err != nil {
			return err
		}
		return helperError(code, "download", p)
	})
	if err != nil {
		return nil, err
	}
	if out.Truncated() {
		return nil, &api.Error{Code: api.CodeInvalidArgument, Status: 413,
			Message: fmt.Sprintf("%s is larger than the maximum of %d bytes", p, s.limits().MaxFileBytes)}
	}
	return out.Bytes(), nil
}

func (s *Server) listFiles(ctx context.Context, x *session) ([]api.FileInfo, error) {
	var out bytes.Buffer
	err := s.fileOp(ctx, x, func(ctx context.Context) error {
		code, err := x.sb.Helper(ctx, nil, &out, "list")
		if err != nil {
			return err
		}
		return helperError(code, "list", ".")
	})
	if err != nil {
		return nil, err
	}
	files := []api.FileInfo{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var f api.FileInfo
		if json.Unmarshal(sc.Bytes(), &f) == nil {
			files = append(files, f)
		}
	}
	return files, nil
}

package daemon

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// drainRetryAfter is what a client refused while the daemon drains is told
// to wait, in seconds: about what a restarted daemon takes to serve again.
const drainRetryAfter = 5

// maxDrainWait bounds the ?timeout= of a drain.
const maxDrainWait = time.Hour

// drainState counts the new work under way (executions and session
// creations) and, once a drain began, refuses more. Its zero value takes
// work.
type drainState struct {
	mu       sync.Mutex
	draining bool
	active   int
	// idle is closed when active drops to 0; nil while active is 0.
	idle chan struct{}
}

// enter admits a piece of new work, unless the daemon drains; leave must
// follow an admission.
func (d *drainState) enter() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.draining {
		return false
	}
	if d.active == 0 {
		d.idle = make(chan struct{})
	}
	d.active++
	return true
}

func (d *drainState) leave() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.active--; d.active == 0 {
		close(d.idle)
		d.idle = nil
	}
}

// begin refuses new work from now on. It returns whether this call began
// the drain, and a channel closed once the work under way is over.
func (d *drainState) begin() (first bool, idle <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	first, d.draining = !d.draining, true
	if d.idle == nil {
		done := make(chan struct{})
		close(done)
		return first, done
	}
	return first, d.idle
}

func (d *drainState) state() (draining bool, active int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.draining, d.active
}

// admitWork lets a new execution or session creation in, or refuses it
// with 503 and Retry-After while the daemon drains. Call s.drain.leave
// once an admitted request is answered.
func (s *Server) admitWork(w http.ResponseWriter) error {
	if s.drain.enter() {
		return nil
	}
	w.Header().Set("Retry-After", strconv.Itoa(drainRetryAfter))
	return api.Errorf(api.CodeUnavailable, "sandboxd is draining (it is being restarted or upgraded): it takes no new executions or sessions; "+
		"retry in %d s, when the next daemon serves this socket (sessions stay)", drainRetryAfter)
}

// serveDrain stops taking new executions and sessions and waits, up to
// ?timeout= (default limits.max_timeout), for those under way to end.
// Sessions stay, for the next daemon to adopt; /v1/health?ready=1 answers
// 503 from now on. It is for root: it refuses work to everyone.
func (s *Server) serveDrain(w http.ResponseWriter, r *http.Request) error {
	if c := callerOf(r.Context()); !c.Known || c.UID != 0 {
		return api.Errorf(api.CodePermissionDenied, "drain is for root: it stops the daemon taking work from every user")
	}
	wait := s.limits().MaxTimeout
	if v := r.URL.Query().Get("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > maxDrainWait {
			return invalid("timeout=%q: want a duration from 0s to %v, such as 90s", truncate(v, 40), maxDrainWait)
		}
		wait = d
	}
	start := time.Now()
	first, idle := s.drain.begin()
	_, active := s.drain.state()
	if first {
		s.log.Info("draining: no new executions or sessions", "under_way", active, "wait", wait)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	case <-r.Context().Done():
		return r.Context().Err()
	}
	_, active = s.drain.state()
	res := api.DrainResult{Drained: active == 0, Running: active, Sessions: s.Status(r.Context()).Sessions, WaitedMS: time.Since(start).Milliseconds()}
	s.log.Info("drain answered", "drained", res.Drained, "running", res.Running, "sessions", res.Sessions, "waited", time.Since(start).Round(time.Millisecond))
	writeJSON(w, http.StatusOK, res)
	return nil
}

// readiness adds to a health answer what ?ready=1 asks beyond it: not
// draining, and the pools warm.
func (s *Server) readiness(ctx context.Context, h *api.Health) {
	warm, pool := s.poolWarmth(ctx)
	h.Pool = pool
	if h.Draining || !warm {
		h.Status = "unavailable"
	}
}

// poolWarmth reports whether the pools are warm: started, and each pool
// whose sandboxes can be made (its runtime installed, its image in
// containerd) has made its size of sandboxes since start, or been full.
// A pool that cannot fill (an image not pulled yet) does not hold the
// daemon back: /v1/languages says why its language is unavailable.
func (s *Server) poolWarmth(ctx context.Context) (bool, string) {
	s.pmu.Lock()
	started := s.poolCtx != nil
	pools := maps.Clone(s.pools)
	s.pmu.Unlock()
	if !started {
		return false, "not started"
	}
	warm := true
	ready, target := 0, 0
	for c, p := range pools {
		ready, target = ready+len(p.ready), target+p.target()
		if !p.warmed.Load() && s.classAvailable(ctx, c) {
			warm = false
		}
	}
	if warm {
		return true, "warm"
	}
	return false, fmt.Sprintf("warming: %d of %d sandboxes ready", ready, target)
}

// classAvailable reports whether sandboxes of a class can be made: an
// available language runs in it.
func (s *Server) classAvailable(ctx context.Context, c sandboxClass) bool {
	c.Cells = false
	for _, l := range s.languages() {
		if l.class() == c && s.unavailable(ctx, l) == "" {
			return true
		}
	}
	return false
}

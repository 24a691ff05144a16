package daemon

import (
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// pool keeps sandboxes created and started ahead of demand, that no code
// has ever run in, so that a one-shot execution only has to hand its code
// over. Each is used once and destroyed afterwards; a background loop
// refills the pool one sandbox at a time. An empty pool is never waited
// on alone: the request creates its own sandbox, and takes a refill
// instead if one is ready first (see acquireSandbox).
type pool struct {
	s      *Server
	class  sandboxClass
	ready  chan pooled
	wake   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	size   int
	// stopped is set, under mu, before the last drain of ready: nothing
	// joins the pool after it.
	stopped bool
	// made counts the sandboxes the refills made; warmed is set once they
	// made size of them, or the pool was full: readiness waits for it.
	made   atomic.Int64
	warmed atomic.Bool
}

// pooled is a ready sandbox, the limits it was made with, and the
// generation of the host's root it was made on: a reload may change the
// limits, or the host paths, of those made next.
type pooled struct {
	sb     Sandbox
	limits sandbox.Limits
	root   uint64
}

func newPool(s *Server, class sandboxClass, size int) *pool {
	return &pool{s: s, class: class, ready: make(chan pooled, 256), wake: make(chan struct{}, 1), size: size, done: make(chan struct{})}
}

// start fills the pool until stop.
func (p *pool) start(ctx context.Context) {
	ctx, p.cancel = context.WithCancel(ctx)
	go p.fill(ctx)
}

func (p *pool) fill(ctx context.Context) {
	defer close(p.done)
	// After a failure (an image not there yet, say), the next try waits
	// longer each time, up to a minute; a poke tries at once.
	backoff := time.Second
	for {
		for ctx.Err() == nil && len(p.ready) < p.target() {
			p.s.running.yield(ctx, refillYield)
			limits := p.s.sandboxLimits(p.s.limits().DefaultMemory)
			root := p.s.rootGen.Load() // before the create: it may use the old root
			sb, err := p.s.create(ctx, sandbox.Config{
				ID:         "sbx-" + newID(),
				Kind:       sandbox.KindPool,
				Env:        baseEnv,
				Limits:     limits,
				Image:      p.class.Image,
				OCIRuntime: p.class.Runtime,
				Jails:      p.class.Cells,
			})
			if err != nil {
				if ctx.Err() == nil {
					p.s.log.Warn("pool refill", "image", p.class.Image, "runtime", p.class.Runtime, "err", err, "retry_in", backoff)
					select {
					case <-ctx.Done():
					case <-p.wake:
					case <-time.After(backoff):
					}
					backoff = min(2*backoff, time.Minute)
				}
				break
			}
			backoff = time.Second
			if p.made.Add(1) >= int64(p.target()) {
				p.warmed.Store(true)
			}
			// Through join, which looks for room under the lock: a
			// request's own sandbox may have filled it meanwhile.
			p.join(pooled{sb, limits, root})
		}
		if ctx.Err() == nil && len(p.ready) >= p.target() {
			p.warmed.Store(true)
		}
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-time.After(5 * time.Second):
		}
	}
}

// refillYield bounds how long a refill waits for the programs running to
// end: a create takes both cores of a small host for a while (see
// docs/performance.md), which a running program would feel in its latency. Under steady load the
// refill goes ahead after it, so that the pool does not starve.
const refillYield = 50 * time.Millisecond

// activity counts the programs running, and tells when none is.
type activity struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0
}

func (a *activity) begin() {
	a.mu.Lock()
	if a.n == 0 {
		a.idle = make(chan struct{})
	}
	a.n++
	a.mu.Unlock()
}

func (a *activity) end() {
	a.mu.Lock()
	a.n--
	if a.n == 0 {
		close(a.idle)
	}
	a.mu.Unlock()
}

// yield waits until no program runs, for at most d.
func (a *activity) yield(ctx context.Context, d time.Duration) {
	a.mu.Lock()
	n, idle := a.n, a.idle
	a.mu.Unlock()
	if n == 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	case <-ctx.Done():
	}
}

func (p *pool) target() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.size
}

// resize changes the pool's size (on reload), and returns the ready
// sandboxes over a smaller size, for the caller to destroy.
func (p *pool) resize(n int) []pooled {
	p.mu.Lock()
	p.size = n
	var extra []pooled
trim:
	for len(p.ready) > n {
		select {
		case r := <-p.ready:
			extra = append(extra, r)
		default:
			break trim
		}
	}
	p.mu.Unlock()
	p.poke()
	return extra
}

func (p *pool) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// serves reports whether the pool holds sandboxes of these limits: it
// holds those of the default limits only.
func (p *pool) serves(want sandbox.Limits) bool {
	return want == p.s.sandboxLimits(p.s.limits().DefaultMemory)
}

// take returns a ready sandbox with the limits wanted, or nil.
func (p *pool) take(want sandbox.Limits) Sandbox {
	if !p.serves(want) {
		return nil
	}
	for {
		select {
		case r := <-p.ready:
			if sb := p.check(r, want); sb != nil {
				return sb
			}
		default:
			return nil
		}
	}
}

// poolOf returns a class's pool, or nil.
func (s *Server) poolOf(c sandboxClass) *pool {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	return s.pools[c]
}

// takePooled returns a ready sandbox of a class's pool, with the limits
// wanted, or nil; it never waits.
func (s *Server) takePooled(c sandboxClass, limits sandbox.Limits) Sandbox {
	if p := s.poolOf(c); p != nil {
		return p.take(limits)
	}
	return nil
}

// check returns a sandbox taken from the pool if it is still fit to
// serve: those made before a reload changed the limits or the host's
// root, or dead, are destroyed.
func (p *pool) check(r pooled, want sandbox.Limits) Sandbox {
	p.poke()
	if r.limits == want && r.root == p.s.rootGen.Load() && r.sb.Alive() {
		return r.sb
	}
	p.s.destroy(context.Background(), r.sb)
	return nil
}

// join puts a sandbox nobody used into the pool, if it is fit and there is
// room; otherwise it is destroyed.
func (p *pool) join(r pooled) {
	p.mu.Lock()
	if !p.stopped && len(p.ready) < p.size && r.root == p.s.rootGen.Load() && p.serves(r.limits) {
		p.ready <- r // never blocks: ready holds more than any size
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	p.s.destroy(context.Background(), r.sb)
}

// acquireSandbox returns a sandbox for a one-shot execution: a pooled one when
// one is ready. Otherwise it creates one, and takes instead a refill of
// the pool that is ready first; the sandbox it created then joins the
// pool. A request so never waits longer than its own create, and never
// on a refill alone (one that fails leaves it its own).
func (s *Server) acquireSandbox(ctx context.Context, c sandboxClass, limits sandbox.Limits, create func(context.Context) (Sandbox, error)) (Sandbox, error) {
	p := s.poolOf(c)
	if p == nil || !p.serves(limits) {
		return create(ctx)
	}
	if sb := p.take(limits); sb != nil {
		return sb, nil
	}
	type made struct {
		sb  Sandbox
		err error
	}
	root := s.rootGen.Load() // before the create: it may use the old root
	mine := make(chan made, 1)
	// Both goroutines may outlive the request: Wait waits for them too.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		sb, err := create(context.WithoutCancel(ctx))
		mine <- made{sb, err}
	}()
	giveAway := func() {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if m := <-mine; m.err == nil {
				p.join(pooled{m.sb, limits, root})
			}
		}()
	}
	for {
		select {
		case m := <-mine:
			if m.err == nil && ctx.Err() != nil {
				p.join(pooled{m.sb, limits, root})
				return nil, ctx.Err()
			}
			return m.sb, m.err
		case r := <-p.ready:
			if sb := p.check(r, limits); sb != nil {
				giveAway()
				return sb, nil
			}
		case <-ctx.Done():
			giveAway()
			return nil, ctx.Err()
		}
	}
}

// syncPools makes one pool for each class that an available language runs
// in by default, of size sandboxes each, and stops those of classes no
// language uses any more.
func (s *Server) syncPools(size int) {
	want := map[sandboxClass]bool{}
	for _, l := range s.languages() {
		c := l.class()
		want[c] = true
		if s.cellsFor(l) {
			c.Cells = true
			want[c] = true
		}
	}
	s.pmu.Lock()
	if s.poolCtx == nil {
		s.pmu.Unlock()
		return
	}
	var gone []*pool
	var extra []pooled
	for c, p := range s.pools {
		if !want[c] {
			gone = append(gone, p)
			delete(s.pools, c)
		}
	}
	for c := range want {
		if p, ok := s.pools[c]; ok {
			extra = append(extra, p.resize(size)...)
			continue
		}
		p := newPool(s, c, size)
		s.pools[c] = p
		p.start(s.poolCtx)
	}
	s.pmu.Unlock()
	for _, p := range gone {
		go p.stop(context.Background())
	}
	// A smaller pool gives its memory back now, not as it is used.
	for _, r := range extra {
		s.destroy(context.Background(), r.sb)
	}
}

// pokePools makes the pools of an image try again at once, as when it
// has just been imported.
func (s *Server) pokePools(image string) {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	for c, p := range s.pools {
		if c.Image == image {
			p.poke()
		}
	}
}

// drainPools destroys the ready sandboxes of every pool, which refill.
func (s *Server) drainPools() {
	s.pmu.Lock()
	pools := slices.Collect(maps.Values(s.pools))
	s.pmu.Unlock()
	for _, p := range pools {
		for drained := false; !drained; {
			select {
			case r := <-p.ready:
				s.destroy(context.Background(), r.sb)
			default:
				drained = true
			}
		}
		p.poke()
	}
}

// poolTarget is how many ready sandboxes the pools are to hold.
func (s *Server) poolTarget() int {
	s.pmu.Lock()
	pools := slices.Collect(maps.Values(s.pools))
	s.pmu.Unlock()
	n := 0
	for _, p := range pools {
		n += p.target()
	}
	return n
}

// poolReady is how many ready sandboxes the pools hold.
func (s *Server) poolReady() int {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	n := 0
	for _, p := range s.pools {
		n += len(p.ready)
	}
	return n
}

// stop ends the refills and destroys the ready sandboxes.
func (p *pool) stop(ctx context.Context) {
	if p.cancel == nil {
		return
	}
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.cancel()
	<-p.done
	for {
		select {
		case r := <-p.ready:
			p.s.destroy(ctx, r.sb)
		default:
			return
		}
	}
}

// create creates a sandbox that the daemon knows from before it exists
// in containerd, so that it is never taken for a leak.
func (s *Server) create(ctx context.Context, cfg sandbox.Config) (Sandbox, error) {
	s.known.Store(cfg.ID, struct{}{})
	sb, err := s.rt.Create(ctx, cfg)
	if err != nil {
		if sb != nil {
			s.deleteLater(sb)
		} else {
			s.known.Delete(cfg.ID)
		}
		return nil, err
	}
	return sb, nil
}

// destroy deletes a sandbox; one that will not go (containerd is away) is
// deleted again later.
func (s *Server) destroy(ctx context.Context, sb Sandbox) {
	if err := sb.Delete(ctx); err != nil {
		s.log.Warn("delete sandbox; trying again later", "container_id", sb.ID(), "err", err)
		s.deleteLater(sb)
		return
	}
	s.known.Delete(sb.ID())
}

// deleteLater keeps a sandbox whose deletion failed, for retryDeletes.
func (s *Server) deleteLater(sb Sandbox) {
	s.undeleted.Store(sb.ID(), sb)
}

// retryDeletes deletes again the sandboxes whose deletion failed, once
// containerd answers: what an outage left behind goes without a restart.
func (s *Server) retryDeletes(ctx context.Context) {
	first := true
	s.undeleted.Range(func(id, v any) bool {
		if first && !s.rt.Info(ctx).Serving {
			return false
		}
		first = false
		sb := v.(Sandbox)
		if err := sb.Delete(ctx); err != nil {
			s.log.Debug("delete sandbox again", "container_id", id, "err", err)
			return true
		}
		s.log.Info("deleted a sandbox left by a containerd outage", "container_id", id)
		s.undeleted.Delete(id)
		s.known.Delete(id)
		return true
	})
}

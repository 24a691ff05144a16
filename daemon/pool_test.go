package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// gatedRuntime is a fake runtime whose creates wait for gate, and say on
// started that one began.
type gatedRuntime struct {
	*fakeRuntime
	started chan struct{}
	gate    chan struct{}
}

func (g *gatedRuntime) Create(ctx context.Context, cfg sandbox.Config) (Sandbox, error) {
	select {
	case g.started <- struct{}{}:
	default:
	}
	<-g.gate
	return g.fakeRuntime.Create(ctx, cfg)
}

// A refill that ends after a request's own sandbox has joined the pool
// does not take the pool over its size: there is no room for it, and it
// is destroyed.
func TestRefillAfterJoinKeepsThePoolsSize(t *testing.T) {
	rt := &gatedRuntime{
		fakeRuntime: &fakeRuntime{exec: func(context.Context, sandbox.Process) (sandbox.ExitResult, error) { return sandbox.ExitResult{}, nil }},
		started:     make(chan struct{}, 1),
		gate:        make(chan struct{}),
	}
	s := newTestServer(t, rt, nil)
	class := sandboxClass{Runtime: "runc"}
	p := newPool(s, class, 1)
	s.pools[class] = p
	p.start(context.Background())
	defer p.stop(context.Background())
	<-rt.started // the pool is empty: a refill is under way
	limits := s.sandboxLimits(s.limits().DefaultMemory)
	p.join(pooled{&namedSandbox{fakeSandbox{rt.fakeRuntime}, "own"}, limits, s.rootGen.Load()})
	close(rt.gate)
	deadline := time.Now().Add(5 * time.Second)
	for {
		rt.mu.Lock()
		deleted := rt.deleted
		rt.mu.Unlock()
		if deleted > 0 || len(p.ready) > 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if n := len(p.ready); n != 1 {
		t.Errorf("a pool of size 1 holds %d sandboxes", n)
	}
}

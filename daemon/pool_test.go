package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/runtime/sandbox"
	"github.com/sandboxd/sandboxd/runtime/sandbox/sandboxtest"
)

// A refill that ends after a request's own sandbox has joined the pool
// does not take the pool over its size: there is no room for it, and it
// is destroyed.
func TestRefillAfterJoinKeepsThePoolsSize(t *testing.T) {
	// The pool's creates wait for gate, and say on started that one began.
	started, gate := make(chan struct{}, 1), make(chan struct{})
	rt := &sandboxtest.Runtime{Creating: func(cfg sandbox.Config) {
		if cfg.Kind != sandbox.KindPool {
			return
		}
		select {
		case started <- struct{}{}:
		default:
		}
		<-gate
	}}
	s := newTestServer(t, rt, nil)
	class := sandboxClass{Runtime: "runc"}
	p := newPool(s, class, 1)
	s.pools[class] = p
	p.start(context.Background())
	defer p.stop(context.Background())
	<-started // the pool is empty: a refill is under way
	limits := s.sandboxLimits(s.limits().DefaultMemory)
	p.join(pooled{newSandbox(rt, "own"), limits, s.rootGen.Load()})
	close(gate)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if rt.Deletes() > 0 || len(p.ready) > 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if n := len(p.ready); n != 1 {
		t.Errorf("a pool of size 1 holds %d sandboxes", n)
	}
}

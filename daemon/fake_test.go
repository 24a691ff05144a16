package daemon

import (
	"context"

	"github.com/sandboxd/sandboxd/runtime/sandbox"
	"github.com/sandboxd/sandboxd/runtime/sandbox/sandboxtest"
)

// fakeRuntime is package sandboxtest's runtime as the daemon consumes it.
// As cmd/sandboxd/adapter.go does for the real runtime, only the sandboxes
// it returns need wrapping in the daemon's types.
type fakeRuntime struct{ *sandboxtest.Runtime }

var (
	_ Runtime = fakeRuntime{}
	_ Sandbox = (*sandboxtest.Sandbox)(nil)
)

func (r fakeRuntime) Create(ctx context.Context, cfg sandbox.Config) (Sandbox, error) {
	sb, err := r.Runtime.Create(ctx, cfg)
	if sb == nil {
		return nil, err
	}
	return sb, err
}

func (r fakeRuntime) AdoptSessions(ctx context.Context) ([]Adopted, error) {
	adopted, err := r.Runtime.AdoptSessions(ctx)
	out := make([]Adopted, len(adopted))
	for i, a := range adopted {
		out[i] = Adopted{Sandbox: a.Sandbox, Record: a.Record}
	}
	return out, err
}

// newSandbox is a sandbox of rt that a test makes itself, to hand to the
// daemon where the runtime would: the runtime still counts its deletion.
func newSandbox(rt *sandboxtest.Runtime, id string) Sandbox {
	sb, err := rt.Create(context.Background(), sandbox.Config{ID: id})
	if err != nil {
		panic(err) // only an away runtime fails, and no test makes one then
	}
	return sb
}

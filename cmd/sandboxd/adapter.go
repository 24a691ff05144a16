package main

import (
	"context"

	"github.com/sandboxd/sandboxd/daemon"
	sbxruntime "github.com/sandboxd/sandboxd/runtime"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// containerdRuntime is the containerd runtime as the daemon consumes it.
// The two speak package sandbox's values; only the sandboxes they return
// need wrapping in the daemon's interface.
type containerdRuntime struct{ *sbxruntime.Client }

func (r containerdRuntime) Create(ctx context.Context, cfg sandbox.Config) (daemon.Sandbox, error) {
	sb, err := r.Client.Create(ctx, cfg)
	if sb == nil {
		return nil, err
	}
	return sb, err
}

func (r containerdRuntime) AdoptSessions(ctx context.Context) ([]daemon.Adopted, error) {
	adopted, err := r.Client.AdoptSessions(ctx)
	out := make([]daemon.Adopted, len(adopted))
	for i, a := range adopted {
		out[i] = daemon.Adopted{Sandbox: a.Sandbox, Record: a.Record, Err: a.Err}
	}
	return out, err
}

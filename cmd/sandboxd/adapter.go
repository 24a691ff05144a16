package main

import (
	"context"
	"io"

	"github.com/sandboxd/sandboxd/daemon"
	sbxruntime "github.com/sandboxd/sandboxd/runtime"
)

// containerdRuntime adapts the containerd runtime to the interface that the
// daemon declares; it is the only place the two meet.
type containerdRuntime struct {
	c       *sbxruntime.Client
	address string
	managed bool
}

func (r *containerdRuntime) Create(ctx context.Context, cfg daemon.SandboxConfig) (daemon.Sandbox, error) {
	sb, err := r.c.Create(ctx, sbxruntime.SandboxConfig{
		ID:         cfg.ID,
		Kind:       cfg.Kind,
		Labels:     cfg.Labels,
		Env:        cfg.Env,
		Limits:     sbxruntime.Limits(cfg.Limits),
		Reusable:   cfg.Reusable,
		Image:      cfg.Image,
		OCIRuntime: cfg.OCIRuntime,
	})
	if sb == nil {
		return nil, err
	}
	return sandbox{sb}, err
}

func (r *containerdRuntime) Adopt(ctx context.Context, kind string) ([]daemon.Sandbox, error) {
	sbs, err := r.c.Adopt(ctx, kind)
	out := make([]daemon.Sandbox, len(sbs))
	for i, sb := range sbs {
		out[i] = sandbox{sb}
	}
	return out, err
}

func (r *containerdRuntime) Info(ctx context.Context) daemon.RuntimeInfo {
	info := daemon.RuntimeInfo{Address: r.address, Managed: r.managed, CgroupVersion: r.c.CgroupVersion(),
		StateDir: r.c.StateDir(), StateDirErr: r.c.StateDirWritable()}
	if v, err := r.c.Version(ctx); err == nil {
		info.Version, info.Serving = v, true
	}
	return info
}

// sandbox adapts a runtime sandbox; most methods come as they are.
type sandbox struct{ *sbxruntime.Sandbox }

func (s sandbox) Exec(ctx context.Context, p daemon.Process) (daemon.ExitResult, error) {
	files := make([]sbxruntime.WorkspaceFile, len(p.WorkspaceFiles))
	for i, f := range p.WorkspaceFiles {
		files[i] = sbxruntime.WorkspaceFile{Path: f.Path, Data: f.Data, Mode: f.Mode}
	}
	res, err := s.Sandbox.Exec(ctx, sbxruntime.Process{
		Args: p.Args, Env: p.Env, Stdin: p.Stdin, Stdout: p.Stdout, Stderr: p.Stderr,
		Last: p.Last, Files: p.Files, FilesDir: p.FilesDir, WorkspaceFiles: files, StdinLive: p.StdinLive,
	})
	return daemon.ExitResult(res), err
}

func (s sandbox) Collect(ctx context.Context, globs []string, max int64) ([]daemon.CollectedFile, error) {
	files, err := s.Sandbox.Collect(ctx, globs, max)
	out := make([]daemon.CollectedFile, len(files))
	for i, f := range files {
		out[i] = daemon.CollectedFile(f)
	}
	return out, err
}

func (s sandbox) Stats(ctx context.Context) (daemon.Stats, error) {
	st, err := s.Sandbox.Stats(ctx)
	return daemon.Stats{CPUNanos: st.CPUNanos, MemoryUsageBytes: st.MemoryUsageBytes, MemoryPeakBytes: st.MemoryPeakBytes}, err
}

func (r *containerdRuntime) List(ctx context.Context) ([]string, error) { return r.c.List(ctx) }

func (r *containerdRuntime) Images(ctx context.Context) ([]daemon.ImageInfo, error) {
	imgs, err := r.c.Images(ctx)
	return imageInfos(imgs), err
}

func (r *containerdRuntime) ImportImages(ctx context.Context, rd io.Reader) ([]daemon.ImageInfo, error) {
	imgs, err := r.c.ImportImages(ctx, rd)
	return imageInfos(imgs), err
}

func imageInfos(imgs []sbxruntime.ImageInfo) []daemon.ImageInfo {
	out := make([]daemon.ImageInfo, len(imgs))
	for i, img := range imgs {
		out[i] = daemon.ImageInfo(img)
	}
	return out
}

func (r *containerdRuntime) PullImage(ctx context.Context, ref string) error {
	return r.c.PullImage(ctx, ref)
}

func (r *containerdRuntime) RemoveImage(ctx context.Context, ref string) error {
	return r.c.RemoveImage(ctx, ref)
}

func (r *containerdRuntime) ImageReady(ctx context.Context, ref string) error {
	return r.c.ImageReady(ctx, ref)
}

func (r *containerdRuntime) OCIRuntimeReady(name string) error { return r.c.OCIRuntimeReady(name) }

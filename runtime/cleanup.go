package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd/api/services/tasks/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
)

// Cleanup deletes every container (with its task and snapshot) that has
// our label and is not of a kind in keep, and the per-sandbox files of what
// it deleted: what an earlier daemon that died left behind. Sandboxes of a
// kept kind, such as sessions, outlive daemons.
// Call it only when no sandbox of this Client of another kind is in use.
func (c *Client) Cleanup(ctx context.Context, keep ...string) (int, error) {
	ctx = c.ctx(ctx)
	// A connection of its own: the long-lived one may sit in gRPC's
	// reconnect back-off after containerd restarted, and fail at once.
	client, err := containerd.New(c.cfg.Address, containerd.WithDefaultNamespace(c.cfg.Namespace), containerd.WithTimeout(10*time.Second))
	if err != nil {
		return 0, fmt.Errorf("containerd at %s: %w", c.cfg.Address, err)
	}
	defer client.Close()
	ctrs, err := client.Containers(ctx, fmt.Sprintf("labels.%q==true", LabelManaged))
	if err != nil {
		return 0, fmt.Errorf("list containers: %w", err)
	}
	var errs []error
	kept := map[string]bool{}
	deleted := 0
	for _, ctr := range ctrs {
		labels, err := ctr.Labels(ctx)
		if err == nil && slices.Contains(keep, labels[LabelKind]) {
			kept[ctr.ID()] = true
			continue
		}
		if err := deleteContainer(ctx, client, ctr, nil, true); err != nil {
			errs = append(errs, err)
		}
		deleted++
	}
	entries, _ := os.ReadDir(filesDir(c.cfg.StateDir))
	for _, e := range entries {
		if !kept[e.Name()] {
			if err := os.RemoveAll(filepath.Join(filesDir(c.cfg.StateDir), e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Views of sandboxes gone with an earlier daemon, and bases of images
	// removed or of another agent.
	c.removeStale(ctx, true)
	// FIFOs are per task: those of kept sandboxes are their agents'
	// channels, which this daemon attaches to again; the rest are left
	// from tasks gone.
	entries, _ = os.ReadDir(fifoDir(c.cfg.StateDir))
	for _, e := range entries {
		dir := filepath.Join(fifoDir(c.cfg.StateDir), e.Name())
		if fifosOf(dir, kept) {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return deleted, errors.Join(errs...)
}

// fifosOf reports whether a FIFO directory holds the stdio of one of the
// containers in ids: containerd names each FIFO after its task, ID-stdin,
// ID-stdout and ID-stderr.
func fifosOf(dir string, ids map[string]bool) bool {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		for _, suffix := range []string{"-stdin", "-stdout", "-stderr"} {
			if id, ok := strings.CutSuffix(e.Name(), suffix); ok && ids[id] {
				return true
			}
		}
	}
	return false
}

// List returns the ids of every container with our label.
func (c *Client) List(ctx context.Context) ([]string, error) {
	ctrs, err := c.client.Containers(c.ctx(ctx), fmt.Sprintf("labels.%q==true", LabelManaged))
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(ctrs))
	for i, ctr := range ctrs {
		ids[i] = ctr.ID()
	}
	return ids, nil
}

// deleteContainer kills and deletes a container's task, then the container
// and its snapshot; what is already gone is not an error. task is the
// container's task when the caller holds it: deleting through the handle
// that owns the task's IO also closes the IO and removes its FIFOs.
func deleteContainer(ctx context.Context, client *containerd.Client, ctr containerd.Container, task containerd.Task, kill bool) error {
	var err error
	if task == nil {
		task, err = ctr.Task(ctx, nil)
	}
	if err == nil {
		var opts []containerd.ProcessDeleteOpts
		if kill {
			opts = append(opts, containerd.WithProcessKill)
		}
		if _, err := task.Delete(ctx, opts...); err != nil && !errdefs.IsNotFound(err) {
			// runsc cannot signal a task that was created but never
			// started; such a task is deleted without a kill, by the
			// task service (the client refuses to delete a created task).
			_, err2 := client.TaskService().Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: ctr.ID()})
			if err2 != nil && !errdefs.IsNotFound(errgrpc.ToNative(err2)) {
				return fmt.Errorf("delete task %s: %w", ctr.ID(), errors.Join(err, err2))
			}
		}
	} else if !errdefs.IsNotFound(err) {
		return fmt.Errorf("task %s: %w", ctr.ID(), err)
	}
	if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", ctr.ID(), err)
	}
	return nil
}

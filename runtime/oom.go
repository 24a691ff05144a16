package runtime

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/typeurl/v2"

	eventtypes "github.com/containerd/containerd/api/events"
)

// oomKilled reports whether the OOM killer struck in this sandbox since the
// count before. The kernel counts OOM kills in the cgroup; containerd also
// sends an event, which may come a moment after the exit.
func (s *Sandbox) oomKilled(ctx context.Context, before uint64) bool {
	if st, err := s.Stats(ctx); err == nil && st.OOMKills > before {
		return true
	}
	select {
	case <-s.oomC:
		return true
	case <-time.After(500 * time.Millisecond):
		return false
	}
}

// oomWatch turns containerd's OOM events into per-sandbox signals.
type oomWatch struct {
	cancel context.CancelFunc
	mu     sync.Mutex
	chans  map[string]chan struct{}
}

func watchOOM(ctx context.Context, c *containerd.Client, ns string, log *slog.Logger) *oomWatch {
	ctx, cancel := context.WithCancel(namespaces.WithNamespace(context.WithoutCancel(ctx), ns))
	w := &oomWatch{cancel: cancel, chans: map[string]chan struct{}{}}
	go func() {
		for ctx.Err() == nil {
			envC, errC := c.Subscribe(ctx, `topic=="/tasks/oom"`, fmt.Sprintf("namespace==%s", ns))
			w.consume(ctx, envC, errC, log)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second): // containerd went away; resubscribe
			}
		}
	}()
	return w
}

func (w *oomWatch) consume(ctx context.Context, envC <-chan *events.Envelope, errC <-chan error, log *slog.Logger) {
	for {
		select {
		case env := <-envC:
			v, err := typeurl.UnmarshalAny(env.Event)
			if err != nil {
				continue
			}
			if e, ok := v.(*eventtypes.TaskOOM); ok {
				w.mu.Lock()
				if ch, ok := w.chans[e.ContainerID]; ok {
					select {
					case ch <- struct{}{}:
					default:
					}
				}
				w.mu.Unlock()
			}
		case err := <-errC:
			if ctx.Err() == nil {
				log.Warn("containerd events", "err", err)
			}
			return
		}
	}
}

func (w *oomWatch) register(id string) <-chan struct{} {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	w.chans[id] = ch
	w.mu.Unlock()
	return ch
}

func (w *oomWatch) unregister(id string) {
	w.mu.Lock()
	delete(w.chans, id)
	w.mu.Unlock()
}

func (w *oomWatch) stop() { w.cancel() }

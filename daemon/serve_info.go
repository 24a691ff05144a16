package daemon

import (
	"net/http"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// serveHealth answers whether the daemon can run sandboxes: 503 when
// containerd does not answer or the state directory cannot take a
// sandbox's files. With ?ready=1, also 503 while the pools warm up or the
// daemon drains: a Kubernetes readiness probe.
func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) error {
	ready := false
	if v := r.URL.Query().Get("ready"); v != "" {
		var err error
		if ready, err = strconv.ParseBool(v); err != nil {
			return invalid("ready=%q: want 1 or 0", truncate(v, 40))
		}
	}
	info := s.rt.Info(r.Context())
	h := api.Health{Status: "ok", Containerd: "serving", StateDir: "writable"}
	h.Draining, _ = s.drain.state()
	if !info.Serving {
		h.Status, h.Containerd = "unavailable", "not answering"
	}
	if info.StateDirErr != nil {
		h.Status, h.StateDir = "unavailable", stateDirError(info.StateDir, info.StateDirErr).Error()
	}
	if ready {
		s.readiness(r.Context(), &h)
	}
	status := http.StatusOK
	if h.Status != "ok" {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, h)
	return nil
}

func (s *Server) serveInfo(w http.ResponseWriter, r *http.Request) error {
	ri := s.rt.Info(r.Context())
	st := s.Status(r.Context())
	l := s.limits()
	writeJSON(w, http.StatusOK, api.Info{
		Version:           s.version,
		StartedAt:         s.started.UTC().Format(time.RFC3339),
		UptimeSeconds:     int64(time.Since(s.started).Seconds()),
		ContainerdAddress: ri.Address,
		ContainerdVersion: ri.Version,
		ContainerdManaged: ri.Managed,
		CgroupVersion:     ri.CgroupVersion,
		Runtimes:          append([]string{sandbox.DefaultOCIRuntime}, s.ociRuntimes...),
		Running:           st.Running,
		Queued:            st.Queued,
		Sessions:          st.Sessions,
		Limits: api.Limits{
			TimeoutMS:      l.DefaultTimeout.Milliseconds(),
			MaxTimeoutMS:   l.MaxTimeout.Milliseconds(),
			MemoryBytes:    l.DefaultMemory,
			MaxMemoryBytes: l.MaxMemory,
			CPUs:           l.CPUs,
			Pids:           l.Pids,
			TmpfsBytes:     l.TmpfsBytes,
			OutputBytes:    l.OutputBytes,
			MaxCodeBytes:   l.MaxCodeBytes,
			MaxStdinBytes:  l.MaxStdinBytes,
			MaxConcurrent:  l.MaxConcurrent,
			MaxQueued:      l.MaxQueued,
		},
	})
	return nil
}

// serveLanguages lists every defined language, by name: those that cannot
// run too, with why.
func (s *Server) serveLanguages(w http.ResponseWriter, r *http.Request) error {
	all := append(slices.Clone(s.languages()), s.missingLanguages()...)
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	resp := api.LanguagesResponse{Languages: make([]api.Language, 0, len(all))}
	lim := s.limits()
	for _, l := range all {
		why := l.missingReason()
		if l.Missing == "" {
			why = s.unavailable(r.Context(), l)
		}
		own := l.withDefaults(lim)
		resp.Languages = append(resp.Languages, api.Language{
			Name:        l.Name,
			Aliases:     l.Aliases,
			Extensions:  l.Extensions,
			Version:     l.Version,
			FileName:    l.FileName,
			Compiled:    len(l.Compile) > 0,
			Runtime:     l.class().Runtime,
			Image:       l.Image,
			Available:   why == "",
			Unavailable: why,
			Missing:     l.Missing,
			Package:     l.Package,
		})
		if own.DefaultTimeout != lim.DefaultTimeout {
			resp.Languages[len(resp.Languages)-1].TimeoutMS = own.DefaultTimeout.Milliseconds()
		}
		if own.DefaultMemory != lim.DefaultMemory {
			resp.Languages[len(resp.Languages)-1].MemoryBytes = own.DefaultMemory
		}
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

package daemon

import (
	"context"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// A cell is a sandbox that serves many one-shot executions of one caller,
// one at a time, each in a fresh jail that the sandbox's agent builds (the
// runtime's Process.Jail): the jail is a wall added inside the sandbox's,
// so that nothing of one execution is there for the next. Cells come from
// the pool like any sandbox; once used, a cell waits for its uid's next
// execution of the same class and limits, and is never handed to another
// uid. It is destroyed, never reused, when anything about its last
// execution is in doubt (see reusable).

// cellKey is what a used cell may serve: the same caller, class and
// limits.
type cellKey struct {
	uid    uint32
	class  sandboxClass
	limits sandbox.Limits
}

type cell struct {
	sb   Sandbox
	uses int
	born time.Time
	// idleSince is when it last came back; root is the host root's
	// generation it was made on (a reload may change the host's paths).
	idleSince time.Time
	root      uint64
	// memBase is the cell's memory after its first execution, the page
	// cache of its runtime included: a later execution that leaves it much
	// above that leaves something behind.
	memBase uint64
}

// cellMemorySlack is how far above its base a cell's memory may be after
// an execution and the cell still serve.
const cellMemorySlack = 32 << 20

// cellPool holds the used cells waiting for their uid's next execution.
type cellPool struct {
	mu   sync.Mutex
	idle map[cellKey][]*cell
}

// cellsFor reports whether a language's programs may run in cells: one
// that compiles needs its sandbox's /tmp after the compiler, which a jail
// does not keep; and only runc runs jails.
func (s *Server) cellsFor(l Language) bool {
	return s.limits().CellReuse > 1 && l.class().Runtime == sandbox.DefaultOCIRuntime && len(l.Compile) == 0
}

// jailable reports whether an execution can run in a cell: its language
// may, and it collects no files (they are read from /workspace after the
// program, which a jail does not keep).
func (s *Server) jailable(c checked, req *api.ExecuteRequest) bool {
	return c.class.Runtime == sandbox.DefaultOCIRuntime && s.cellsFor(c.lang) && len(req.Collect) == 0
}

// takeCell returns a used cell that may serve key, or nil.
func (s *Server) takeCell(key cellKey) *cell {
	now := time.Now()
	var stale []*cell
	defer func() {
		for _, c := range stale {
			s.destroyCell(c, "stale")
		}
	}()
	s.cells.mu.Lock()
	defer s.cells.mu.Unlock()
	for list := s.cells.idle[key]; len(list) > 0; list = s.cells.idle[key] {
		// The most recently used first: its runtime's files are warm.
		c := list[len(list)-1]
		s.cells.idle[key] = list[:len(list)-1]
		if !c.sb.Alive() || c.root != s.rootGen.Load() || now.Sub(c.born) > s.limits().CellMaxAge {
			stale = append(stale, c)
			continue
		}
		return c
	}
	return nil
}

// newCell is a fresh cell from the pool, for its first execution.
func (s *Server) newCell(sb Sandbox) *cell {
	return &cell{sb: sb, born: time.Now(), root: s.rootGen.Load()}
}

// reusable says why a cell may not serve again after an execution, or "".
// A cell in doubt is destroyed: an execution that ended at a limit or its
// timeout, a process left (the agent found one, or none was reported), a
// memory far above the cell's base, a cell worn out.
func (s *Server) reusable(c *cell, exit sandbox.ExitResult, runErr error) string {
	l := s.limits()
	switch {
	case runErr != nil:
		return "error"
	case exit.Killed:
		return "timeout"
	case exit.OOMKilled || exit.SandboxKilled != "" || exit.Usage == nil || exit.Usage.OOMKills > 0 || exit.Usage.PidsLimitHits > 0:
		return "limit"
	case !exit.Clean:
		return "leftover"
	case c.uses >= l.CellReuse:
		return "worn"
	case time.Since(c.born) > l.CellMaxAge:
		return "age"
	case !c.sb.Alive():
		return "dead"
	}
	if c.memBase == 0 {
		c.memBase = exit.Usage.MemoryUsageBytes
	} else if exit.Usage.MemoryUsageBytes > c.memBase+cellMemorySlack {
		return "memory"
	}
	return ""
}

// releaseCell ends a cell's execution: back to its uid's idle cells, or
// destroyed off the caller's path. It returns whether the cell stays.
func (s *Server) releaseCell(key cellKey, c *cell, exit sandbox.ExitResult, runErr error) bool {
	c.uses++
	why := s.reusable(c, exit, runErr)
	s.cells.mu.Lock()
	if why == "" && !s.cellsClosed.Load() {
		c.idleSince = time.Now()
		s.cells.idle[key] = append(s.cells.idle[key], c)
		s.cells.mu.Unlock()
		s.metrics.cellReuses.Inc()
		return true
	}
	s.cells.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.destroyCell(c, why)
	}()
	return false
}

func (s *Server) destroyCell(c *cell, why string) {
	if why == "" {
		why = "closing" // kept, but the daemon was closing
	}
	s.metrics.cellsDestroyed.WithLabelValues(why).Inc()
	s.destroy(context.Background(), c.sb)
}

// expireCells destroys the cells idle for longer than pool.idle, or older
// than pool.max_age; all of them when all is set (a reload that changed
// the host's paths, the end).
func (s *Server) expireCells(all bool) {
	l, now := s.limits(), time.Now()
	var gone []*cell
	s.cells.mu.Lock()
	for key, list := range s.cells.idle {
		kept := list[:0]
		for _, c := range list {
			if all || now.Sub(c.idleSince) > l.CellIdle || now.Sub(c.born) > l.CellMaxAge {
				gone = append(gone, c)
			} else {
				kept = append(kept, c)
			}
		}
		if len(kept) == 0 {
			delete(s.cells.idle, key)
		} else {
			s.cells.idle[key] = kept
		}
	}
	s.cells.mu.Unlock()
	why := "idle"
	if all {
		why = "closing"
	}
	for _, c := range gone {
		s.destroyCell(c, why)
	}
}

// idleCells is how many used cells wait for their uid's next execution.
func (s *Server) idleCells() int {
	s.cells.mu.Lock()
	defer s.cells.mu.Unlock()
	n := 0
	for _, list := range s.cells.idle {
		n += len(list)
	}
	return n
}

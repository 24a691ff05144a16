package daemon

import (
	"context"
	"slices"
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

// cellPool holds the used cells waiting for their uid's next execution,
// and counts those serving one.
type cellPool struct {
	mu   sync.Mutex
	idle map[cellKey][]*cell
	busy map[cellKey]int
}

// cellsFor reports whether a language's programs may run in cells: one
// that compiles needs its sandbox's /tmp after the compiler, which a jail
// does not keep; and only runc runs jails (Debian 12's gVisor cannot
// build one: docs/security.md, "Jails under gVisor").
func (s *Server) cellsFor(l Language) bool {
	return s.limits().CellReuse > 1 && l.class().Runtime == sandbox.DefaultOCIRuntime && len(l.Compile) == 0
}

// jailable reports whether an execution can run in a cell: its language
// may, and it collects no files (they are read from /workspace after the
// program, which a jail does not keep).
func (s *Server) jailable(c checked, req *api.ExecuteRequest) bool {
	return c.class.Runtime == sandbox.DefaultOCIRuntime && s.cellsFor(c.lang) && len(req.Collect) == 0
}

// takeCell returns a used cell that may serve key: the most recently used
// (its runtime's files are warm) whose next jail is built. When none is
// built, it returns the most recently used one, whose jail the execution
// then waits for, if wait is set or the caller holds two cells already;
// otherwise nil, and whether the caller has a cell, so that the caller
// may take a fresh cell from the pool instead (cellFor).
func (s *Server) takeCell(key cellKey, wait bool) (_ *cell, building bool) {
	now := time.Now()
	var stale []*cell
	defer func() {
		for _, c := range stale {
			s.destroyCell(c, "stale")
		}
	}()
	s.cells.mu.Lock()
	defer s.cells.mu.Unlock()
	list := s.cells.idle[key]
	kept := list[:0]
	for _, c := range list {
		if !c.sb.Alive() || c.root != s.rootGen.Load() || now.Sub(c.born) > s.limits().CellMaxAge {
			stale = append(stale, c)
		} else {
			kept = append(kept, c)
		}
	}
	list = kept
	pick := -1
	for i := len(list) - 1; i >= 0 && pick < 0; i-- {
		if list[i].sb.JailReady() {
			pick = i
		}
	}
	if pick < 0 && len(list) > 0 && (wait || len(list)+s.cells.busy[key] >= 2) {
		pick = len(list) - 1
	}
	if pick < 0 {
		if len(list) == 0 {
			delete(s.cells.idle, key)
		} else {
			s.cells.idle[key] = list
		}
		return nil, len(list) > 0
	}
	c := list[pick]
	s.cells.idle[key] = slices.Delete(list, pick, pick+1)
	s.cells.busy[key]++
	return c, false
}

// cellFor returns a cell for an execution that may run in one, or nil
// when the caller has none and the execution is to take a fresh sandbox
// (newCell). A caller whose only cell is still building its next jail,
// one execution right after another, gets a fresh cell from the pool if
// one is ready there: its two cells then take turns, each building its
// next jail while the other serves.
func (s *Server) cellFor(key cellKey) *cell {
	c, building := s.takeCell(key, false)
	if c != nil || !building {
		return c
	}
	if sb := s.takePooled(key.class, key.limits); sb != nil {
		return s.newCell(key, sb)
	}
	c, _ = s.takeCell(key, true)
	return c
}

// newCell is a fresh cell from the pool, for its first execution.
func (s *Server) newCell(key cellKey, sb Sandbox) *cell {
	s.cells.mu.Lock()
	s.cells.busy[key]++
	s.cells.mu.Unlock()
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
	if s.cells.busy[key]--; s.cells.busy[key] <= 0 {
		delete(s.cells.busy, key)
	}
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

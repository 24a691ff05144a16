package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
	"github.com/sandboxd/sandboxd/runtime/sandbox/sandboxtest"
)

// cellServer is a server whose one-shot executions run in cells that
// serve reuse executions; exit scripts how each jailed run ends.
func cellServer(t *testing.T, reuse int, exit func(p sandbox.Process) sandbox.ExitResult) (*Server, *sandboxtest.Runtime) {
	t.Helper()
	rt := &sandboxtest.Runtime{Exec: func(_ context.Context, p sandbox.Process) (sandbox.ExitResult, error) {
		res := sandbox.ExitResult{}
		if p.Jail {
			res.Clean, res.Usage = true, &sandbox.Stats{CPUNanos: 3e6, MemoryUsageBytes: 8 << 20, MemoryPeakBytes: 9 << 20}
		}
		if exit != nil {
			res = exit(p)
		}
		return res, nil
	}}
	s := newTestServer(t, rt, func(l *Limits) { l.CellReuse = reuse })
	t.Cleanup(func() { s.Close(context.Background()); s.Wait() })
	return s, rt
}

// runAs runs a one-shot execution as uid and returns its result.
func runAs(t *testing.T, s *Server, uid uint32, body string) api.ExecuteResult {
	t.Helper()
	w := as(s, uid, "POST", "/v1/execute", body)
	var res api.ExecuteResult
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &res) != nil {
		t.Fatalf("execute as %d: %d %s", uid, w.Code, w.Body)
	}
	return res
}

// A cell serves its uid's next executions, each in a jail, and never
// another uid's; the usage is the execution's own.
func TestCellsServeOneUID(t *testing.T) {
	s, rt := cellServer(t, 50, nil)
	res := runAs(t, s, 1000, `{"language":"python","code":"1"}`)
	if !rt.LastExec().Jail {
		t.Fatal("a one-shot python execution did not run in a jail")
	}
	if res.Usage.CPUMS != 3 || res.Usage.MemoryPeakBytes != 9<<20 {
		t.Errorf("usage %+v: not the execution's", res.Usage)
	}
	runAs(t, s, 1000, `{"language":"python","code":"2"}`)
	if n := len(rt.Created()); n != 1 {
		t.Fatalf("%d sandboxes for two executions of one uid", n)
	}
	if !rt.Created()[0].Jails {
		t.Error("the cell was not made a cell")
	}
	// Once each answer is out, the cell hears of it: it builds its next
	// jail then.
	cell := rt.Sandbox(rt.Created()[0].ID)
	for deadline := time.Now().Add(5 * time.Second); cell.Answers() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the cell heard of %d answers of its 2 executions", cell.Answers())
		}
	}
	runAs(t, s, 1001, `{"language":"python","code":"3"}`)
	if n := len(rt.Created()); n != 2 {
		t.Fatalf("another uid's execution ran in a cell of the first's (%d sandboxes)", n)
	}
	if rt.Deletes() != 0 {
		t.Errorf("%d cells destroyed while they could serve", rt.Deletes())
	}
	if got := gauge(t, s, "sandboxd_cells_idle"); got != 2 {
		t.Errorf("sandboxd_cells_idle = %v, want 2", got)
	}
}

// A cell in doubt is destroyed, never reused: after an OOM, a timeout, a
// process left, too much memory kept, or reuse executions.
func TestCellsDestroyedWhenInDoubt(t *testing.T) {
	for _, tc := range []struct {
		name string
		exit sandbox.ExitResult
	}{
		{"oom", sandbox.ExitResult{ExitCode: 137, Signal: int(syscall.SIGKILL), OOMKilled: true, Clean: true, Usage: &sandbox.Stats{}}},
		{"pids", sandbox.ExitResult{ExitCode: 137, SandboxKilled: "the sandbox reached its process limit", Clean: true, Usage: &sandbox.Stats{}}},
		{"leftover", sandbox.ExitResult{Usage: &sandbox.Stats{}}},
		{"no usage", sandbox.ExitResult{Clean: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, rt := cellServer(t, 50, func(sandbox.Process) sandbox.ExitResult { return tc.exit })
			runAs(t, s, 1000, `{"language":"python","code":"1"}`)
			runAs(t, s, 1000, `{"language":"python","code":"2"}`)
			if n := len(rt.Created()); n != 2 {
				t.Errorf("%d sandboxes for two executions: a cell in doubt served again", n)
			}
		})
	}
	t.Run("memory", func(t *testing.T) {
		mem := uint64(10 << 20)
		s, rt := cellServer(t, 50, func(sandbox.Process) sandbox.ExitResult {
			mem += 40 << 20
			return sandbox.ExitResult{Clean: true, Usage: &sandbox.Stats{MemoryUsageBytes: mem}}
		})
		for i := range 3 {
			runAs(t, s, 1000, fmt.Sprintf(`{"language":"python","code":"%d"}`, i))
		}
		// The first sets the base; the second is 40 MiB above it.
		if n := len(rt.Created()); n != 2 {
			t.Errorf("%d sandboxes: a cell whose memory grew served again", n)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		s, rt := cellServer(t, 50, nil)
		rt.Exec = func(ctx context.Context, p sandbox.Process) (sandbox.ExitResult, error) {
			<-ctx.Done()
			return sandbox.ExitResult{Killed: true, Clean: true, Usage: &sandbox.Stats{}}, nil
		}
		if res := runAs(t, s, 1000, `{"language":"python","code":"1","timeout_ms":50}`); !res.TimedOut {
			t.Fatalf("not timed out: %+v", res)
		}
		rt.Exec = nil
		runAs(t, s, 1000, `{"language":"python","code":"2"}`)
		if n := len(rt.Created()); n != 2 {
			t.Errorf("%d sandboxes: a timed-out cell served again", n)
		}
	})
	t.Run("worn", func(t *testing.T) {
		s, rt := cellServer(t, 3, nil)
		for i := range 7 {
			runAs(t, s, 1000, fmt.Sprintf(`{"language":"python","code":"%d"}`, i))
		}
		if n := len(rt.Created()); n != 3 {
			t.Errorf("%d sandboxes for 7 executions at 3 a cell", n)
		}
	})
}

// Executions a jail cannot hold (a compile step, files to collect, a
// runtime that cannot build jails) and reuse = 1 run as before: a sandbox
// each, not jailed.
func TestCellsOnlyForJailableExecutions(t *testing.T) {
	s, rt := cellServer(t, 50, nil)
	runAs(t, s, 1000, `{"language":"c","code":"int main(){}"}`)
	if rt.LastExec().Jail {
		t.Error("a compiled language's program ran in a jail")
	}
	runAs(t, s, 1000, `{"language":"python","code":"1","collect":["*"]}`)
	if rt.LastExec().Jail {
		t.Error("an execution that collects files ran in a jail")
	}
	// Destroyed after the answer, off the caller's path.
	for deadline := time.Now().Add(5 * time.Second); rt.Deletes() != 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if rt.Deletes() != 2 {
		t.Errorf("%d of 2 sandboxes destroyed after their execution", rt.Deletes())
	}
	s1, rt1 := cellServer(t, 1, nil)
	runAs(t, s1, 1000, `{"language":"python","code":"1"}`)
	runAs(t, s1, 1000, `{"language":"python","code":"1"}`)
	if rt1.LastExec().Jail || len(rt1.Created()) != 2 {
		t.Errorf("reuse = 1: jailed %v, %d sandboxes", rt1.LastExec().Jail, len(rt1.Created()))
	}
	// gVisor cannot build jails (security.md): a sandbox each there too,
	// whether the request or its language asks for runsc, and no cells
	// in the pools.
	rt2 := &sandboxtest.Runtime{}
	lim := DefaultLimits(2)
	lim.CellReuse, lim.PoolSize = 50, 1
	langs := append(slices.Clone(testLanguages),
		Language{LanguageSpec: LanguageSpec{Name: "gpy", FileName: "main.py", Run: []string{"/usr/bin/python3", "/sandbox/main.py"}, Runtime: "runsc"}})
	s2 := New(Config{Runtime: fakeRuntime{rt2}, Languages: langs, Limits: lim, Version: "test", OCIRuntimes: []string{"runsc"},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	s2.Start(ctx)
	t.Cleanup(func() { cancel(); s2.Close(context.Background()); s2.Wait() })
	for _, body := range []string{
		`{"language":"python","code":"1","runtime":"runsc"}`,
		`{"language":"python","code":"1","runtime":"runsc"}`,
		`{"language":"gpy","code":"1"}`,
		`{"language":"gpy","code":"1"}`,
	} {
		runAs(t, s2, 1000, body)
		if e := rt2.LastExec(); e.Jail {
			t.Errorf("%s: jailed on runsc", body)
		}
	}
	s2.pmu.Lock()
	for c := range s2.pools {
		if c.Runtime == "runsc" && c.Cells {
			t.Errorf("a pool of cells on runsc: %+v", c)
		}
	}
	s2.pmu.Unlock()
	for _, c := range rt2.Created() {
		if c.OCIRuntime == "runsc" && c.Jails {
			t.Errorf("a cell on runsc: %s (%s)", c.ID, c.Kind)
		}
	}
}

// One execution right after another: a caller whose only cell is still
// building its next jail gets a fresh cell from the pool, and its two
// cells then take turns, the one whose jail is built first; a caller that
// holds two cells already, or finds the pool empty, waits for its own.
func TestCellsTakeTurns(t *testing.T) {
	rt := &sandboxtest.Runtime{}
	lim := DefaultLimits(2)
	lim.CellReuse, lim.PoolSize = 50, 2
	s := New(Config{Runtime: fakeRuntime{rt}, Languages: testLanguages, Limits: lim, Version: "test",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Start(ctx)
	t.Cleanup(func() { s.Close(context.Background()); s.Wait() })
	pooled := func() int {
		p := s.poolOf(sandboxClass{Runtime: sandbox.DefaultOCIRuntime, Cells: true})
		if p == nil {
			return 0
		}
		return len(p.ready)
	}
	for deadline := time.Now().Add(5 * time.Second); pooled() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the cells' pool did not fill")
		}
	}
	// Each of the cells made so far says when it serves.
	var served []string
	for _, cfg := range rt.Created() {
		if cfg.Jails {
			id := cfg.ID
			rt.Sandbox(id).SetExec(func(context.Context, sandbox.Process) (sandbox.ExitResult, error) {
				served = append(served, id)
				return sandbox.ExitResult{Clean: true, Usage: &sandbox.Stats{MemoryUsageBytes: 8 << 20}}, nil
			})
		}
	}
	run := func() string {
		t.Helper()
		served = served[:0:0]
		runAs(t, s, 1000, `{"language":"python","code":"1"}`)
		if len(served) != 1 {
			t.Fatalf("served by %v: not by one of the first cells", served)
		}
		return served[0]
	}
	a := run()
	rt.Sandbox(a).SetJailReady(false)
	b := run()
	if b == a {
		t.Fatal("the caller's cell served while it built its jail, with a fresh one in the pool")
	}
	rt.Sandbox(b).SetJailReady(false)
	rt.Sandbox(a).SetJailReady(true)
	if got := run(); got != a {
		t.Errorf("served by %s: not by the caller's cell whose jail is built (%s)", got, a)
	}
	// Both building, and the caller holds two: the last used serves, no
	// third cell is taken.
	rt.Sandbox(a).SetJailReady(false)
	before := pooled()
	if got := run(); got != a {
		t.Errorf("served by %s: not by the caller's last cell (%s)", got, a)
	}
	if pooled() < before {
		t.Error("a third cell was taken from the pool for a caller that holds two")
	}
	if n := s.idleCells(); n != 2 {
		t.Errorf("%d idle cells, want the caller's two", n)
	}
}

package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// Labels put on every container sandboxd creates.
const (
	LabelManaged = "io.sandboxd.managed"
	LabelKind    = "io.sandboxd.kind"
	// LabelImage and LabelOCIRuntime record a sandbox's image and OCI
	// runtime, when not the host's and runc.
	LabelImage      = "io.sandboxd.image"
	LabelOCIRuntime = "io.sandboxd.oci-runtime"
)

// mergeEnv returns base with the variables of over added or replacing
// theirs.
func mergeEnv(base, over []string) []string {
	out := make([]string, 0, len(base)+len(over))
	seen := map[string]bool{}
	for _, kv := range over {
		k, _, _ := strings.Cut(kv, "=")
		seen[k] = true
	}
	for _, kv := range base {
		if k, _, _ := strings.Cut(kv, "="); !seen[k] {
			out = append(out, kv)
		}
	}
	return append(out, over...)
}

// Sandbox is a started container whose PID 1 waits; programs run in it as
// exec'd processes.
type Sandbox struct {
	c        *Client
	id       string
	dir      string
	ctr      containerd.Container
	task     containerd.Task
	exitC    <-chan containerd.ExitStatus
	procSpec specs.Process
	oomC     <-chan struct{}
	reusable bool
	dead     chan struct{} // closed when PID 1 is gone
	// delMu makes one Delete at a time; deleted says one succeeded, and
	// deleting ends the watch of PID 1.
	delMu    sync.Mutex
	deleted  bool
	deleting chan struct{}
	started  bool // PID 1 was started (it is watched then)
	// endAsked says sandboxd ends the sandbox (kill, Delete): PID 1's end
	// is no death to report.
	endAsked atomic.Bool
	// agent runs programs and file operations through PID 1's stdio.
	agent *agentConn
	// jail is what a cell's programs run in; nil for other sandboxes.
	// prepareID numbers the requests to build the next one ahead.
	jail      *agentproto.Jail
	prepareID atomic.Uint64
	// prepareDue is the PrepareID whose request waits for the answer of
	// the execution before it (Answered); 0: none waits.
	prepareDue atomic.Uint64
	// cells numbers the cells sent to the sandbox's interpreter.
	cells atomic.Int64
	// ahead is a cell's counters, read (and its memory peak reset) once
	// the agent said that the jail of PrepareID aheadID is built: from
	// then until that jail's program comes, the agent and the jail's init
	// only wait (their Go runtimes may still spend a few hundred
	// microseconds of CPU settling), so these are its execution's counters
	// before, read off its path (countersBefore). aheadTaken is the last
	// PrepareID an execution started on: a later read for it would reset
	// the peak under its program.
	aheadMu    sync.Mutex
	ahead      sandbox.Stats
	aheadID    uint64
	aheadTaken uint64

	mu     sync.Mutex
	final  *sandbox.Stats // the counters read just before the sandbox was killed
	cgroup cgroupFiles    // its counter files, held open until then
	// counters are their paths.
	counters counterFiles
	oomSeen  atomic.Uint64 // the OOM kill count last read
}

// ID returns the sandbox's (and its container's) id.
func (s *Sandbox) ID() string { return s.id }

// Create creates and starts a sandbox. On error nothing is left behind,
// unless its removal failed too (containerd went away): the Sandbox then
// returned with the error is what is left, for a later Delete.
func (c *Client) Create(ctx context.Context, cfg sandbox.Config) (*Sandbox, error) {
	// containerd is never interrupted in the middle of a create: a shim
	// it started for a cancelled request would outlive everything. The
	// create runs to its end, bounded, and is undone if nobody wants it.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), createTimeout)
	defer cancel()
	s, err := c.create(cctx, cfg)
	if err == nil && ctx.Err() != nil {
		if s.Delete(cctx) == nil {
			s = nil
		}
		return s, ctx.Err()
	}
	return s, err
}

// createTimeout bounds the creation of a sandbox.
const createTimeout = 60 * time.Second

func (c *Client) create(ctx context.Context, cfg sandbox.Config) (left *Sandbox, retErr error) {
	ctx = c.ctx(ctx)
	c.rootMu.RLock()
	rootPath, rootMounts := c.root, c.rootMounts
	c.rootMu.RUnlock()
	dir := filepath.Join(filesDir(c.cfg.StateDir), cfg.ID)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", cfg.ID, err)
	}
	// The sandbox's user reads it, whatever the daemon's umask.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("sandbox %s: %w", cfg.ID, err)
	}
	s := &Sandbox{c: c, id: cfg.ID, dir: dir, reusable: cfg.Reusable, deleting: make(chan struct{})}
	defer func() {
		if retErr != nil && s.Delete(ctx) != nil {
			left = s
		}
	}()
	labels := map[string]string{}
	if cfg.Session != nil {
		labels = recordLabels(*cfg.Session)
	}
	labels[LabelManaged], labels[LabelKind] = "true", cfg.Kind
	spec := SpecConfig{
		ID:         cfg.ID,
		RootPath:   rootPath,
		RootMounts: rootMounts,
		FilesDir:   dir,
		InitArgs:   c.cfg.InitArgs,
		UID:        c.cfg.UID,
		GID:        c.cfg.GID,
		Env:        cfg.Env,
		Limits:     cfg.Limits,
		SwapLimit:  c.swapLimit,
		CgroupNS:   c.cgroupNS,
		Jails:      cfg.Jails,
	}
	rtOpts, err := c.runtimeOptions(cfg.OCIRuntime)
	if err != nil {
		return nil, err
	}
	spec.AppKernel = rtOpts != nil && isGVisor(c.cfg.OCIRuntimes[cfg.OCIRuntime].Binary)
	var rootOpt []containerd.NewContainerOpts
	if cfg.Image != "" {
		base, imageEnv, err := c.imageRoot(ctx, cfg.Image)
		if err != nil {
			return nil, err
		}
		// The shim mounts the view at the bundle's rootfs.
		spec.RootPath, spec.RootMounts = "rootfs", nil
		// The image's PATH finds its tools; the rest of ours wins.
		env := cfg.Env
		if slices.ContainsFunc(imageEnv, func(kv string) bool { return strings.HasPrefix(kv, "PATH=") }) {
			env = slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "PATH=") })
		}
		spec.Env = mergeEnv(imageEnv, env)
		labels[LabelImage] = cfg.Image
		rootOpt = append(rootOpt, withView(c.snapshotter, cfg.ID, base, map[string]string{LabelManaged: "true"}))
	}
	if cfg.OCIRuntime != "" {
		labels[LabelOCIRuntime] = cfg.OCIRuntime
	}
	var runtimeOpts any
	if rtOpts != nil {
		runtimeOpts = rtOpts
	}
	ctr, err := c.client.NewContainer(ctx, cfg.ID, append(rootOpt,
		containerd.WithNewSpec(SpecOpts(spec)...),
		containerd.WithRuntime(c.cfg.Runtime, runtimeOpts),
		containerd.WithContainerLabels(labels),
	)...)
	if err != nil {
		return nil, fmt.Errorf("create container %s: %w", cfg.ID, err)
	}
	s.ctr = ctr
	s.oomC = c.oom.register(cfg.ID)
	agent, stdin, stdout, stderr := newAgentConn(c.log, cfg.ID)
	task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(stdin, stdout, stderr), cio.WithFIFODir(fifoDir(c.cfg.StateDir))))
	if err != nil {
		return nil, fmt.Errorf("create task %s: %w", cfg.ID, err)
	}
	s.task, s.agent = task, agent
	if err := s.watch(ctx); err != nil {
		return nil, err
	}
	if err := task.Start(ctx); err != nil {
		return nil, fmt.Errorf("start task %s: %w", cfg.ID, err)
	}
	s.started = true
	sp, err := ctr.Spec(ctx)
	if err != nil {
		return nil, fmt.Errorf("spec %s: %w", cfg.ID, err)
	}
	s.procSpec = programSpec(sp.Process)
	s.jail = jailOf(sp, cfg.Limits.TmpfsBytes)
	if s.jail != nil {
		built := s.jailBuilt
		s.agent.built.Store(&built)
		s.connectAgent(ctx)
	}
	s.prepareJail()
	return s, nil
}

// programSpec is what a sandbox's programs get of its PID 1's process
// spec: all of it, but what is said to the agent alone.
func programSpec(p *specs.Process) specs.Process {
	ps := *p
	ps.Env = slices.DeleteFunc(slices.Clone(p.Env), func(kv string) bool { return strings.HasPrefix(kv, agentproto.AgentEnvPrefix) })
	return ps
}

// connectAgent makes a cell's agent socket its channel, rather than its
// stdio through containerd's shim; where that cannot be, stdio stays.
func (s *Sandbox) connectAgent(ctx context.Context) {
	c, err := dialAgent(ctx, s.task.Pid())
	if err != nil {
		s.c.noAgentSocket.Do(func() {
			s.c.log.Info("cells' agents are driven through stdio", "reason", err)
		})
		return
	}
	s.agent.useSocket(c)
}

// watch notes when the sandbox's PID 1 is gone.
func (s *Sandbox) watch(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	exitC, err := s.task.Wait(ctx)
	if err != nil {
		return fmt.Errorf("wait task %s: %w", s.id, err)
	}
	s.dead = make(chan struct{})
	go func() {
		defer close(s.dead)
		for {
			st := <-exitC
			if st.Error() == nil {
				s.logDeath(st.ExitCode())
				return
			}
			// The wait failed, not the task: containerd restarted or the
			// connection dropped, and the shim still runs the sandbox. A
			// lost connection is no exit: wait again once containerd is
			// back, unless the task is gone by then.
			if exitC = s.rewait(ctx, st.Error()); exitC == nil {
				return
			}
		}
	}()
	return nil
}

// logDeath logs the end of a sandbox's PID 1 that sandboxd did not ask
// for: its agent died, killed (as gVisor ends a sandbox out of memory) or
// failing, in which case it said why on its stderr (a Go runtime's fatal
// error), and that is a warning.
func (s *Sandbox) logDeath(exitCode uint32) {
	if s.endAsked.Load() {
		return
	}
	level := slog.LevelInfo
	stderr := ""
	if s.agent != nil {
		stderr = s.agent.stderr.head(2 << 10)
	}
	if stderr != "" {
		level = slog.LevelWarn
	}
	s.c.log.Log(context.Background(), level, "a sandbox died", "container_id", s.id, "exit_code", exitCode, "agent_stderr", stderr)
}

// rewait waits for containerd to answer again, then for the task anew. It
// returns nil when the task has stopped or is gone, or the sandbox is
// being deleted.
func (s *Sandbox) rewait(ctx context.Context, cause error) <-chan containerd.ExitStatus {
	s.c.log.Warn("lost the wait on a sandbox; waiting for containerd", "container_id", s.id, "err", cause)
	delay := 100 * time.Millisecond
	for {
		select {
		case <-s.deleting:
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
		st, err := s.task.Status(ctx)
		switch {
		case errdefs.IsNotFound(err):
			return nil
		case err != nil:
			continue // containerd is still away
		case st.Status == containerd.Stopped:
			return nil
		}
		exitC, err := s.task.Wait(ctx)
		if err != nil {
			continue
		}
		s.c.log.Info("waiting on the sandbox again", "container_id", s.id, "status", st.Status)
		return exitC
	}
}

// Alive reports whether the sandbox's PID 1 still runs.
func (s *Sandbox) Alive() bool {
	select {
	case <-s.dead:
		return false
	default:
		return true
	}
}

// Adopted is a session's sandbox that an earlier daemon created, with its
// record; Err says why the record could not be read back.
type Adopted struct {
	Sandbox *Sandbox
	Record  sandbox.SessionRecord
	Err     error
}

// AdoptSessions returns the sessions' sandboxes that an earlier daemon
// created, alive or not, so that they outlive that daemon. The agent of
// each live one is attached to again, through the FIFOs its task kept, and
// synced, so that programs run in it as in a sandbox of this daemon's.
func (c *Client) AdoptSessions(ctx context.Context) ([]Adopted, error) {
	ctx = c.ctx(ctx)
	ctrs, err := c.client.Containers(ctx, fmt.Sprintf("labels.%q==true,labels.%q==%s", LabelManaged, LabelKind, sandbox.KindSession))
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]Adopted, len(ctrs))
	var wg sync.WaitGroup
	for i, ctr := range ctrs {
		out[i].Sandbox = &Sandbox{c: c, id: ctr.ID(), dir: filepath.Join(filesDir(c.cfg.StateDir), ctr.ID()), ctr: ctr, reusable: true, deleting: make(chan struct{})}
		labels, err := ctr.Labels(ctx)
		if err == nil {
			out[i].Record, err = recordFromLabels(labels)
		}
		if err != nil {
			out[i].Err = fmt.Errorf("session %s: labels: %w", ctr.ID(), err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := out[i].Sandbox.attach(ctx); err != nil {
				c.log.Warn("adopted sandbox: its agent does not answer", "container_id", ctr.ID(), "err", err)
			}
		}()
	}
	wg.Wait()
	return out, nil
}

// attach takes over a sandbox of an earlier daemon: its OOM events, its
// spec, and, when its task runs, the wait on PID 1 and the agent's stdio.
// A sandbox whose task is gone is returned dead.
func (s *Sandbox) attach(ctx context.Context) error {
	s.oomC = s.c.oom.register(s.id)
	sp, err := s.ctr.Spec(ctx)
	if err != nil {
		s.dead = make(chan struct{})
		close(s.dead)
		return fmt.Errorf("spec %s: %w", s.id, err)
	}
	s.procSpec = programSpec(sp.Process)
	agent, stdin, stdout, stderr := newAgentConn(s.c.log, s.id)
	task, err := s.ctr.Task(ctx, cio.NewAttach(cio.WithStreams(stdin, stdout, stderr)))
	if err == nil {
		st, serr := task.Status(ctx)
		if serr == nil && st.Status == containerd.Running {
			s.task, s.agent, s.started = task, agent, true
			if err := s.watch(ctx); err != nil {
				return err
			}
			return agent.sync(ctx, s.dead)
		}
		// A task that stopped: its IO goes with it when it is deleted.
		s.task, s.agent = task, agent
	} else {
		agent.close()
	}
	s.dead = make(chan struct{})
	close(s.dead)
	return nil
}

// kill ends the sandbox: killing PID 1 ends its PID namespace, and the
// kernel kills every process in it, double-forked daemons too. The cgroup
// counters are kept first, as they go with the sandbox.
func (s *Sandbox) kill(ctx context.Context) {
	s.endAsked.Store(true)
	s.keepStats(ctx)
	if err := s.task.Kill(ctx, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
		s.c.log.Warn("kill sandbox", "container_id", s.id, "err", err)
	}
}

// exit asks the agent to end the sandbox and waits a moment for it: PID 1
// gone, the kernel ends everything else in the sandbox, and the task is
// deleted without the runtime's kill, a process start fewer. A sandbox
// whose agent does not comply is killed from outside.
func (s *Sandbox) exit(ctx context.Context) bool {
	if s.agent == nil || !s.started {
		return false
	}
	if s.Alive() {
		s.keepStats(ctx)
		// Apart: a write to an agent that reads nothing more would block;
		// Delete closes the pipe once done, which ends it.
		go s.agent.send(agentproto.Request{Exit: true})
	}
	select {
	case <-s.dead:
		return true
	case <-time.After(agentExitWait):
		return false
	}
}

// agentExitWait bounds the wait for an agent to end its sandbox.
const agentExitWait = 2 * time.Second

// Delete kills everything in the sandbox and removes its container, task
// and files. It runs on a context of its own, so that a cancelled request
// still cleans up. It is safe to call more than once, and a Delete that
// failed (containerd away) may be called again to finish.
func (s *Sandbox) Delete(ctx context.Context) error {
	s.delMu.Lock()
	defer s.delMu.Unlock()
	if s.deleted {
		return nil
	}
	s.endAsked.Store(true)
	dctx, cancel := context.WithTimeout(s.c.ctx(context.WithoutCancel(ctx)), cleanupTimeout)
	defer cancel()
	var err error
	s.mu.Lock()
	s.cgroup.close() // before the runtime removes the cgroup
	s.mu.Unlock()
	if s.ctr != nil {
		kill := !s.exit(dctx)
		// Nobody reads the agent any more: its pipes are closed first, so
		// that the task's IO ends and its FIFOs go with the task.
		if s.agent != nil {
			s.agent.close()
		}
		err = deleteContainer(dctx, s.c.client, s.ctr, s.task, kill)
	} else if s.agent != nil {
		s.agent.close()
	}
	if rmErr := os.RemoveAll(s.dir); rmErr != nil {
		err = errors.Join(err, rmErr)
	}
	if err != nil {
		return err
	}
	s.deleted = true
	close(s.deleting)
	s.c.oom.unregister(s.id)
	return nil
}

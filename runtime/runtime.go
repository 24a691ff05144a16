// Package runtime runs sandboxes on containerd: it builds their OCI specs by
// hand, creates and starts their containers, runs processes in them and
// destroys them.
//
// Every object it creates lives in its own containerd namespace and carries
// the label LabelManaged, so that Cleanup can find what a crashed daemon
// left behind.
package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3"
	cgroup1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroup2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	eventtypes "github.com/containerd/containerd/api/events"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
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

// cleanupTimeout bounds each teardown, which runs on a context of its own
// because the caller's may already be cancelled.
const cleanupTimeout = 15 * time.Second

// ioDrainTimeout bounds the wait for a process's output after it exited.
// Once the sandbox's PID 1 is gone every writer is too, so this is only
// reached when something is badly wrong.
const ioDrainTimeout = 10 * time.Second

// Config configures a Client. All fields are required unless noted.
type Config struct {
	Address   string // containerd's socket
	Namespace string // containerd namespace of everything we create
	StateDir  string // per-sandbox files and FIFOs live below it
	Root      RootFS
	InitArgs  []string // PID 1 of every sandbox: waits, never exits by itself
	UID, GID  uint32   // the sandbox user
	Logger    *slog.Logger
	// Runtime is the containerd runtime (shim) name; optional.
	Runtime string
	// Init is the host path of sandboxd-init, put into image roots.
	Init string
	// Snapshotter unpacks images; default overlayfs.
	Snapshotter string
	// OCIRuntimes are the OCI runtimes a sandbox may name besides runc,
	// the default, such as runsc (gVisor).
	OCIRuntimes map[string]OCIRuntime
}

// OCIRuntime is an OCI runtime binary that containerd's runc shim drives
// in place of runc.
type OCIRuntime struct {
	// Binary is its path, or a name looked up in PATH.
	Binary string
	// Flags are global flags it is run with, such as --platform=ptrace.
	Flags []string
}

// Client creates sandboxes on containerd.
type Client struct {
	cfg        Config
	client     *containerd.Client
	log        *slog.Logger
	rootMu     sync.RWMutex // guards root and rootMounts, replaced by ReplaceRoot
	root       string
	rootMounts []specs.Mount
	cgroupV2   bool
	swapLimit  bool
	cgroupNS   bool
	oom        *oomWatch
	execSeq    atomic.Uint64
	// snapshotter unpacks images; initHash names the bases made with
	// this agent; baseMu makes one base at a time and guards bases, the
	// bases ready by image digest.
	snapshotter string
	initHash    string
	baseMu      sync.Mutex
	bases       map[string]imageBase
	// ociRuntimes are the runc shim's options for each OCI runtime but runc.
	ociRuntimes map[string]*options.Options
}

// New connects to containerd and prepares the root filesystem.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Runtime == "" {
		cfg.Runtime = "io.containerd.runc.v2"
	}
	c, err := containerd.New(cfg.Address, containerd.WithDefaultNamespace(cfg.Namespace), containerd.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: %w", cfg.Address, err)
	}
	root, mounts, err := cfg.Root.Prepare()
	if err != nil {
		c.Close()
		return nil, err
	}
	for _, d := range []string{filesDir(cfg.StateDir), fifoDir(cfg.StateDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			c.Close()
			return nil, err
		}
	}
	if cfg.Snapshotter == "" {
		cfg.Snapshotter = "overlayfs"
	}
	initHash := strings.Repeat("0", 64)
	if cfg.Init != "" {
		if initHash, err = fileHash(cfg.Init); err != nil {
			c.Close()
			return nil, fmt.Errorf("init: %w", err)
		}
	}
	ociRuntimes, err := prepareOCIRuntimes(cfg.StateDir, cfg.OCIRuntimes)
	if err != nil {
		c.Close()
		return nil, err
	}
	mode := cgroups.Mode()
	rc := &Client{
		snapshotter: cfg.Snapshotter,
		initHash:    initHash,
		bases:       map[string]imageBase{},
		ociRuntimes: ociRuntimes,
		cfg:         cfg,
		client:      c,
		log:         cfg.Logger,
		root:        root,
		rootMounts:  mounts,
		cgroupV2:    mode == cgroups.Unified,
		cgroupNS:    hasCgroupNS(),
	}
	_, memswErr := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
	rc.swapLimit = rc.cgroupV2 || memswErr == nil
	rc.oom = watchOOM(ctx, c, cfg.Namespace, cfg.Logger)
	return rc, nil
}

// ReplaceRoot prepares another root source for the host's sandboxes made
// from now on, such as one with the host paths of languages added by a
// reload. Sandboxes already made keep theirs.
func (c *Client) ReplaceRoot(root RootFS) error {
	path, mounts, err := root.Prepare()
	if err != nil {
		return err
	}
	c.rootMu.Lock()
	c.root, c.rootMounts = path, mounts
	c.rootMu.Unlock()
	return nil
}

// Close stops watching containerd and closes the connection.
func (c *Client) Close() error {
	c.oom.stop()
	return c.client.Close()
}

// CgroupVersion is 2 on a unified hierarchy, 1 otherwise.
func (c *Client) CgroupVersion() int {
	if c.cgroupV2 {
		return 2
	}
	return 1
}

// Version returns containerd's version.
func (c *Client) Version(ctx context.Context) (string, error) {
	v, err := c.client.Version(c.ctx(ctx))
	if err != nil {
		return "", err
	}
	return v.Version, nil
}

// Serving reports whether containerd answers.
func (c *Client) Serving(ctx context.Context) bool {
	ok, err := c.client.IsServing(c.ctx(ctx))
	return err == nil && ok
}

func (c *Client) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, c.cfg.Namespace)
}

// StateDirWritable returns nil when sandboxes can be made in the state
// directory, or why not (full, read-only), as placing their files would
// find: a byte is written, since on some filesystems (tmpfs) a full one
// still makes directories and empty files.
func (c *Client) StateDirWritable() error {
	f, err := os.CreateTemp(filesDir(c.cfg.StateDir), ".probe-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write([]byte{0})
	return errors.Join(err, f.Close())
}

// StateDir is where sandboxes' files live.
func (c *Client) StateDir() string { return c.cfg.StateDir }

func filesDir(state string) string { return filepath.Join(state, "sandboxes") }
func fifoDir(state string) string  { return filepath.Join(state, "fifo") }

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
	// FIFOs are per process, and no process of ours runs now.
	entries, _ = os.ReadDir(fifoDir(c.cfg.StateDir))
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(fifoDir(c.cfg.StateDir), e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	return deleted, errors.Join(errs...)
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

// SandboxConfig describes one sandbox.
type SandboxConfig struct {
	ID     string
	Kind   string            // label value, such as "execute"
	Labels map[string]string // more labels, such as what a session must remember
	Env    []string          // the base environment of its processes
	Limits Limits
	// Image, when set, is the image whose root the sandbox has, as a
	// read-only view, instead of the host's; its environment comes first.
	Image string
	// OCIRuntime is the OCI runtime: runc when empty, or one of
	// Config.OCIRuntimes, such as runsc.
	OCIRuntime string
	// Reusable sandboxes run many executions: at the end of each, its
	// processes are killed, not the sandbox.
	Reusable bool
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
	// agent runs programs through PID 1's stdio; nil for sandboxes adopted
	// from an earlier daemon, which run them by runc exec.
	agent *agentConn

	mu      sync.Mutex
	final   *Stats        // the counters read just before the sandbox was killed
	oomSeen atomic.Uint64 // the OOM kill count last read
}

// ID returns the sandbox's (and its container's) id.
func (s *Sandbox) ID() string { return s.id }

// Create creates and starts a sandbox. On error nothing is left behind,
// unless its removal failed too (containerd went away): the Sandbox then
// returned with the error is what is left, for a later Delete.
func (c *Client) Create(ctx context.Context, cfg SandboxConfig) (*Sandbox, error) {
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

func (c *Client) create(ctx context.Context, cfg SandboxConfig) (left *Sandbox, retErr error) {
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
	for k, v := range cfg.Labels {
		labels[k] = v
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
	s.procSpec = *sp.Process
	return s, nil
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

// Labels returns the sandbox's labels.
func (s *Sandbox) Labels(ctx context.Context) (map[string]string, error) {
	return s.ctr.Labels(s.c.ctx(ctx))
}

// SetLabels sets labels of the sandbox, such as what a session must
// remember across daemon restarts.
func (s *Sandbox) SetLabels(ctx context.Context, labels map[string]string) error {
	_, err := s.ctr.SetLabels(s.c.ctx(ctx), labels)
	return err
}

// Adopt returns the sandboxes of a kind that an earlier daemon created,
// alive or not, so that they outlive that daemon.
func (c *Client) Adopt(ctx context.Context, kind string) ([]*Sandbox, error) {
	ctx = c.ctx(ctx)
	ctrs, err := c.client.Containers(ctx, fmt.Sprintf("labels.%q==true,labels.%q==%s", LabelManaged, LabelKind, kind))
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	var out []*Sandbox
	for _, ctr := range ctrs {
		s := &Sandbox{c: c, id: ctr.ID(), dir: filepath.Join(filesDir(c.cfg.StateDir), ctr.ID()), ctr: ctr, reusable: true, deleting: make(chan struct{})}
		s.oomC = c.oom.register(s.id)
		sp, err := ctr.Spec(ctx)
		if err != nil {
			return nil, fmt.Errorf("spec %s: %w", s.id, err)
		}
		s.procSpec = *sp.Process
		task, err := ctr.Task(ctx, nil)
		if err == nil {
			st, serr := task.Status(ctx)
			if serr == nil && st.Status == containerd.Running {
				s.task = task
				if err := s.watch(ctx); err != nil {
					return nil, err
				}
			}
		}
		if s.task == nil {
			s.dead = make(chan struct{})
			close(s.dead)
		}
		out = append(out, s)
	}
	return out, nil
}

// writeFiles writes files, whose names are plain file names, into dir.
func writeFiles(dir string, files map[string][]byte) error {
	for name, content := range files {
		if name != filepath.Base(name) || name == "." || name == ".." {
			return fmt.Errorf("sandbox file %q: %w", name, errdefs.ErrInvalidArgument)
		}
		if err := writeFileAtomic(filepath.Join(dir, name), content, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Process is one program to run in a sandbox.
type Process struct {
	Args   []string
	Env    []string // added to the sandbox's base environment
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Last says the execution ends with this process: what it leaves
	// running is killed when it exits, rather than holding its output open.
	// In a reusable sandbox that is every process but PID 1; otherwise the
	// whole sandbox.
	Last bool
	// Files are placed read-only in SandboxDir/FilesDir for the time of the
	// process; FilesDir is a plain name.
	Files    map[string][]byte
	FilesDir string
	// WorkspaceFiles are written into /workspace before the process runs.
	WorkspaceFiles []WorkspaceFile
	// StdinLive says Stdin is fed while the process runs: it is forwarded
	// as it comes rather than read whole first.
	StdinLive bool
}

// ExitResult is how a process ended.
type ExitResult struct {
	ExitCode  int
	Signal    int  // the signal that killed it, or 0
	Killed    bool // killed because ctx ended
	OOMKilled bool // the kernel's OOM killer struck in the sandbox
	// SandboxKilled, when set, says why the kernel ended the whole sandbox
	// during the process.
	SandboxKilled string
}

// Exec runs p in the sandbox and waits for it and for all of its output.
// When ctx ends first, everything in the sandbox is killed (the sandbox is
// then spent) and the result says Killed; the output written until then is
// kept.
func (s *Sandbox) Exec(ctx context.Context, p Process) (ExitResult, error) {
	cctx := s.c.ctx(context.WithoutCancel(ctx))
	if !s.Alive() {
		return ExitResult{}, fmt.Errorf("sandbox %s: its PID 1 is gone: %w", s.id, errdefs.ErrFailedPrecondition)
	}
	if len(p.Files) > 0 {
		if p.FilesDir == "" || p.FilesDir != filepath.Base(p.FilesDir) || p.FilesDir == ".." {
			return ExitResult{}, fmt.Errorf("files dir %q: %w", p.FilesDir, errdefs.ErrInvalidArgument)
		}
		dir := filepath.Join(s.dir, p.FilesDir)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return ExitResult{}, fmt.Errorf("sandbox %s: %w", s.id, err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			return ExitResult{}, fmt.Errorf("sandbox %s: %w", s.id, err)
		}
		defer os.RemoveAll(dir)
		if err := writeFiles(dir, p.Files); err != nil {
			return ExitResult{}, fmt.Errorf("sandbox %s: %w", s.id, err)
		}
	}
	// OOM kills are counted for the sandbox's life: only those after the
	// last count read are this process's, and an old event is not.
	oomBefore := s.oomSeen.Load()
	select {
	case <-s.oomC:
	default:
	}
	if s.agent == nil {
		for _, f := range p.WorkspaceFiles {
			code, err := s.Helper(ctx, bytes.NewReader(f.Data), io.Discard, "put", f.Path, strconv.FormatUint(uint64(f.Mode), 8))
			if err == nil && code != 0 {
				err = fmt.Errorf("placing %s in /workspace: helper exited %d: %w", f.Path, code, errdefs.ErrInvalidArgument)
			}
			if err != nil {
				return ExitResult{}, err
			}
		}
	}
	if s.agent != nil {
		res, err := s.agentExec(ctx, p)
		if err == nil && !res.Killed && res.Signal == int(syscall.SIGKILL) {
			res.OOMKilled = s.oomKilled(cctx, oomBefore)
		}
		if errors.Is(err, errAgentGone) {
			if killed, ok := s.endedAtLimit(cctx, oomBefore); ok {
				return killed, nil
			}
		}
		return res, err
	}
	execID := "p" + strconv.FormatUint(s.c.execSeq.Add(1), 10)
	ps := s.procSpec
	ps.Args = p.Args
	ps.Env = append(append([]string(nil), ps.Env...), p.Env...)
	stdin := &eofNotifier{r: p.Stdin, eof: make(chan struct{})}
	if stdin.r == nil {
		stdin.r = eofReader{}
	}
	proc, err := s.task.Exec(cctx, execID, &ps, cio.NewCreator(
		cio.WithStreams(stdin, p.Stdout, p.Stderr),
		cio.WithFIFODir(fifoDir(s.c.cfg.StateDir)),
	))
	if err != nil {
		return ExitResult{}, fmt.Errorf("exec in %s: %w", s.id, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(cctx, cleanupTimeout)
		defer cancel()
		if _, err := proc.Delete(dctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			s.c.log.Warn("delete process", "container_id", s.id, "err", err)
		}
	}()
	statusC, err := proc.Wait(cctx)
	if err != nil {
		return ExitResult{}, fmt.Errorf("wait in %s: %w", s.id, err)
	}
	if err := proc.Start(cctx); err != nil {
		return ExitResult{}, fmt.Errorf("start in %s: %w", s.id, err)
	}
	exited := make(chan struct{})
	defer close(exited)
	go func() {
		// The shim holds the stdin FIFO open until told: tell it once all
		// the input is written, so that the program sees EOF.
		select {
		case <-stdin.eof:
			if err := proc.CloseIO(cctx, containerd.WithStdinCloser); err != nil && !errdefs.IsNotFound(err) {
				s.c.log.Warn("close stdin", "container_id", s.id, "err", err)
			}
		case <-exited:
		}
	}()
	var res ExitResult
	var status containerd.ExitStatus
	// ended says the sandbox ended with the process: runc exec'd
	// processes die with PID 1, and runsc exec exits 128 once the gVisor
	// sandbox it waited on is gone.
	ended := false
	select {
	case status = <-statusC:
		ended = status.ExitCode() != 0 && !s.running(cctx)
		if p.Last && !ended {
			s.end(cctx)
		}
	case <-ctx.Done():
		res.Killed = true
		s.end(cctx)
		select {
		case status = <-statusC:
		case <-time.After(cleanupTimeout):
			return res, fmt.Errorf("process in %s outlived its sandbox: %w", s.id, errdefs.ErrUnknown)
		}
	}
	// Drain the output before the process is deleted: deleting closes the
	// FIFOs and would drop what is still in flight.
	drained := make(chan struct{})
	go func() { proc.IO().Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(ioDrainTimeout):
		s.c.log.Warn("output not drained in time", "container_id", s.id)
	}
	if ended {
		if killed, ok := s.endedAtLimit(cctx, oomBefore); ok {
			return killed, nil
		}
		return res, fmt.Errorf("sandbox %s: its PID 1 ended during the process: %w", s.id, errdefs.ErrFailedPrecondition)
	}
	res.ExitCode = int(status.ExitCode())
	// runc tells a signal only by the shell convention of 128+signal.
	if res.ExitCode > 128 && res.ExitCode <= 128+64 {
		res.Signal = res.ExitCode - 128
	}
	if !res.Killed && res.Signal == int(syscall.SIGKILL) {
		res.OOMKilled = s.oomKilled(cctx, oomBefore)
	}
	return res, nil
}

// endedAtLimit tells whether the kernel ended the whole sandbox at one of
// its limits, as it does under gVisor, whose own kernel holds the memory
// and the tasks of the programs; if so, that is how the execution ended.
func (s *Sandbox) endedAtLimit(ctx context.Context, oomBefore uint64) (ExitResult, bool) {
	killed := ExitResult{ExitCode: 128 + int(syscall.SIGKILL), Signal: int(syscall.SIGKILL)}
	switch {
	case s.oomKilled(ctx, oomBefore):
		killed.OOMKilled = true
	case pidsLimitHit(s.c.cgroupV2, CgroupsPath(s.c.cfg.Namespace, s.id)):
		killed.SandboxKilled = "the sandbox reached its process limit"
	default:
		return ExitResult{}, false
	}
	return killed, true
}

// running reports whether the sandbox's PID 1 runs, as containerd knows it
// now (its exit event may come later); when containerd does not answer it
// is taken to run.
func (s *Sandbox) running(ctx context.Context) bool {
	if !s.Alive() {
		return false
	}
	st, err := s.task.Status(ctx)
	return err != nil || st.Status == containerd.Running
}

// end ends an execution: in a reusable sandbox it kills every process but
// PID 1, otherwise the sandbox.
func (s *Sandbox) end(ctx context.Context) {
	if !s.reusable {
		s.kill(ctx)
		return
	}
	if err := s.reap(ctx); err != nil {
		s.c.log.Warn("reap: killing the sandbox instead", "container_id", s.id, "err", err)
		s.kill(ctx)
	}
}

// reap kills every process of the sandbox but PID 1, from inside: the
// helper's kill(-1) reaches exactly the sandbox user's processes of its
// PID namespace, atomically against fork.
func (s *Sandbox) reap(ctx context.Context) error {
	if s.agent != nil {
		return s.agent.send(agentproto.Request{Kill: true})
	}
	res, err := s.Helper(ctx, nil, io.Discard, "reap")
	if err == nil && res != 0 {
		err = fmt.Errorf("reap exited %d", res)
	}
	return err
}

// Helper runs sandboxd-init with args in the sandbox, as the sandbox user,
// and returns its exit code.
func (s *Sandbox) Helper(ctx context.Context, stdin io.Reader, stdout io.Writer, args ...string) (int, error) {
	cctx := s.c.ctx(context.WithoutCancel(ctx))
	ps := s.procSpec
	ps.Args = append([]string{InitPath}, args...)
	if stdin == nil {
		stdin = eofReader{}
	}
	in := &eofNotifier{r: stdin, eof: make(chan struct{})}
	var stderr bytes.Buffer
	execID := "h" + strconv.FormatUint(s.c.execSeq.Add(1), 10)
	proc, err := s.task.Exec(cctx, execID, &ps, cio.NewCreator(cio.WithStreams(in, stdout, &stderr), cio.WithFIFODir(fifoDir(s.c.cfg.StateDir))))
	if err != nil {
		return 0, fmt.Errorf("helper in %s: %w", s.id, err)
	}
	defer proc.Delete(cctx, containerd.WithProcessKill)
	statusC, err := proc.Wait(cctx)
	if err != nil {
		return 0, err
	}
	if err := proc.Start(cctx); err != nil {
		return 0, err
	}
	exited := make(chan struct{})
	defer close(exited)
	go func() {
		select {
		case <-in.eof:
			proc.CloseIO(cctx, containerd.WithStdinCloser)
		case <-exited:
		}
	}()
	var status containerd.ExitStatus
	select {
	case status = <-statusC:
	case <-ctx.Done():
		proc.Kill(cctx, syscall.SIGKILL)
		status = <-statusC
	}
	proc.IO().Wait()
	if code := int(status.ExitCode()); code != 0 && code < 3 {
		return code, fmt.Errorf("helper %s: %s", args[0], bytes.TrimSpace(stderr.Bytes()))
	}
	return int(status.ExitCode()), ctx.Err()
}

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

// Stats is what a sandbox's cgroup has counted so far.
type Stats struct {
	CPUNanos         uint64
	MemoryUsageBytes uint64
	MemoryPeakBytes  uint64
	OOMKills         uint64
}

// Stats reads the sandbox's cgroup counters; once the sandbox is killed,
// they are those read just before.
func (s *Sandbox) Stats(ctx context.Context) (Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.final != nil {
		return *s.final, nil
	}
	if s.task == nil {
		return Stats{}, fmt.Errorf("sandbox %s has no task: %w", s.id, errdefs.ErrFailedPrecondition)
	}
	return s.readStats(ctx)
}

func (s *Sandbox) readStats(ctx context.Context) (Stats, error) {
	if st, err := readCgroupStats(s.c.cgroupV2, CgroupsPath(s.c.cfg.Namespace, s.id)); err == nil {
		s.oomSeen.Store(st.OOMKills)
		return st, nil
	}
	m, err := s.task.Metrics(s.c.ctx(ctx))
	if err != nil {
		return Stats{}, err
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return Stats{}, err
	}
	var st Stats
	switch m := v.(type) {
	case *cgroup1stats.Metrics:
		st.CPUNanos = m.GetCPU().GetUsage().GetTotal()
		st.MemoryPeakBytes = m.GetMemory().GetUsage().GetMax()
		st.MemoryUsageBytes = m.GetMemory().GetUsage().GetUsage()
		st.OOMKills = m.GetMemoryOomControl().GetOomKill()
	case *cgroup2stats.Metrics:
		st.CPUNanos = m.GetCPU().GetUsageUsec() * 1000
		st.MemoryPeakBytes = m.GetMemory().GetMaxUsage()
		st.MemoryUsageBytes = m.GetMemory().GetUsage()
		st.OOMKills = m.GetMemoryEvents().GetOomKill()
	default:
		return Stats{}, fmt.Errorf("metrics of type %T: %w", v, errdefs.ErrNotImplemented)
	}
	s.oomSeen.Store(st.OOMKills)
	return st, nil
}

// kill ends the sandbox: killing PID 1 ends its PID namespace, and the
// kernel kills every process in it, double-forked daemons too. The cgroup
// counters are kept first, as they go with the sandbox.
func (s *Sandbox) kill(ctx context.Context) {
	s.keepStats(ctx)
	if err := s.task.Kill(ctx, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
		s.c.log.Warn("kill sandbox", "container_id", s.id, "err", err)
	}
}

// keepStats reads the counters one last time, before the sandbox ends.
func (s *Sandbox) keepStats(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.final == nil {
		st, err := s.readStats(ctx)
		if err != nil {
			s.c.log.Debug("read stats before the end", "container_id", s.id, "err", err)
		}
		s.final = &st
	}
}

// exit asks the agent to end the sandbox and waits a moment for it: PID 1
// gone, the kernel ends everything else in the sandbox, and the task is
// deleted without the runtime's kill, a process start fewer. A sandbox
// whose agent does not comply is killed from outside as before.
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
	dctx, cancel := context.WithTimeout(s.c.ctx(context.WithoutCancel(ctx)), cleanupTimeout)
	defer cancel()
	var err error
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

// eofNotifier closes eof when its reader is done.
type eofNotifier struct {
	r    io.Reader
	eof  chan struct{}
	once sync.Once
}

func (e *eofNotifier) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil {
		e.once.Do(func() { close(e.eof) })
	}
	return n, err
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

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

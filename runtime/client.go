// Package runtime runs sandboxes on containerd: it builds their OCI specs by
// hand, creates and starts their containers, runs processes in them and
// destroys them.
//
// Every object it creates lives in its own containerd namespace and carries
// the label LabelManaged, so that Cleanup can find what a crashed daemon
// left behind.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

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
	// Managed says sandboxd started this containerd itself; optional.
	Managed bool
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
	// noAgentSocket logs once that cells' agents cannot be reached on
	// their socket here.
	noAgentSocket sync.Once
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
		if initHash, err = baseHash(cfg.Init); err != nil {
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

// Info describes the runtime; Serving is false when containerd does not
// answer.
func (c *Client) Info(ctx context.Context) sandbox.RuntimeInfo {
	info := sandbox.RuntimeInfo{Address: c.cfg.Address, Managed: c.cfg.Managed, CgroupVersion: c.CgroupVersion(),
		StateDir: c.cfg.StateDir, StateDirErr: c.StateDirWritable()}
	if v, err := c.Version(ctx); err == nil {
		info.Version, info.Serving = v, true
	}
	return info
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

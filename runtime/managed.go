package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
)

// Managed is a containerd that sandboxd started itself, for hosts where
// nobody has set one up.
type Managed struct {
	Address string
	cmd     *exec.Cmd
	done    chan struct{}
	log     *slog.Logger
}

// managedConfig is version 2, which containerd 1.6, 1.7 and 2.x all read.
// CRI is off: nothing but sandboxd uses this containerd.
const managedConfig = `version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q

[ttrpc]
  address = %q
`

// StartManaged starts containerd with its root, state and socket under dir,
// and waits until it serves. Its log goes to dir/containerd.log.
func StartManaged(ctx context.Context, dir string, log *slog.Logger) (*Managed, error) {
	bin, err := exec.LookPath("containerd")
	if err != nil {
		return nil, fmt.Errorf("managed containerd: %w (install the containerd package)", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("managed containerd: %w", err)
	}
	addr := filepath.Join(dir, "containerd.sock")
	config := filepath.Join(dir, "config.toml")
	body := fmt.Sprintf(managedConfig, filepath.Join(dir, "root"), filepath.Join(dir, "state"), addr, addr+".ttrpc")
	if err := os.WriteFile(config, []byte(body), 0o600); err != nil {
		return nil, fmt.Errorf("managed containerd: %w", err)
	}
	logf, err := os.OpenFile(filepath.Join(dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("managed containerd: %w", err)
	}
	defer logf.Close()
	// A containerd left by a daemon that died still holds the socket: use
	// it rather than fail, but leave it running at shutdown.
	if serving(ctx, addr) {
		log.Warn("reusing a managed containerd left running", "address", addr)
		return &Managed{Address: addr, log: log}, nil
	}
	os.Remove(addr)
	cmd := exec.Command(bin, "--config", config)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C at a terminal reaches sandboxd, which
	// then stops containerd after its sandboxes.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("managed containerd: %w", err)
	}
	m := &Managed{Address: addr, cmd: cmd, done: make(chan struct{}), log: log}
	go func() { cmd.Wait(); close(m.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for !serving(ctx, addr) {
		select {
		case <-m.done:
			return nil, fmt.Errorf("managed containerd exited at start: %v (see %s)", cmd.ProcessState, logf.Name())
		case <-ctx.Done():
			m.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			m.Stop()
			return nil, fmt.Errorf("managed containerd did not serve within 30s (see %s)", logf.Name())
		}
	}
	log.Info("started managed containerd", "address", addr, "pid", cmd.Process.Pid)
	return m, nil
}

// Stop asks containerd to exit, and kills it after a grace period.
func (m *Managed) Stop() error {
	if m.cmd == nil {
		return nil
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
		return nil
	case <-time.After(10 * time.Second):
		m.cmd.Process.Kill()
		<-m.done
		return errors.New("managed containerd: killed after 10s")
	}
}

// Serving reports whether a containerd answers at addr.
func Serving(ctx context.Context, addr string) bool { return serving(ctx, addr) }

func serving(ctx context.Context, addr string) bool {
	if _, err := os.Stat(addr); err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := containerd.New(addr, containerd.WithTimeout(time.Second))
	if err != nil {
		return false
	}
	defer c.Close()
	ok, err := c.IsServing(ctx)
	return err == nil && ok
}

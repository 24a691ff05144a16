// Command sandboxd runs untrusted code in containerd sandboxes and serves a
// JSON API on a Unix socket.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/sandboxd/sandboxd/daemon"
	"github.com/sandboxd/sandboxd/daemon/api"
	sbxruntime "github.com/sandboxd/sandboxd/runtime"
)

// version is set at build time by the Makefile.
var version = "dev"

const (
	systemContainerd = "/run/containerd/containerd.sock"
	namespace        = "sandboxd"
	sandboxUID       = 65534 // nobody
	sandboxGID       = 65534 // nogroup
)

type options struct {
	socket        string
	containerd    string
	stateDir      string
	init          string
	logLevel      string
	maxConcurrent int
	maxQueued     int
	grace         time.Duration
}

func main() {
	defaults := daemon.DefaultLimits(goruntime.NumCPU())
	var o options
	fs := flag.NewFlagSet("sandboxd", flag.ExitOnError)
	fs.StringVar(&o.socket, "socket", api.DefaultSocket, "Unix socket to serve the API on")
	fs.StringVar(&o.containerd, "containerd", "", "containerd socket to use; empty: "+systemContainerd+" when it answers, else a managed containerd; \"managed\": always a managed one")
	fs.StringVar(&o.stateDir, "state-dir", "/var/lib/sandboxd", "directory for sandboxd's state")
	fs.StringVar(&o.init, "init", "", "path of sandboxd-init (default: next to sandboxd, or ../lib/sandboxd/)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.IntVar(&o.maxConcurrent, "max-concurrent", defaults.MaxConcurrent, "executions that run at once")
	fs.IntVar(&o.maxQueued, "max-queued", defaults.MaxQueued, "executions that may wait for a slot; beyond them requests get 429")
	fs.DurationVar(&o.grace, "shutdown-grace", 30*time.Second, "how long running executions may finish at shutdown")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println("sandboxd", version)
		return
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "sandboxd: --log-level:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	limits := defaults
	limits.MaxConcurrent, limits.MaxQueued = o.maxConcurrent, o.maxQueued
	if err := run(o, limits, log); err != nil {
		fmt.Fprintln(os.Stderr, "sandboxd:", err)
		os.Exit(1)
	}
}

func run(o options, limits daemon.Limits, log *slog.Logger) error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root: it creates containers through containerd, and cgroups and namespaces for them (run it with sudo or as the systemd service)")
	}
	if limits.MaxConcurrent < 1 || limits.MaxQueued < 0 {
		return errors.New("--max-concurrent must be at least 1 and --max-queued at least 0")
	}
	initPath, err := findInit(o.init)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.stateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	address, managed, err := startContainerd(ctx, o, log)
	if err != nil {
		return err
	}
	if managed != nil {
		defer managed.Stop()
	}
	langs := daemon.DetectLanguages(ctx, daemon.Languages)
	rt, err := sbxruntime.New(ctx, sbxruntime.Config{
		Address:   address,
		Namespace: namespace,
		StateDir:  o.stateDir,
		Root: &sbxruntime.HostRootFS{
			Dir: o.stateDir, ExtraPaths: daemon.HostPaths(langs), Init: initPath,
			UID: sandboxUID, GID: sandboxGID,
		},
		InitArgs: []string{sbxruntime.InitPath},
		UID:      sandboxUID,
		GID:      sandboxGID,
		Logger:   log,
	})
	if err != nil {
		return err
	}
	defer rt.Close()
	cversion, err := rt.Version(ctx)
	if err != nil {
		return fmt.Errorf("containerd at %s does not answer: %w", address, err)
	}
	// Sessions outlive the daemon; one-shot sandboxes do not.
	if n, err := rt.Cleanup(ctx, daemon.SessionKind); err != nil {
		return fmt.Errorf("clean up what an earlier run left: %w", err)
	} else if n > 0 {
		log.Warn("removed sandboxes left by an earlier run", "count", n)
	}

	srv := daemon.New(daemon.Config{
		Runtime:   &containerdRuntime{c: rt, address: address, managed: managed != nil},
		Languages: langs,
		Limits:    limits,
		Version:   version,
		Logger:    log,
	})
	if err := srv.AdoptSessions(ctx); err != nil {
		return fmt.Errorf("adopt sessions: %w", err)
	}
	ln, err := listen(o.socket)
	if err != nil {
		return err
	}
	// Requests get a context of their own that outlives the signal, so that
	// running executions may finish within the grace period.
	baseCtx, cancelRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRequests()
	hs := &http.Server{
		Handler:           srv,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ConnContext:       daemon.ConnContext,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	go srv.Sweep(baseCtx)
	names := make([]string, len(langs))
	for i, l := range langs {
		names[i] = l.Name
	}
	log.Info("serving", "socket", o.socket, "version", version, "containerd", address, "containerd_version", cversion,
		"managed_containerd", managed != nil, "cgroup_version", rt.CgroupVersion(), "languages", names)

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", o.grace)
	sctx, cancel := context.WithTimeout(context.Background(), o.grace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("grace period over: killing running executions")
	}
	cancelRequests()
	hs.Close()
	srv.Wait()
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	if _, err := rt.Cleanup(cctx, daemon.SessionKind); err != nil {
		log.Warn("clean up at shutdown", "err", err)
	}
	log.Info("stopped")
	return nil
}

// startContainerd picks the containerd to use, starting a managed one when
// none is given and the system's does not answer.
func startContainerd(ctx context.Context, o options, log *slog.Logger) (string, *sbxruntime.Managed, error) {
	switch o.containerd {
	case "managed":
	case "":
		if sbxruntime.Serving(ctx, systemContainerd) {
			return systemContainerd, nil, nil
		}
		log.Info("no containerd answers at " + systemContainerd + "; starting a managed one")
	default:
		if _, err := os.Stat(o.containerd); err != nil {
			return "", nil, fmt.Errorf("--containerd %s: %w", o.containerd, err)
		}
		if !sbxruntime.Serving(ctx, o.containerd) {
			return "", nil, fmt.Errorf("--containerd %s: containerd does not answer there (is it running, and may this user open the socket?)", o.containerd)
		}
		return o.containerd, nil, nil
	}
	m, err := sbxruntime.StartManaged(ctx, filepath.Join(o.stateDir, "containerd"), log)
	if err != nil {
		return "", nil, err
	}
	return m.Address, m, nil
}

// findInit locates sandboxd-init: the flag, else beside this executable,
// else in ../lib/sandboxd/ as `make install` lays it out.
func findInit(flagPath string) (string, error) {
	if flagPath != "" {
		if _, err := os.Stat(flagPath); err != nil {
			return "", fmt.Errorf("--init: %w", err)
		}
		return flagPath, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(exe)
	for _, p := range []string{filepath.Join(dir, "sandboxd-init"), filepath.Join(dir, "..", "lib", "sandboxd", "sandboxd-init")} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("sandboxd-init not found beside %s nor in ../lib/sandboxd/ (build it with make, or pass --init)", exe)
}

// listen creates the API socket: its directory, mode 0660 and group
// sandboxd when that group exists. A socket file nobody answers on is left
// from a crash and removed; one that answers belongs to a running daemon.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s: another sandboxd is serving on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket: %w", err)
	}
	if g, err := user.LookupGroup("sandboxd"); err == nil {
		gid, _ := strconv.Atoi(g.Gid)
		if err := os.Chown(path, 0, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("socket: %w", err)
		}
	}
	return ln, nil
}

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
	"github.com/sandboxd/sandboxd/daemon/config"
	sbxruntime "github.com/sandboxd/sandboxd/runtime"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
	"github.com/sandboxd/sandboxd/systemd"
)

// version is set at build time by the Makefile.
var version = "dev"

const (
	sandboxUID = 65534 // nobody
	sandboxGID = 65534 // nogroup
)

func main() {
	fs := flag.NewFlagSet("sandboxd", flag.ExitOnError)
	configPath := fs.String("config", config.DefaultPath, "configuration file; a missing file means the defaults")
	checkConfig := fs.Bool("check-config", false, "validate the configuration, print the effective one, and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	initPath := fs.String("init", "", "path of sandboxd-init (default: next to sandboxd, or ../lib/sandboxd/)")
	// Flags override the file; their defaults are shown from the built-in
	// settings, and only flags given on the command line apply.
	def := config.Defaults(goruntime.NumCPU())
	config.AddFlags(fs, def)
	fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println("sandboxd", version)
		return
	}
	src := config.Source{Path: *configPath, Defaults: def, Flags: fs}
	settings, err := src.Load()
	if err == nil {
		_, err = settings.LanguageSpecs(daemon.Languages)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandboxd:", err)
		os.Exit(1)
	}
	if *checkConfig {
		out, _ := settings.Encode()
		os.Stdout.Write(out)
		return
	}
	log, err := newLogger(settings)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandboxd:", err)
		os.Exit(2)
	}
	if err := run(settings, src.Load, *initPath, log); err != nil {
		log.Error("exiting", "err", err)
		fmt.Fprintln(os.Stderr, "sandboxd:", err)
		os.Exit(1)
	}
}

// newLogger logs to stderr; to the journal natively when stderr is the
// journal, where the time and level are the journal's own.
func newLogger(s config.Settings) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(s.LogLevel)); err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	if systemd.JournalStream() {
		return slog.New(systemd.NewJournalHandler(level)), nil
	}
	opts := &slog.HandlerOptions{Level: level}
	if s.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
}

func run(settings config.Settings, reload func() (config.Settings, error), initFlag string, log *slog.Logger) error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root: it creates containers through containerd, and cgroups and namespaces for them (run it with sudo or as the systemd service)")
	}
	initPath, err := findInit(initFlag)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(settings.StateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	watchdog := systemd.WatchdogInterval()
	// The socket first: a second sandboxd started by mistake stops here,
	// before it touches the first one's containers. Requests wait in the
	// backlog until the daemon serves.
	ln, activated, err := listener(settings)
	if err != nil {
		return err
	}
	defer ln.Close()

	address, managed, err := startContainerd(ctx, settings, watchdog, log)
	if err != nil {
		return err
	}
	if managed != nil {
		defer managed.Stop()
	}
	specs, err := settings.LanguageSpecs(daemon.Languages)
	if err != nil {
		return err
	}
	goCache := daemon.NewGoCache(settings.CacheDir, log)
	langs := goCache.Apply(daemon.DetectLanguages(ctx, specs))
	rt, err := sbxruntime.New(ctx, sbxruntime.Config{
		Address:     address,
		Namespace:   settings.Namespace,
		StateDir:    settings.StateDir,
		Root:        hostRoot(settings, langs, initPath),
		InitArgs:    []string{sbxruntime.InitPath},
		Init:        initPath,
		UID:         sandboxUID,
		GID:         sandboxGID,
		Logger:      log,
		OCIRuntimes: ociRuntimes(settings),
		Managed:     managed != nil,
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
	if n, err := rt.Cleanup(ctx, sandbox.KindSession); err != nil {
		return fmt.Errorf("clean up what an earlier run left: %w", err)
	} else if n > 0 {
		log.Warn("removed sandboxes left by an earlier run", "count", n)
	}

	cfg := settings.DaemonConfig()
	cfg.Runtime = containerdRuntime{rt}
	cfg.Languages = langs
	cfg.Version = version
	cfg.Logger = log
	srv := daemon.New(cfg)
	if err := srv.AdoptSessions(ctx); err != nil {
		return fmt.Errorf("adopt sessions: %w", err)
	}
	// Requests get a context of their own that outlives the signal, so that
	// running executions may finish within the grace period.
	baseCtx, cancelRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRequests()
	// No ReadTimeout: it would cut the bodies that stream (stdin, image
	// import); the handlers give the bodies they read whole a deadline.
	hs := &http.Server{
		Handler:           srv,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ConnContext:       daemon.ConnContext,
		ReadHeaderTimeout: time.Duration(settings.Server.HeaderTimeout),
		IdleTimeout:       time.Duration(settings.Server.IdleTimeout),
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	conns := srv.LimitConns(ln, connLimits(settings, log))
	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(conns) }()
	go srv.Sweep(baseCtx)
	srv.Start(baseCtx)
	if settings.Metrics.Address != "" {
		mln, err := net.Listen("tcp", settings.Metrics.Address)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		ms := &http.Server{Handler: srv.MetricsHandler(), ReadHeaderTimeout: time.Duration(settings.Server.HeaderTimeout), IdleTimeout: time.Duration(settings.Server.IdleTimeout)}
		go func() { errc <- ms.Serve(mln) }()
		defer ms.Close()
	}
	names := make([]string, len(langs))
	for i, l := range langs {
		names[i] = l.Name
	}
	// The listener's own address: under socket activation, systemd's
	// socket, whatever --socket says.
	log.Info("serving", "socket", ln.Addr().String(), "socket_activated", activated, "version", version,
		"containerd", address, "containerd_version", cversion, "managed_containerd", managed != nil,
		"cgroup_version", rt.CgroupVersion(), "languages", names)
	// The socket serves and containerd answers: ready.
	systemd.Notify(systemd.Ready, systemd.Status(status(ctx, srv)))

	// Go's cache is built in the background; once it is, the languages
	// are applied again with it, as a reload would.
	warmed := make(chan struct{}, 1)
	warm := func(langs []daemon.Language) {
		go func() {
			if goCache.Warm(baseCtx, langs) {
				select {
				case warmed <- struct{}{}:
				default:
				}
			}
		}()
	}
	warm(langs)
	current := settings

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	var pings <-chan time.Time
	if watchdog > 0 {
		t := time.NewTicker(watchdog)
		defer t.Stop()
		pings = t.C
	}
	statusTick := time.NewTicker(5 * time.Second)
	defer statusTick.Stop()
loop:
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("serve: %w", err)
		case <-ctx.Done():
			break loop
		case <-pings:
			// From the serving loop: a wedged daemon stops pinging.
			systemd.Notify(systemd.Watchdog)
		case <-statusTick.C:
			systemd.Notify(systemd.Status(status(ctx, srv)))
		case <-hup:
			systemd.Notify(systemd.Reloading)
			if s, langs, ok := applyReload(ctx, srv, rt, initPath, settings, reload, goCache, log); ok {
				current = s
				warm(langs)
				conns.SetLimits(connLimits(s, log))
			}
			systemd.Notify(systemd.Ready, systemd.Status(status(ctx, srv)))
		case <-warmed:
			applyReload(ctx, srv, rt, initPath, settings, func() (config.Settings, error) { return current, nil }, goCache, log)
		}
	}

	systemd.Notify(systemd.Stopping, systemd.Status("stopping: letting running executions finish"))
	log.Info("shutting down", "grace", time.Duration(settings.ShutdownGrace))
	sctx, cancel := context.WithTimeout(context.Background(), time.Duration(settings.ShutdownGrace))
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("grace period over: killing running executions")
	}
	cancelRequests()
	hs.Close()
	srv.Wait()
	srv.Close(context.Background())
	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	if _, err := rt.Cleanup(cctx, sandbox.KindSession); err != nil {
		log.Warn("clean up at shutdown", "err", err)
	}
	log.Info("stopped")
	return nil
}

// ociRuntimes are the runtimes of the settings, for the runtime package.
func ociRuntimes(s config.Settings) map[string]sbxruntime.OCIRuntime {
	out := map[string]sbxruntime.OCIRuntime{}
	for name, rt := range s.Runtimes {
		out[name] = sbxruntime.OCIRuntime{Binary: rt.Binary, Flags: rt.Flags}
	}
	return out
}

// hostRoot is the root source of sandboxes on the host's runtimes, with the
// host paths the languages need.
func hostRoot(s config.Settings, langs []daemon.Language, initPath string) *sbxruntime.HostRootFS {
	return &sbxruntime.HostRootFS{Dir: s.StateDir, ExtraPaths: daemon.HostPaths(langs), Init: initPath, UID: sandboxUID, GID: sandboxGID}
}

// applyReload applies a new configuration's limits, languages and access
// control; an invalid file is logged and changes nothing.
func applyReload(ctx context.Context, srv *daemon.Server, rt *sbxruntime.Client, initPath string, old config.Settings, reload func() (config.Settings, error), goCache *daemon.GoCache, log *slog.Logger) (config.Settings, []daemon.Language, bool) {
	s, err := reload()
	var specs []daemon.LanguageSpec
	if err == nil {
		specs, err = s.LanguageSpecs(daemon.Languages)
	}
	if err != nil {
		log.Error("reload refused: the configuration stays as it was", "err", err)
		return s, nil, false
	}
	for _, w := range s.RestartOnly(old) {
		log.Warn(w)
	}
	langs := goCache.Apply(daemon.DetectLanguages(ctx, specs))
	// The host paths of languages the reload adds are mounted in the
	// sandboxes made from now on; the pools are refilled with those.
	if err := rt.ReplaceRoot(hostRoot(old, langs, initPath)); err != nil {
		log.Error("reload refused: the sandbox root", "err", err)
		return s, nil, false
	}
	cfg := s.DaemonConfig()
	srv.Reload(cfg.Limits, langs, cfg.Access)
	log.Info("reloaded", "languages", len(langs), "max_concurrent", s.Limits.MaxConcurrent)
	return s, langs, true
}

// connLimits are the settings' connection caps, lowered to what the
// process's RLIMIT_NOFILE can hold.
func connLimits(s config.Settings, log *slog.Logger) daemon.ConnLimits {
	want := s.ConnLimits()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return want
	}
	lim, lowered := want.Fit(rl.Cur)
	if lowered {
		log.Warn("connection caps lowered to what RLIMIT_NOFILE allows (raise LimitNOFILE= or ulimit -n)",
			"nofile", rl.Cur, "max_connections", lim.Max, "max_connections_per_uid", lim.PerUID, "root_reserve", lim.RootReserve)
	}
	return lim
}

// status is the one-line summary systemctl status shows.
func status(ctx context.Context, srv *daemon.Server) string {
	st := srv.Status(ctx)
	up := "up"
	if !st.ContainerdUp {
		up = "DOWN"
	}
	return fmt.Sprintf("serving: %d running, %d queued, %d sessions; containerd %s", st.Running, st.Queued, st.Sessions, up)
}

// startContainerd picks the containerd to use, starting a managed one when
// none is given and the system's does not answer. It waits up to
// containerd_wait for the one it is given.
func startContainerd(ctx context.Context, s config.Settings, watchdog time.Duration, log *slog.Logger) (string, *sbxruntime.Managed, error) {
	switch s.Containerd {
	case "managed":
	case "":
		if sbxruntime.Serving(ctx, config.SystemContainerd) {
			return config.SystemContainerd, nil, nil
		}
		log.Info("no containerd answers at " + config.SystemContainerd + "; starting a managed one")
	default:
		addr := s.Containerd
		deadline := time.Now().Add(time.Duration(s.ContainerdWait))
		for !sbxruntime.Serving(ctx, addr) {
			if _, err := os.Stat(addr); errors.Is(err, os.ErrPermission) {
				return "", nil, fmt.Errorf("--containerd %s: %w", addr, err)
			}
			if time.Now().After(deadline) {
				return "", nil, fmt.Errorf("containerd %s: containerd does not answer there (is it running, and may this user open the socket?)", addr)
			}
			systemd.Notify(systemd.Status("waiting for containerd at " + addr))
			if watchdog > 0 {
				systemd.Notify(systemd.Watchdog)
			}
			select {
			case <-ctx.Done():
				return "", nil, ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
		}
		return addr, nil, nil
	}
	m, err := sbxruntime.StartManaged(ctx, filepath.Join(s.StateDir, "containerd"), log)
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

// listener is the socket systemd passed, or one of our own.
func listener(s config.Settings) (net.Listener, bool, error) {
	ln, err := systemd.Listener()
	if err != nil || ln != nil {
		return ln, ln != nil, err
	}
	mode, _ := strconv.ParseUint(s.SocketMode, 8, 32)
	ln, err = listen(s.Socket, os.FileMode(mode), s.SocketGroup)
	return ln, false, err
}

// listen creates the API socket: its directory, its mode, and its group
// when that group exists. A socket file nobody answers on is left from a
// crash and removed; one that answers belongs to a running daemon.
func listen(path string, mode os.FileMode, group string) (net.Listener, error) {
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
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket: %w", err)
	}
	if gid, ok := groupID(group); ok {
		if err := os.Chown(path, 0, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("socket: %w", err)
		}
	}
	return ln, nil
}

// groupID is the gid of a group named by name or, as chown(1) takes it, by
// number: in a container the host's groups have no names, and a pod's
// supplementalGroups are numbers. A name that is no group's gives none.
func groupID(group string) (int, bool) {
	if group == "" {
		return 0, false
	}
	if g, err := user.LookupGroup(group); err == nil {
		gid, err := strconv.Atoi(g.Gid)
		return gid, err == nil
	}
	gid, err := strconv.ParseUint(group, 10, 31)
	return int(gid), err == nil
}

// Package config is sandboxd's process configuration: the TOML file over
// built-in defaults, the command-line flags over the file, and what a
// reload (SIGHUP) changes. It turns the settings into the typed values
// package daemon consumes; daemon never imports it.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/pelletier/go-toml/v2"

	"github.com/sandboxd/sandboxd/daemon"
	"github.com/sandboxd/sandboxd/daemon/api"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// namespaceRE is what containerd accepts as a namespace.
var namespaceRE = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$`)

// othersNamespaces are the containerd namespaces of other clients on the
// same containerd, which sandboxd must never share: its start-up clean-up
// and its metrics take its namespace for its own.
var othersNamespaces = map[string]string{
	"k8s.io": "Kubernetes' (the kubelet's, through containerd's CRI plugin)",
	"moby":   "Docker's",
}

// DefaultPath is where sandboxd reads its configuration by default.
const DefaultPath = "/etc/sandboxd/sandboxd.toml"

// SystemContainerd is the system's containerd socket, used when the
// settings name none and it answers.
const SystemContainerd = "/run/containerd/containerd.sock"

// Duration is a TOML string such as "30s" or "10m".
type Duration time.Duration

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration such as 30s or 10m", b)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Size is a TOML string such as "256MiB", "1g" or "1048576".
type Size int64

func (s *Size) UnmarshalText(b []byte) error {
	v, err := api.ParseSize(string(b))
	*s = Size(v)
	return err
}

func (s Size) MarshalText() ([]byte, error) {
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if int64(s) >= u.n && int64(s)%u.n == 0 {
			return []byte(strconv.FormatInt(int64(s)/u.n, 10) + u.suffix), nil
		}
	}
	return []byte(strconv.FormatInt(int64(s), 10)), nil
}

// Settings is sandboxd's configuration file. Every key is optional; a
// missing one keeps its built-in default.
type Settings struct {
	Socket         string   `toml:"socket" comment:"the API socket"`
	SocketMode     string   `toml:"socket_mode" comment:"its permissions, in octal"`
	SocketGroup    string   `toml:"socket_group" comment:"its group, a name or a numeric gid, when that group exists"`
	Containerd     string   `toml:"containerd" comment:"containerd socket; empty: the system's when it answers, else a managed one; \"managed\": always a managed one"`
	ContainerdWait Duration `toml:"containerd_wait" comment:"how long to wait at start for containerd to answer (0: not at all)"`
	Namespace      string   `toml:"namespace" comment:"containerd namespace of everything sandboxd creates; one daemon per namespace"`
	StateDir       string   `toml:"state_dir"`
	CacheDir       string   `toml:"cache_dir" comment:"caches sandboxd builds for languages (the Go standard library's), shared by the daemons of a host; empty: none"`
	ShutdownGrace  Duration `toml:"shutdown_grace" comment:"how long running executions may finish at shutdown"`
	LogLevel       string   `toml:"log_level" comment:"debug, info, warn or error"`
	LogFormat      string   `toml:"log_format" comment:"text or json"`

	Limits    LimitSettings              `toml:"limits"`
	Server    ServerSettings             `toml:"server"`
	Sessions  SessionSettings            `toml:"sessions"`
	Pool      PoolSettings               `toml:"pool"`
	Access    AccessSettings             `toml:"access"`
	Metrics   MetricsSettings            `toml:"metrics"`
	Images    ImageSettings              `toml:"images"`
	Runtimes  map[string]RuntimeSettings `toml:"runtimes" comment:"OCI runtimes besides runc that languages and requests may name"`
	Languages []LanguageSettings         `toml:"languages" comment:"add, override or disable languages"`
}

// ImageSettings configures languages that run from OCI images.
type ImageSettings struct {
	Pull bool `toml:"pull" comment:"pull a language's missing image from its registry (in the background, at start and reload); false: images come only by sandboxctl image import"`
}

// RuntimeSettings is an OCI runtime that containerd's runc shim drives in
// place of runc.
type RuntimeSettings struct {
	Binary string   `toml:"binary" comment:"path, or a name looked up in PATH"`
	Flags  []string `toml:"flags,omitempty" comment:"global flags, such as [\"--platform=ptrace\"] for runsc"`
}

// LimitSettings are the defaults and maxima of executions.
type LimitSettings struct {
	Timeout             Duration `toml:"timeout"`
	MaxTimeout          Duration `toml:"max_timeout"`
	Memory              Size     `toml:"memory"`
	MaxMemory           Size     `toml:"max_memory"`
	CPUs                float64  `toml:"cpus"`
	Pids                int64    `toml:"pids"`
	Tmpfs               Size     `toml:"tmpfs" comment:"size of /tmp and of /workspace, each"`
	Output              Size     `toml:"output" comment:"cap of stdout and of stderr, each"`
	MaxCode             Size     `toml:"max_code"`
	MaxStdin            Size     `toml:"max_stdin"`
	MaxConcurrent       int      `toml:"max_concurrent" comment:"executions at once"`
	MaxQueued           int      `toml:"max_queued" comment:"executions waiting; beyond, 429"`
	MaxConcurrentPerUID int      `toml:"max_concurrent_per_uid" comment:"running and waiting executions of one uid; 0: no quota"`
}

// ServerSettings bound what a client may hold of the daemon: time,
// connections and memory.
type ServerSettings struct {
	HeaderTimeout        Duration `toml:"header_timeout" comment:"how long a client may take to send a request's headers; beyond, the connection is closed"`
	BodyTimeout          Duration `toml:"body_timeout" comment:"how long a client may take to send a JSON body or a session's file once the daemon reads it; beyond, 408 (the bodies of stdin and image import stream, without one)"`
	IdleTimeout          Duration `toml:"idle_timeout" comment:"an open connection that sends no request is closed after this long"`
	MaxConnections       int      `toml:"max_connections" comment:"connections open at once; beyond, 503 (at most half of RLIMIT_NOFILE: a lower limit lowers it)"`
	MaxConnectionsPerUID int      `toml:"max_connections_per_uid" comment:"connections open at once of one uid, root's too; beyond, 429; 0: no cap"`
	RootReserve          int      `toml:"root_reserve" comment:"of max_connections, the connections only root may open, so that an administrator always gets in"`
	MaxBodyMemory        Size     `toml:"max_body_memory" comment:"bytes of request bodies held in memory at once, all requests together (default: the largest body the default limits allow); a larger body waits for all of it"`
	BodyWait             Duration `toml:"body_wait" comment:"how long a request waits for room in max_body_memory; beyond, 429"`
}

// SessionSettings bound sessions.
type SessionSettings struct {
	IdleTimeout    Duration `toml:"idle_timeout"`
	MaxLifetime    Duration `toml:"max_lifetime"`
	MaxLifetimeCap Duration `toml:"max_lifetime_cap" comment:"the most a request may ask for either"`
	Max            int      `toml:"max"`
	MaxPerUID      int      `toml:"max_per_uid"`
	MaxFile        Size     `toml:"max_file" comment:"one file uploaded or downloaded"`
}

// PoolSettings configures the pool of ready sandboxes.
type PoolSettings struct {
	Size   int      `toml:"size" comment:"sandboxes started ahead of demand for one-shot executions (default: 2 x CPUs); 0: no pool"`
	Reuse  int      `toml:"reuse" comment:"one-shot executions of one uid that a sandbox (a cell) serves, each in a fresh jail (default 200); 1: a sandbox for each execution"`
	Idle   Duration `toml:"idle" comment:"how long a used cell waits for its uid's next execution (default 30s)"`
	MaxAge Duration `toml:"max_age" comment:"how long a cell lives at most (default 10m)"`
}

// AccessSettings is who may use the API beyond the socket's permissions.
type AccessSettings struct {
	AllowUIDs []uint32 `toml:"allow_uids" comment:"empty, with allow_gids empty: whoever can open the socket; root always may"`
	AllowGIDs []uint32 `toml:"allow_gids"`
}

// MetricsSettings configures the Prometheus endpoint.
type MetricsSettings struct {
	Address string `toml:"address" comment:"also serve /metrics on this TCP address, such as 127.0.0.1:9464; empty: only on the socket"`
}

// LanguageSettings adds a language, overrides fields of a built-in one
// (those set), or disables one.
type LanguageSettings struct {
	Name       string   `toml:"name"`
	Disabled   bool     `toml:"disabled,omitempty"`
	Aliases    []string `toml:"aliases,omitempty"`
	Extensions []string `toml:"extensions,omitempty"`
	FileName   string   `toml:"file_name,omitempty"`
	Compile    []string `toml:"compile,omitempty"`
	Run        []string `toml:"run,omitempty"`
	Version    []string `toml:"version,omitempty"`
	Env        []string `toml:"env,omitempty"`
	HostPaths  []string `toml:"host_paths,omitempty"`
	Image      string   `toml:"image,omitempty" comment:"run from this OCI image (tag or digest) instead of the host's runtimes"`
	Runtime    string   `toml:"runtime,omitempty" comment:"OCI runtime: runc (default) or one of [runtimes], such as runsc"`
}

// Defaults are the built-in settings for a host with cpus CPUs.
func Defaults(cpus int) Settings {
	l := daemon.DefaultLimits(cpus)
	c := daemon.DefaultConnLimits()
	return Settings{
		Socket:         api.DefaultSocket,
		SocketMode:     "0660",
		SocketGroup:    "sandboxd",
		StateDir:       "/var/lib/sandboxd",
		CacheDir:       "/var/cache/sandboxd",
		Namespace:      "sandboxd",
		ContainerdWait: 0,
		ShutdownGrace:  Duration(30 * time.Second),
		LogLevel:       "info",
		LogFormat:      "text",
		Limits: LimitSettings{
			Timeout: Duration(l.DefaultTimeout), MaxTimeout: Duration(l.MaxTimeout),
			Memory: Size(l.DefaultMemory), MaxMemory: Size(l.MaxMemory),
			CPUs: l.CPUs, Pids: l.Pids, Tmpfs: Size(l.TmpfsBytes), Output: Size(l.OutputBytes),
			MaxCode: Size(l.MaxCodeBytes), MaxStdin: Size(l.MaxStdinBytes),
			MaxConcurrent: l.MaxConcurrent, MaxQueued: l.MaxQueued, MaxConcurrentPerUID: l.MaxConcurrentPerUID,
		},
		Server: ServerSettings{
			HeaderTimeout: Duration(10 * time.Second), BodyTimeout: Duration(l.BodyTimeout), IdleTimeout: Duration(time.Minute),
			MaxConnections: c.Max, MaxConnectionsPerUID: c.PerUID, RootReserve: c.RootReserve,
			MaxBodyMemory: Size(l.MaxBodyBytes()), BodyWait: Duration(l.BodyWait),
		},
		Pool:     PoolSettings{Size: l.PoolSize, Reuse: l.CellReuse, Idle: Duration(l.CellIdle), MaxAge: Duration(l.CellMaxAge)},
		Images:   ImageSettings{Pull: true},
		Runtimes: map[string]RuntimeSettings{"runsc": {Binary: "runsc"}},
		Sessions: SessionSettings{
			IdleTimeout: Duration(l.SessionIdleTimeout), MaxLifetime: Duration(l.SessionMaxLifetime),
			MaxLifetimeCap: Duration(l.MaxSessionLifetime), Max: l.MaxSessions, MaxPerUID: l.MaxSessionsPerUser,
			MaxFile: Size(l.MaxFileBytes),
		},
	}
}

// Load reads a configuration file over defaults. A missing file leaves the
// defaults; an unknown key is an error that names its line.
func Load(path string, defaults Settings) (Settings, error) {
	s := defaults
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("config: %w", err)
	}
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		var strict *toml.StrictMissingError
		var decErr *toml.DecodeError
		switch {
		case errors.As(err, &strict):
			e := strict.Errors[0]
			row, col := e.Position()
			return s, fmt.Errorf("%s:%d:%d: unknown key %q", path, row, col, strings.Join(e.Key(), "."))
		case errors.As(err, &decErr):
			row, col := decErr.Position()
			return s, fmt.Errorf("%s:%d:%d: %s", path, row, col, decErr.Error())
		}
		return s, fmt.Errorf("%s: %w", path, err)
	}
	return s, s.Validate()
}

// Validate checks values that parse but make no sense.
func (s Settings) Validate() error {
	l := s.Limits
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf("config: "+format, args...))
		}
	}
	check(l.Timeout > 0 && l.Timeout <= l.MaxTimeout, "limits.timeout must be positive and at most limits.max_timeout")
	check(l.Memory >= daemon.MinMemory && l.Memory <= l.MaxMemory, "limits.memory must be at least 16MiB and at most limits.max_memory")
	check(l.CPUs > 0 && l.CPUs <= 1024, "limits.cpus must be positive")
	check(l.Pids >= 8, "limits.pids must be at least 8")
	check(l.Tmpfs >= 1<<20, "limits.tmpfs must be at least 1MiB")
	check(l.Output >= 1<<10, "limits.output must be at least 1KiB")
	check(l.MaxCode > 0 && l.MaxStdin >= 0, "limits.max_code must be positive")
	check(l.MaxConcurrent >= 1 && l.MaxQueued >= 0 && l.MaxConcurrentPerUID >= 0, "limits.max_concurrent must be at least 1, max_queued and max_concurrent_per_uid at least 0")
	ss := s.Sessions
	check(ss.IdleTimeout > 0 && ss.MaxLifetime > 0 && ss.IdleTimeout <= ss.MaxLifetimeCap && ss.MaxLifetime <= ss.MaxLifetimeCap,
		"sessions.idle_timeout and max_lifetime must be positive and at most sessions.max_lifetime_cap")
	check(ss.Max >= 0 && ss.MaxPerUID >= 0 && ss.MaxFile > 0, "sessions.max, max_per_uid and max_file must not be negative")
	sv := s.Server
	check(sv.HeaderTimeout > 0 && sv.BodyTimeout > 0 && sv.IdleTimeout > 0, "server.header_timeout, body_timeout and idle_timeout must be positive")
	check(sv.MaxConnections >= 1 && sv.RootReserve >= 0 && sv.RootReserve < sv.MaxConnections,
		"server.max_connections must be at least 1, and server.root_reserve from 0 to less than it")
	check(sv.MaxConnectionsPerUID >= 0, "server.max_connections_per_uid must not be negative")
	check(sv.MaxBodyMemory >= 1<<20 && sv.BodyWait >= 0, "server.max_body_memory must be at least 1MiB, and server.body_wait not negative")
	check(s.Pool.Size >= 0 && s.Pool.Size <= 256, "pool.size must be from 0 to 256")
	check(s.Pool.Reuse >= 1 && s.Pool.Reuse <= 10000, "pool.reuse must be from 1 to 10000")
	check(s.Pool.Idle >= Duration(time.Second) && s.Pool.Idle <= Duration(time.Hour), "pool.idle must be from 1s to 1h")
	check(s.Pool.MaxAge >= s.Pool.Idle && s.Pool.MaxAge <= Duration(24*time.Hour), "pool.max_age must be from pool.idle to 24h")
	check(namespaceRE.MatchString(s.Namespace), "namespace %q must be letters, digits, '.', '_' or '-', starting with a letter or digit", s.Namespace)
	owner, taken := othersNamespaces[s.Namespace]
	check(!taken, "namespace %q is %s: sandboxd needs one of its own, such as \"sandboxd\"", s.Namespace, owner)
	_, err := strconv.ParseUint(s.SocketMode, 8, 32)
	check(err == nil, "socket_mode %q is not octal", s.SocketMode)
	check(s.LogFormat == "text" || s.LogFormat == "json", "log_format must be text or json")
	for name, rt := range s.Runtimes {
		check(name != sandbox.DefaultOCIRuntime && namespaceRE.MatchString(name), "runtimes.%s: a runtime's name is letters, digits, '.', '_' or '-', and not runc (the default)", name)
		check(rt.Binary != "", "runtimes.%s: binary is required", name)
	}
	for i, lang := range s.Languages {
		check(lang.Name != "", "languages[%d]: name is required", i)
		if lang.Runtime != "" && lang.Runtime != sandbox.DefaultOCIRuntime {
			_, ok := s.Runtimes[lang.Runtime]
			check(ok, "languages[%d] (%s): runtime %q is neither runc nor one of [runtimes]", i, lang.Name, lang.Runtime)
		}
		if lang.Image != "" {
			_, err := reference.ParseDockerRef(lang.Image)
			check(err == nil, "languages[%d] (%s): image %q is not an image reference: %v", i, lang.Name, lang.Image, err)
		}
	}
	return errors.Join(errs...)
}

// Encode writes the settings as TOML, for --check-config.
func (s Settings) Encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	enc.SetIndentTables(true)
	err := enc.Encode(s)
	return buf.Bytes(), err
}

// DaemonConfig is what the settings give of the daemon's configuration:
// all but the runtime, the languages (found from LanguageSpecs), the
// version and the logger, which the caller adds.
func (s Settings) DaemonConfig() daemon.Config {
	return daemon.Config{
		OCIRuntimes: slices.Sorted(maps.Keys(s.Runtimes)),
		PullImages:  s.Images.Pull,
		Limits:      s.daemonLimits(),
		Access:      daemon.Access{UIDs: s.Access.AllowUIDs, GIDs: s.Access.AllowGIDs},
		BodyBudget:  int64(s.Server.MaxBodyMemory),
	}
}

// daemonLimits are the executions' and sessions' defaults and maxima.
func (s Settings) daemonLimits() daemon.Limits {
	l, ss := s.Limits, s.Sessions
	return daemon.Limits{
		DefaultTimeout: time.Duration(l.Timeout), MaxTimeout: time.Duration(l.MaxTimeout),
		DefaultMemory: int64(l.Memory), MaxMemory: int64(l.MaxMemory),
		CPUs: l.CPUs, Pids: l.Pids, TmpfsBytes: int64(l.Tmpfs), OutputBytes: int64(l.Output),
		MaxCodeBytes: int64(l.MaxCode), MaxStdinBytes: int64(l.MaxStdin),
		MaxConcurrent: l.MaxConcurrent, MaxQueued: l.MaxQueued, MaxConcurrentPerUID: l.MaxConcurrentPerUID,
		SessionIdleTimeout: time.Duration(ss.IdleTimeout), SessionMaxLifetime: time.Duration(ss.MaxLifetime),
		MaxSessionLifetime: time.Duration(ss.MaxLifetimeCap), MaxSessions: ss.Max, MaxSessionsPerUser: ss.MaxPerUID,
		MaxFileBytes: int64(ss.MaxFile),
		PoolSize:     s.Pool.Size,
		CellReuse:    s.Pool.Reuse, CellIdle: time.Duration(s.Pool.Idle), CellMaxAge: time.Duration(s.Pool.MaxAge),
		BodyTimeout: time.Duration(s.Server.BodyTimeout), BodyWait: time.Duration(s.Server.BodyWait),
	}
}

// ConnLimits are the caps of the API socket's connections.
func (s Settings) ConnLimits() daemon.ConnLimits {
	return daemon.ConnLimits{Max: s.Server.MaxConnections, PerUID: s.Server.MaxConnectionsPerUID, RootReserve: s.Server.RootReserve}
}

// LanguageSpecs applies the settings' language entries to the built-in
// table.
func (s Settings) LanguageSpecs(builtin []daemon.LanguageSpec) ([]daemon.LanguageSpec, error) {
	specs := slices.Clone(builtin)
	for _, ls := range s.Languages {
		i := slices.IndexFunc(specs, func(l daemon.LanguageSpec) bool { return l.Name == ls.Name })
		if ls.Disabled {
			if i >= 0 {
				specs = slices.Delete(specs, i, i+1)
			}
			continue
		}
		var l daemon.LanguageSpec
		if i >= 0 {
			l = specs[i]
		} else if ls.FileName == "" || len(ls.Run) == 0 {
			return nil, fmt.Errorf("config: language %q is new: it needs file_name and run", ls.Name)
		}
		l.Name = ls.Name
		set := func(dst *[]string, src []string) {
			if src != nil {
				*dst = src
			}
		}
		set(&l.Aliases, ls.Aliases)
		set(&l.Extensions, ls.Extensions)
		set(&l.Compile, ls.Compile)
		set(&l.Run, ls.Run)
		set(&l.Version, ls.Version)
		set(&l.Env, ls.Env)
		set(&l.HostPaths, ls.HostPaths)
		if ls.Image != "" {
			l.Image = ls.Image
		}
		if ls.Runtime != "" {
			l.Runtime = ls.Runtime
		}
		if ls.FileName != "" {
			l.FileName = ls.FileName
		}
		if i >= 0 {
			specs[i] = l
		} else {
			specs = append(specs, l)
		}
	}
	return specs, nil
}

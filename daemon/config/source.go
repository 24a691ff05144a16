package config

import (
	"flag"
	"time"
)

// Source is where the settings come from, each over the one before: the
// built-in defaults, the file at Path, and the flags given on Flags's
// command line. A reload loads them again from it.
type Source struct {
	Path     string
	Defaults Settings
	// Flags is the parsed command line; nil for none.
	Flags *flag.FlagSet
}

// Load reads the file over the defaults, then applies the flags given.
func (src Source) Load() (Settings, error) {
	s, err := Load(src.Path, src.Defaults)
	if err != nil {
		return s, err
	}
	if err := ApplyFlags(src.Flags, &s); err != nil {
		return s, err
	}
	return s, s.Validate()
}

// bindFlags defines on fs the flags that override settings, each bound to
// its setting in s, whose values are the flags' defaults. It is the one
// table of them: AddFlags and ApplyFlags both read it.
func bindFlags(fs *flag.FlagSet, s *Settings) {
	fs.StringVar(&s.Socket, "socket", s.Socket, "Unix socket to serve the API on")
	fs.StringVar(&s.Containerd, "containerd", s.Containerd, "containerd socket; empty: "+SystemContainerd+" when it answers, else a managed containerd; \"managed\": always a managed one")
	fs.StringVar(&s.StateDir, "state-dir", s.StateDir, "directory for sandboxd's state")
	fs.StringVar(&s.Namespace, "namespace", s.Namespace, "containerd namespace of everything sandboxd creates; one daemon per namespace")
	fs.StringVar(&s.LogLevel, "log-level", s.LogLevel, "debug, info, warn or error")
	fs.StringVar(&s.LogFormat, "log-format", s.LogFormat, "text or json")
	fs.IntVar(&s.Limits.MaxConcurrent, "max-concurrent", s.Limits.MaxConcurrent, "executions that run at once")
	fs.IntVar(&s.Limits.MaxQueued, "max-queued", s.Limits.MaxQueued, "executions that may wait for a slot; beyond them requests get 429")
	fs.DurationVar((*time.Duration)(&s.ShutdownGrace), "shutdown-grace", time.Duration(s.ShutdownGrace), "how long running executions may finish at shutdown")
	fs.DurationVar((*time.Duration)(&s.ContainerdWait), "containerd-wait", time.Duration(s.ContainerdWait), "how long to wait at start for containerd to answer")
	fs.StringVar(&s.Metrics.Address, "metrics-address", s.Metrics.Address, "also serve /metrics on this TCP address")
}

// AddFlags defines on fs the flags that override settings, showing def's
// values as their defaults.
func AddFlags(fs *flag.FlagSet, def Settings) {
	bindFlags(fs, &def)
}

// ApplyFlags sets in s the settings of the flags given on fs's command
// line; flags left out change nothing, whatever their defaults.
func ApplyFlags(fs *flag.FlagSet, s *Settings) error {
	if fs == nil {
		return nil
	}
	over := flag.NewFlagSet("", flag.ContinueOnError)
	bindFlags(over, s)
	var err error
	fs.Visit(func(f *flag.Flag) {
		if over.Lookup(f.Name) != nil && err == nil {
			err = over.Set(f.Name, f.Value.String())
		}
	})
	return err
}

// RestartOnly returns, for the settings that differ between old and s but
// apply only when the daemon starts, the warnings a reload logs.
func (s Settings) RestartOnly(old Settings) []string {
	var warnings []string
	if s.Socket != old.Socket || s.StateDir != old.StateDir || s.CacheDir != old.CacheDir || s.Containerd != old.Containerd || s.Namespace != old.Namespace || s.Metrics != old.Metrics {
		warnings = append(warnings, "reload: socket, state_dir, cache_dir, containerd, namespace and metrics change only at restart")
	}
	if s.Server.HeaderTimeout != old.Server.HeaderTimeout || s.Server.IdleTimeout != old.Server.IdleTimeout || s.Server.MaxBodyMemory != old.Server.MaxBodyMemory {
		warnings = append(warnings, "reload: server.header_timeout, idle_timeout and max_body_memory change only at restart")
	}
	return warnings
}

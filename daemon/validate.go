package daemon

import (
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// Bounds on what a request may carry beyond the configured limits.
const (
	maxArgs      = 256
	maxEnv       = 128
	maxArgsBytes = 64 << 10
	maxEnvBytes  = 64 << 10
	minMemory    = 16 << 20 // below this not even an interpreter starts
)

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func invalid(format string, args ...any) error {
	return api.Errorf(api.CodeInvalidArgument, format, args...)
}

// validate checks a request against the limits and returns its language,
// timeout and memory limit with defaults applied.
func (s *Server) validate(req *api.ExecuteRequest) (Language, time.Duration, int64, error) {
	l := s.limits()
	if req.Language == "" {
		return Language{}, 0, 0, invalid("language is required (available: %s)", s.languageNames())
	}
	lang, ok := findLanguage(s.langs, req.Language)
	if !ok {
		return Language{}, 0, 0, invalid("unknown language %q (available: %s)", req.Language, s.languageNames())
	}
	if !utf8.ValidString(req.Code) {
		return Language{}, 0, 0, invalid("code is not valid UTF-8")
	}
	if int64(len(req.Code)) > l.MaxCodeBytes {
		return Language{}, 0, 0, invalid("code is %d bytes, more than the maximum of %d", len(req.Code), l.MaxCodeBytes)
	}
	if int64(len(req.Stdin)) > l.MaxStdinBytes {
		return Language{}, 0, 0, invalid("stdin is %d bytes, more than the maximum of %d", len(req.Stdin), l.MaxStdinBytes)
	}
	timeout := l.DefaultTimeout
	switch {
	case req.TimeoutMS < 0:
		return Language{}, 0, 0, invalid("timeout_ms %d is negative", req.TimeoutMS)
	case req.TimeoutMS > l.MaxTimeout.Milliseconds():
		return Language{}, 0, 0, invalid("timeout_ms %d is more than the maximum of %d", req.TimeoutMS, l.MaxTimeout.Milliseconds())
	case req.TimeoutMS > 0:
		timeout = time.Duration(req.TimeoutMS) * time.Millisecond
	}
	memory := l.DefaultMemory
	switch {
	case req.MemoryBytes < 0:
		return Language{}, 0, 0, invalid("memory_bytes %d is negative", req.MemoryBytes)
	case req.MemoryBytes > l.MaxMemory:
		return Language{}, 0, 0, invalid("memory_bytes %d is more than the maximum of %d", req.MemoryBytes, l.MaxMemory)
	case req.MemoryBytes > 0 && req.MemoryBytes < minMemory:
		return Language{}, 0, 0, invalid("memory_bytes %d is less than the minimum of %d", req.MemoryBytes, minMemory)
	case req.MemoryBytes > 0:
		memory = req.MemoryBytes
	}
	if len(req.Args) > maxArgs {
		return Language{}, 0, 0, invalid("%d args, more than the maximum of %d", len(req.Args), maxArgs)
	}
	size := 0
	for _, a := range req.Args {
		if strings.IndexByte(a, 0) >= 0 {
			return Language{}, 0, 0, invalid("an arg contains a NUL byte")
		}
		size += len(a)
	}
	if size > maxArgsBytes {
		return Language{}, 0, 0, invalid("args are %d bytes, more than the maximum of %d", size, maxArgsBytes)
	}
	if len(req.Env) > maxEnv {
		return Language{}, 0, 0, invalid("%d env variables, more than the maximum of %d", len(req.Env), maxEnv)
	}
	size = 0
	for k, v := range req.Env {
		if !envNameRE.MatchString(k) {
			return Language{}, 0, 0, invalid("env name %q is not a valid variable name", k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return Language{}, 0, 0, invalid("env %s contains a NUL byte", k)
		}
		size += len(k) + len(v)
	}
	if size > maxEnvBytes {
		return Language{}, 0, 0, invalid("env is %d bytes, more than the maximum of %d", size, maxEnvBytes)
	}
	return lang, timeout, memory, nil
}

func (s *Server) languageNames() string {
	names := make([]string, len(s.langs))
	for i, l := range s.langs {
		names[i] = l.Name
	}
	return strings.Join(names, ", ")
}

package daemon

import (
	"encoding/base64"
	"io"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sandboxd/sandboxd/daemon/api"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// Bounds on what a request may carry beyond the configured limits.
const (
	maxArgs      = 256
	maxEnv       = 128
	maxArgsBytes = 64 << 10
	maxEnvBytes  = 64 << 10
)

// MinMemory is the least memory a sandbox may be given: below it not even
// an interpreter starts.
const MinMemory = 16 << 20

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func invalid(format string, args ...any) error {
	return api.Errorf(api.CodeInvalidArgument, format, args...)
}

// checked is a request that passed validate, with defaults applied and
// its files decoded.
type checked struct {
	lang    Language
	class   sandboxClass
	timeout time.Duration
	memory  int64
	files   []sandbox.File
	// cell: the code runs as a cell of its session's interpreter.
	cell bool
}

// validate checks a request against the limits. In a session, the
// language defaults to the session's, and memory is the session's.
func (s *Server) validate(req *api.ExecuteRequest, sessionLang string) (checked, error) {
	c, err := s.check(req, sessionLang)
	if err != nil {
		return checked{}, err
	}
	if c.files, err = s.workspaceFiles(req); err != nil {
		return checked{}, err
	}
	if err := checkCollect(req.Collect); err != nil {
		return checked{}, err
	}
	return c, nil
}

func (s *Server) check(req *api.ExecuteRequest, sessionLang string) (checked, error) {
	l := s.limits()
	name := req.Language
	if name == "" {
		name = sessionLang
	}
	lang, err := s.lookupLanguage(name)
	if err != nil {
		return checked{}, err
	}
	l = lang.withDefaults(l)
	if !utf8.ValidString(req.Code) {
		return checked{}, invalid("code is not valid UTF-8")
	}
	if int64(len(req.Code)) > l.MaxCodeBytes {
		return checked{}, invalid("code is %d bytes, more than the maximum of %d", len(req.Code), l.MaxCodeBytes)
	}
	if int64(len(req.Stdin)) > l.MaxStdinBytes {
		return checked{}, invalid("stdin is %d bytes, more than the maximum of %d", len(req.Stdin), l.MaxStdinBytes)
	}
	timeout, err := checkDuration("timeout_ms", req.TimeoutMS, l.DefaultTimeout, l.MaxTimeout)
	if err != nil {
		return checked{}, err
	}
	memory, err := checkMemory(req.MemoryBytes, l)
	if err != nil {
		return checked{}, err
	}
	if sessionLang != "" && req.MemoryBytes != 0 {
		return checked{}, invalid("memory_bytes is set when the session is created, not per execution")
	}
	if len(req.Args) > maxArgs {
		return checked{}, invalid("%d args, more than the maximum of %d", len(req.Args), maxArgs)
	}
	size := 0
	for _, a := range req.Args {
		if strings.IndexByte(a, 0) >= 0 {
			return checked{}, invalid("an arg contains a NUL byte")
		}
		size += len(a)
	}
	if size > maxArgsBytes {
		return checked{}, invalid("args are %d bytes, more than the maximum of %d", size, maxArgsBytes)
	}
	if err := checkEnv(req.Env); err != nil {
		return checked{}, err
	}
	class, err := s.classFor(lang, req.Runtime)
	if err != nil {
		return checked{}, err
	}
	return checked{lang: lang, class: class, timeout: timeout, memory: memory}, nil
}

// classFor is the class of a language's sandboxes, on the runtime a
// request asks for. A request may move a language from runc, the default,
// to another configured runtime (gVisor, say), never away from the one a
// language is configured with: that is the administrator's policy.
func (s *Server) classFor(lang Language, runtime string) (sandboxClass, error) {
	c := lang.class()
	if runtime == "" || runtime == c.Runtime {
		return c, nil
	}
	if c.Runtime != sandbox.DefaultOCIRuntime {
		return c, api.Errorf(api.CodePermissionDenied, "language %s always runs on %s (its configuration says so); runtime %q is refused", lang.Name, c.Runtime, truncate(runtime, 40))
	}
	if !slices.Contains(s.ociRuntimes, runtime) {
		return c, invalid("unknown runtime %q (available: %s)", truncate(runtime, 40), strings.Join(append([]string{sandbox.DefaultOCIRuntime}, s.ociRuntimes...), ", "))
	}
	c.Runtime = runtime
	return c, nil
}

// Bounds on the files of a submission and on what is collected.
const (
	maxFiles = 1000
	maxGlobs = 32
)

// workspaceFiles decodes and checks a submission's files: relative paths
// that stay in /workspace, no NUL, within the size cap; the entrypoint is
// one of them.
func (s *Server) workspaceFiles(req *api.ExecuteRequest) ([]sandbox.File, error) {
	if len(req.Files) > maxFiles {
		return nil, invalid("%d files, more than the maximum of %d", len(req.Files), maxFiles)
	}
	var total int64
	files := make([]sandbox.File, 0, len(req.Files))
	seen := map[string]bool{}
	for i, f := range req.Files {
		p, err := checkFilePath(f.Path)
		if err != nil {
			return nil, err
		}
		if seen[p] {
			return nil, invalid("file %q is given twice", p)
		}
		seen[p] = true
		data := []byte(f.Content)
		switch f.Encoding {
		case "", "utf-8":
		case api.EncodingBase64:
			if data, err = decodeBase64(f.Content); err != nil {
				return nil, invalid("file %q: content is not base64: %v", p, err)
			}
		default:
			return nil, invalid("file %q: encoding %q is not utf-8 or base64", p, f.Encoding)
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		if mode > 0o777 {
			return nil, invalid("file %q: mode %o is not a permission", p, mode)
		}
		if total += int64(len(data)); total > s.limits().MaxFileBytes {
			return nil, invalid("files are more than the maximum of %d bytes", s.limits().MaxFileBytes)
		}
		files = append(files, sandbox.File{Path: p, Data: data, Mode: mode})
		// The decoded data is the file from now on: the request no
		// longer holds it a second time.
		req.Files[i].Content = ""
	}
	if req.Entrypoint != "" {
		p, err := checkFilePath(req.Entrypoint)
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			return nil, invalid("entrypoint %q is not one of the files", req.Entrypoint)
		}
		if req.Code != "" {
			return nil, invalid("code and entrypoint are exclusive: the entrypoint is the code")
		}
	}
	return files, nil
}

func checkCollect(globs []string) error {
	if len(globs) > maxGlobs {
		return invalid("%d collect globs, more than the maximum of %d", len(globs), maxGlobs)
	}
	for _, g := range globs {
		if _, err := checkFilePath(g); err != nil {
			return err
		}
		if _, err := path.Match(g, ""); err != nil {
			return invalid("collect glob %q: %v", truncate(g, 80), err)
		}
	}
	return nil
}

// checkDuration applies a default to a duration in milliseconds and checks
// it against a maximum.
func checkDuration(name string, ms int64, def, max time.Duration) (time.Duration, error) {
	switch {
	case ms < 0:
		return 0, invalid("%s %d is negative", name, ms)
	case ms > max.Milliseconds():
		return 0, invalid("%s %d is more than the maximum of %d", name, ms, max.Milliseconds())
	case ms == 0:
		return def, nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}

func checkMemory(bytes int64, l Limits) (int64, error) {
	switch {
	case bytes < 0:
		return 0, invalid("memory_bytes %d is negative", bytes)
	case bytes > l.MaxMemory:
		return 0, invalid("memory_bytes %d is more than the maximum of %d", bytes, l.MaxMemory)
	case bytes > 0 && bytes < MinMemory:
		return 0, invalid("memory_bytes %d is less than the minimum of %d", bytes, MinMemory)
	case bytes == 0:
		return l.DefaultMemory, nil
	}
	return bytes, nil
}

func checkEnv(env map[string]string) error {
	if len(env) > maxEnv {
		return invalid("%d env variables, more than the maximum of %d", len(env), maxEnv)
	}
	size := 0
	for k, v := range env {
		if !envNameRE.MatchString(k) {
			return invalid("env name %q is not a valid variable name", truncate(k, 80))
		}
		if strings.IndexByte(v, 0) >= 0 {
			return invalid("env %s contains a NUL byte", k)
		}
		size += len(k) + len(v)
	}
	if size > maxEnvBytes {
		return invalid("env is %d bytes, more than the maximum of %d", size, maxEnvBytes)
	}
	return nil
}

// lookupLanguage finds a language by its name or an alias; the error lists
// those available, or says what a defined language whose tool the host
// lacks needs.
func (s *Server) lookupLanguage(name string) (Language, error) {
	if name == "" {
		return Language{}, invalid("language is required (available: %s)", s.languageNames())
	}
	lang, ok := findLanguage(s.languages(), name)
	if !ok {
		if lang, ok := findLanguage(s.missingLanguages(), name); ok {
			return Language{}, api.Errorf(api.CodeUnavailable, "language %s is unavailable: %s", lang.Name, lang.missingReason())
		}
		return Language{}, invalid("unknown language %q (available: %s)", truncate(name, 80), s.languageNames())
	}
	return lang, nil
}

func (s *Server) languageNames() string {
	names := make([]string, len(s.languages()))
	for i, l := range s.languages() {
		names[i] = l.Name
	}
	return strings.Join(names, ", ")
}

// decodeBase64 decodes s from its string, without DecodeString's copy of
// it as bytes: a submitted file may be tens of MiB.
func decodeBase64(s string) ([]byte, error) {
	data := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	dec := base64.NewDecoder(base64.StdEncoding, strings.NewReader(s))
	n := 0
	for {
		m, err := dec.Read(data[n:])
		n += m
		switch {
		case err == io.EOF:
			return data[:n], nil
		case err != nil:
			return nil, err // io.ErrUnexpectedEOF: a truncated quantum
		case n == len(data):
			// DecodedLen is the most s holds: only the end may follow.
			if m, err := dec.Read(make([]byte, 1)); m > 0 || err != io.EOF {
				return nil, base64.CorruptInputError(len(s))
			}
			return data, nil
		}
	}
}

package ctl

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// Version is sandboxctl's version, set at build time.
var Version = "dev"

// Exit statuses of execute beyond the program's own, as docker run and
// coreutils timeout have them.
const (
	ExitTimedOut = 124
	ExitFailed   = 125 // sandboxctl or the daemon failed
	ExitKilled   = 137
	exitUsage    = 2
)

type globals struct {
	socket  string
	format  string
	verbose bool
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.socket, "socket", g.socket, "sandboxd's socket (env SANDBOXD_SOCKET)")
	fs.StringVar(&g.format, "o", g.format, "output format: text or json; execute also takes ndjson (its events)")
	fs.StringVar(&g.format, "output-format", g.format, "output format: text or json; execute also takes ndjson (its events)")
	fs.BoolVar(&g.verbose, "v", g.verbose, "verbose: say more on stderr")
	fs.BoolVar(&g.verbose, "verbose", g.verbose, "verbose: say more on stderr")
}

type cli struct {
	globals
	stdin          io.Reader
	stdout, stderr io.Writer
}

type runFunc func(c *cli, ctx context.Context, args []string) int

// noFlags is for commands with only the global flags.
func noFlags(f runFunc) func(*flag.FlagSet) runFunc {
	return func(*flag.FlagSet) runFunc { return f }
}

type command struct {
	name, args, help string
	flags            func(*flag.FlagSet) runFunc
}

var commands = []command{
	{"execute", "-l LANG -c CODE|FILE|- [flags] [ARGS...]", "run code in a fresh sandbox", executeFlags},
	{"session", "create|list|show|delete|files|upload|download ...", "work with sessions: sandboxes that keep their files across executions", noFlags((*cli).session)},
	{"languages", "", "list the languages the daemon offers", noFlags((*cli).languages)},
	{"image", "import|list|pull|rm ...", "manage the OCI images languages run from", noFlags((*cli).image)},
	{"info", "", "show the daemon's version, containerd and limits", noFlags((*cli).info)},
	{"doctor", "", "check the host and the daemon, with a fix for each problem", noFlags((*cli).doctor)},
	{"mcp", "", "serve the Model Context Protocol on stdin/stdout, for AI agents", noFlags((*cli).mcp)},
	{"version", "", "print sandboxctl's and the daemon's versions", noFlags((*cli).version)},
}

// Run runs sandboxctl with args (without the program name) and returns the
// exit status.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr}
	c.socket = os.Getenv("SANDBOXD_SOCKET")
	if c.socket == "" {
		c.socket = api.DefaultSocket
	}
	c.format = "text"
	top := flag.NewFlagSet("sandboxctl", flag.ContinueOnError)
	top.SetOutput(stderr)
	c.register(top)
	top.Usage = func() { c.usage(top) }
	if err := top.Parse(args); err != nil {
		return flagExit(err)
	}
	if top.NArg() == 0 {
		c.usage(top)
		return exitUsage
	}
	name := top.Arg(0)
	if name == "help" {
		c.usage(top)
		return 0
	}
	i := slices.IndexFunc(commands, func(cmd command) bool { return cmd.name == name })
	if i < 0 {
		fmt.Fprintf(stderr, "sandboxctl: unknown command %q\n", name)
		c.usage(top)
		return exitUsage
	}
	cmd := commands[i]
	fs := flag.NewFlagSet("sandboxctl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs)
	runCmd := cmd.flags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: sandboxctl %s %s\n\n%s\n\nflags:\n", name, cmd.args, cmd.help)
		fs.PrintDefaults()
	}
	failed := exitUsage
	if name == "execute" {
		failed = ExitFailed
	}
	if err := fs.Parse(top.Args()[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return failed
	}
	if c.format != "text" && c.format != "json" && !(c.format == "ndjson" && name == "execute") {
		fmt.Fprintf(stderr, "sandboxctl: -o %q: want text or json (or ndjson for execute)\n", c.format)
		return failed
	}
	return runCmd(c, ctx, fs.Args())
}

func flagExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return exitUsage
}

func (c *cli) usage(fs *flag.FlagSet) {
	fmt.Fprintf(c.stderr, "usage: sandboxctl [--socket PATH] [-o text|json] [-v] <command> [flags] [args]\n\ncommands:\n")
	tw := tabwriter.NewWriter(c.stderr, 2, 8, 2, ' ', 0)
	for _, cmd := range commands {
		fmt.Fprintf(tw, "  %s\t%s\n", cmd.name, cmd.help)
	}
	tw.Flush()
	fmt.Fprintf(c.stderr, "\nglobal flags (before or after the command):\n")
	fs.PrintDefaults()
}

// fail reports an error the way the output format wants, and returns code.
func (c *cli) fail(err error, code int) int {
	if c.format == "json" {
		e, ok := err.(*api.Error)
		if !ok {
			e = &api.Error{Code: api.CodeInvalidArgument, Message: err.Error()}
		}
		c.printJSON(e)
	} else {
		fmt.Fprintln(c.stderr, "sandboxctl:", err)
	}
	return code
}

func (c *cli) printJSON(v any) {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

type execOptions struct {
	language, code, input, inputFile, memory, session string
	noStream                                          bool
	files, collect                                    listFlag
	dir, entrypoint, collectDir, runtime              string
	timeout                                           float64
	env                                               envFlag
}

// listFlag is a flag that may be given many times.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

type envFlag map[string]string

func (e envFlag) String() string { return "" }
func (e envFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("%q is not KEY=VALUE", s)
	}
	e[k] = v
	return nil
}

func executeFlags(fs *flag.FlagSet) runFunc {
	o := &execOptions{env: envFlag{}}
	for _, n := range []string{"l", "language"} {
		fs.StringVar(&o.language, n, "", "language (see sandboxctl languages); may be left out when -c names a file")
	}
	for _, n := range []string{"c", "code"} {
		fs.StringVar(&o.code, n, "", "code inline, a file holding it, or - for standard input")
	}
	for _, n := range []string{"t", "timeout"} {
		fs.Float64Var(&o.timeout, n, 0, "timeout in seconds (default: the daemon's)")
	}
	fs.StringVar(&o.memory, "memory", "", "memory limit, such as 512m or 1g (default: the daemon's)")
	for _, n := range []string{"i", "input"} {
		fs.StringVar(&o.input, n, "", "the program's standard input, or - to pass on sandboxctl's (live, as it comes, when output is streamed)")
	}
	fs.StringVar(&o.inputFile, "input-file", "", "file to use as the program's standard input")
	fs.Var(o.env, "env", "KEY=VALUE for the program's environment (repeatable)")
	fs.StringVar(&o.session, "session", "", "run in this session (see sandboxctl session); -l defaults to the session's language")
	fs.BoolVar(&o.noStream, "no-stream", false, "in text mode, wait for the whole result instead of printing output as it comes")
	fs.Var(&o.files, "f", "a file to place in /workspace (repeatable); without -c, the first is the entrypoint")
	fs.StringVar(&o.dir, "d", "", "a directory whose files are placed in /workspace (with --entrypoint)")
	fs.StringVar(&o.entrypoint, "entrypoint", "", "the file of -f or -d to run")
	fs.Var(&o.collect, "collect", "a glob of files under /workspace to return after the run (repeatable)")
	fs.StringVar(&o.collectDir, "collect-dir", "", "write the returned files under this directory")
	fs.StringVar(&o.runtime, "runtime", "", "OCI runtime, such as runsc (gVisor), for a language that runs on runc by default")
	return func(c *cli, ctx context.Context, args []string) int { return c.execute(ctx, o, args) }
}

func (c *cli) execute(ctx context.Context, o *execOptions, args []string) int {
	client := NewClient(c.socket)
	req := &api.ExecuteRequest{Language: o.language, Args: args, Env: o.env, SessionID: o.session, Runtime: o.runtime}
	if len(o.env) == 0 {
		req.Env = nil
	}
	if len(req.Args) == 0 {
		req.Args = nil
	}
	if err := o.addFiles(req); err != nil {
		return c.fail(err, ExitFailed)
	}
	req.Collect = o.collect
	if o.code == "" && req.Entrypoint == "" {
		return c.fail(errors.New("no code: pass -c CODE, -c FILE, -c -, or -f FILE"), ExitFailed)
	}
	if req.Entrypoint != "" && req.Language == "" && req.SessionID == "" {
		lang, err := c.languageOf(ctx, client, req.Entrypoint)
		if err != nil {
			return c.fail(err, ExitFailed)
		}
		req.Language = lang
	}
	if o.code == "-" && o.input == "-" {
		return c.fail(errors.New("-c - and -i - both want standard input"), ExitFailed)
	}
	switch {
	case o.code == "":
	case o.code == "-":
		b, err := io.ReadAll(c.stdin)
		if err != nil {
			return c.fail(fmt.Errorf("read code from stdin: %w", err), ExitFailed)
		}
		req.Code = string(b)
	case isFile(o.code):
		b, err := os.ReadFile(o.code)
		if err != nil {
			return c.fail(err, ExitFailed)
		}
		req.Code = string(b)
		if req.Language == "" {
			// In a session, a file of no known language runs in the
			// session's own.
			lang, err := c.languageOf(ctx, client, o.code)
			if err != nil && req.SessionID == "" {
				return c.fail(err, ExitFailed)
			}
			req.Language = lang
		}
	default:
		req.Code = o.code
	}
	if req.Language == "" && req.SessionID == "" {
		return c.fail(errors.New("no language: pass -l LANG (see sandboxctl languages)"), ExitFailed)
	}
	switch {
	case o.input != "" && o.inputFile != "":
		return c.fail(errors.New("-i and --input-file are exclusive"), ExitFailed)
	case o.input == "-" && (c.format == "ndjson" || c.format == "text" && !o.noStream):
		// Forwarded live while the program runs, once it has started.
		req.StdinStream = true
	case o.input == "-":
		b, err := io.ReadAll(c.stdin)
		if err != nil {
			return c.fail(fmt.Errorf("read input: %w", err), ExitFailed)
		}
		req.Stdin = string(b)
	case o.inputFile != "":
		b, err := os.ReadFile(o.inputFile)
		if err != nil {
			return c.fail(err, ExitFailed)
		}
		req.Stdin = string(b)
	default:
		req.Stdin = o.input
	}
	if o.timeout < 0 {
		return c.fail(fmt.Errorf("-t %v: the timeout must be positive", o.timeout), ExitFailed)
	}
	req.TimeoutMS = int64(o.timeout * 1000)
	if o.memory != "" {
		n, err := ParseSize(o.memory)
		if err != nil {
			return c.fail(fmt.Errorf("--memory: %w", err), ExitFailed)
		}
		req.MemoryBytes = n
	}
	var res *api.ExecuteResult
	var err error
	streamed := false
	// feed sends live stdin once the start event names the execution.
	feed := func(ev api.StreamEvent) {
		if req.StdinStream && ev.Type == api.EventStart {
			go client.SendStdin(ctx, ev.ID, c.stdin)
		}
	}
	switch {
	case c.format == "ndjson":
		enc := json.NewEncoder(c.stdout)
		res, err = client.ExecuteStream(ctx, req, func(ev api.StreamEvent) error { feed(ev); return enc.Encode(ev) })
		if err == nil {
			enc.Encode(api.ResultEvent{Type: api.EventResult, ExecuteResult: *res})
		}
	case c.format == "text" && !o.noStream:
		streamed = true
		res, err = client.ExecuteStream(ctx, req, func(ev api.StreamEvent) error {
			feed(ev)
			w := c.stdout
			if ev.Type == api.EventStderr {
				w = c.stderr
			} else if ev.Type != api.EventStdout {
				return nil
			}
			return writeStream(w, ev.Data, ev.Encoding)
		})
	default:
		res, err = client.Execute(ctx, req)
	}
	if err != nil {
		return c.fail(err, ExitFailed)
	}
	if c.verbose && client.ServerVersion != "" && client.ServerVersion != Version {
		fmt.Fprintf(c.stderr, "sandboxctl: warning: sandboxctl is %s but sandboxd is %s\n", Version, client.ServerVersion)
	}
	switch {
	case c.format == "json":
		c.printJSON(res)
	case c.format == "ndjson":
	default:
		if streamed {
			break
		}
		if err := writeStream(c.stdout, res.Stdout, res.StdoutEncoding); err != nil {
			return c.fail(fmt.Errorf("stdout: %w", err), ExitFailed)
		}
		if err := writeStream(c.stderr, res.Stderr, res.StderrEncoding); err != nil {
			return c.fail(fmt.Errorf("stderr: %w", err), ExitFailed)
		}
	}
	if c.format == "text" && (res.StdoutTruncated || res.StderrTruncated) {
		fmt.Fprintln(c.stderr, "sandboxctl: output truncated at the daemon's cap")
	}
	if c.format == "text" && res.Message != "" {
		fmt.Fprintln(c.stderr, "sandboxctl: "+res.Message)
	}
	if o.collectDir != "" {
		if err := writeCollected(o.collectDir, res.Files, c.stderr); err != nil {
			return c.fail(fmt.Errorf("--collect-dir: %w", err), ExitFailed)
		}
	}
	if c.verbose {
		fmt.Fprintf(c.stderr, "id=%s status=%s exit_code=%d duration=%dms cpu=%dms memory_peak=%d\n",
			res.ID, res.Status, res.ExitCode, res.DurationMS, res.Usage.CPUMS, res.Usage.MemoryPeakBytes)
	}
	return ExitCode(res)
}

// addFiles puts the files of -f and -d in the request, and picks the
// entrypoint.
func (o *execOptions) addFiles(req *api.ExecuteRequest) error {
	add := func(local, remote string) error {
		data, err := os.ReadFile(local)
		if err != nil {
			return err
		}
		f := api.File{Path: remote, Content: string(data)}
		if !utf8.Valid(data) {
			f.Content, f.Encoding = base64.StdEncoding.EncodeToString(data), api.EncodingBase64
		}
		if fi, err := os.Stat(local); err == nil {
			f.Mode = uint32(fi.Mode().Perm())
		}
		req.Files = append(req.Files, f)
		return nil
	}
	for _, f := range o.files {
		remote := filepath.ToSlash(f)
		if !filepath.IsLocal(f) {
			remote = filepath.Base(f)
		}
		if err := add(f, remote); err != nil {
			return err
		}
	}
	if o.dir != "" {
		err := filepath.WalkDir(o.dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			rel, err := filepath.Rel(o.dir, p)
			if err != nil {
				return err
			}
			return add(p, filepath.ToSlash(rel))
		})
		if err != nil {
			return err
		}
	}
	switch {
	case o.entrypoint != "":
		req.Entrypoint = o.entrypoint
	case o.code == "" && len(o.files) > 0:
		req.Entrypoint = req.Files[0].Path
	case o.code == "" && o.dir != "":
		return errors.New("-d needs --entrypoint to say which file to run")
	}
	return nil
}

// writeCollected writes returned files under dir; a path that would leave
// it is refused.
func writeCollected(dir string, files []api.File, stderr io.Writer) error {
	for _, f := range files {
		if !filepath.IsLocal(filepath.FromSlash(f.Path)) {
			return fmt.Errorf("returned file %q leaves %s", f.Path, dir)
		}
		if f.Truncated {
			fmt.Fprintf(stderr, "sandboxctl: %s (%d bytes) is over the daemon's cap: not returned\n", f.Path, f.Size)
			continue
		}
		data := []byte(f.Content)
		if f.Encoding == api.EncodingBase64 {
			var err error
			if data, err = base64.StdEncoding.DecodeString(f.Content); err != nil {
				return err
			}
		}
		dst := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// ExitCode is sandboxctl execute's exit status for a result.
func ExitCode(res *api.ExecuteResult) int {
	switch res.Status {
	case api.StatusTimedOut:
		return ExitTimedOut
	case api.StatusOOMKilled:
		return ExitKilled
	}
	return res.ExitCode
}

func writeStream(w io.Writer, data, encoding string) error {
	b := []byte(data)
	if encoding == api.EncodingBase64 {
		var err error
		if b, err = base64.StdEncoding.DecodeString(data); err != nil {
			return err
		}
	}
	_, err := w.Write(b)
	return err
}

func isFile(p string) bool {
	if strings.ContainsAny(p, "\n\x00") {
		return false
	}
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// languageOf picks the language whose extensions include the file's.
func (c *cli) languageOf(ctx context.Context, client *Client, file string) (string, error) {
	ext := strings.ToLower(filepath.Ext(file))
	langs, err := client.Languages(ctx)
	if err != nil {
		return "", err
	}
	for _, l := range langs {
		if slices.Contains(l.Extensions, ext) {
			return l.Name, nil
		}
	}
	return "", fmt.Errorf("no language for %q files: pass -l LANG (see sandboxctl languages)", ext)
}

// ParseSize parses a byte count such as 512m, 1g, 64MiB or 1048576.
func ParseSize(s string) (int64, error) { return api.ParseSize(s) }

func (c *cli) languages(ctx context.Context, _ []string) int {
	langs, err := NewClient(c.socket).Languages(ctx)
	if err != nil {
		return c.fail(err, 1)
	}
	if c.format == "json" {
		c.printJSON(api.LanguagesResponse{Languages: langs})
		return 0
	}
	tw := tabwriter.NewWriter(c.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tRUNTIME\tROOT\tALIASES\tEXTENSIONS")
	var unavailable []api.Language
	for _, l := range langs {
		root := "host"
		if l.Image != "" {
			root = l.Image
		}
		name := l.Name
		if l.Unavailable != "" {
			name += " (unavailable)"
			unavailable = append(unavailable, l)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", name, l.Version, l.Runtime, root, strings.Join(l.Aliases, ","), strings.Join(l.Extensions, ","))
	}
	tw.Flush()
	for _, l := range unavailable {
		fmt.Fprintf(c.stdout, "\n%s is unavailable: %s\n", l.Name, l.Unavailable)
	}
	return 0
}

func (c *cli) info(ctx context.Context, _ []string) int {
	info, err := NewClient(c.socket).Info(ctx)
	if err != nil {
		return c.fail(err, 1)
	}
	if c.format == "json" {
		c.printJSON(info)
		return 0
	}
	l := info.Limits
	tw := tabwriter.NewWriter(c.stdout, 2, 8, 2, ' ', 0)
	managed := ""
	if info.ContainerdManaged {
		managed = " (managed by sandboxd)"
	}
	fmt.Fprintf(tw, "version:\t%s\nuptime:\t%ds\ncontainerd:\t%s %s%s\ncgroup version:\t%d\nrunning:\t%d (max %d)\nqueued:\t%d (max %d)\nsessions:\t%d\n",
		info.Version, info.UptimeSeconds, info.ContainerdAddress, info.ContainerdVersion, managed,
		info.CgroupVersion, info.Running, l.MaxConcurrent, info.Queued, l.MaxQueued, info.Sessions)
	fmt.Fprintf(tw, "timeout:\t%dms (max %dms)\nmemory:\t%d (max %d)\ncpus:\t%g\npids:\t%d\ntmpfs:\t%d\noutput cap:\t%d per stream\n",
		l.TimeoutMS, l.MaxTimeoutMS, l.MemoryBytes, l.MaxMemoryBytes, l.CPUs, l.Pids, l.TmpfsBytes, l.OutputBytes)
	tw.Flush()
	return 0
}

func (c *cli) version(ctx context.Context, _ []string) int {
	fmt.Fprintf(c.stdout, "sandboxctl %s\n", Version)
	info, err := NewClient(c.socket).Info(ctx)
	if err != nil {
		fmt.Fprintf(c.stdout, "sandboxd   unreachable (%v)\n", err)
		return 1
	}
	fmt.Fprintf(c.stdout, "sandboxd   %s\n", info.Version)
	return 0
}

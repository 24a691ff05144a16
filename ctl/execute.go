package ctl

import (
	"context"
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

	"github.com/sandboxd/sandboxd/ctl/client"
	"github.com/sandboxd/sandboxd/daemon/api"
)

type execOptions struct {
	language, code, input, inputFile, memory, session string
	noStream                                          bool
	files, collect                                    listFlag
	dir, entrypoint, collectDir, runtime              string
	outputsDir                                        string
	timeout                                           float64
	env                                               envFlag
}

// listFlag is a flag that may be given many times.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// envFlag is a KEY=VALUE flag that may be given many times.
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
		fs.Float64Var(&o.timeout, n, 0, "timeout in seconds (default: sandboxctl -t's, else the daemon's)")
	}
	fs.StringVar(&o.memory, "memory", "", "memory limit, such as 512m or 1g (default: the daemon's)")
	for _, n := range []string{"i", "input"} {
		fs.StringVar(&o.input, n, "", "the program's standard input, or - to pass on sandboxctl's (live, as it comes, when output is streamed)")
	}
	fs.StringVar(&o.inputFile, "input-file", "", "file to use as the program's standard input")
	fs.Var(o.env, "env", "KEY=VALUE for the program's environment (repeatable)")
	for _, n := range []string{"session", "session-id"} {
		fs.StringVar(&o.session, n, "", "run in this session (see sandboxctl session); -l defaults to the session's language")
	}
	fs.BoolVar(&o.noStream, "no-stream", false, "in text mode, wait for the whole result instead of printing output as it comes")
	fs.Var(&o.files, "f", "a file to place in /workspace (repeatable); without -c, the first is the entrypoint")
	fs.StringVar(&o.dir, "d", "", "a directory whose files are placed in /workspace (with --entrypoint)")
	fs.StringVar(&o.entrypoint, "entrypoint", "", "the file of -f or -d to run")
	fs.Var(&o.collect, "collect", "a glob of files under /workspace to return after the run (repeatable)")
	fs.StringVar(&o.collectDir, "collect-dir", "", "write the returned files under this directory")
	fs.StringVar(&o.runtime, "runtime", "", "OCI runtime, such as runsc (gVisor), for a language that runs on runc by default")
	fs.StringVar(&o.outputsDir, "outputs-dir", "", "in an interpreter session, write the cell's rich outputs (figures, HTML…) to files in this directory")
	return func(c *cli, ctx context.Context, args []string) error {
		if !given(fs, "t", "timeout") {
			o.timeout = c.timeout
		}
		return c.execute(ctx, o, args)
	}
}

// execute runs `sandboxctl execute`: it builds the request, runs it, prints
// the result, and ends with the program's exit status.
func (c *cli) execute(ctx context.Context, o *execOptions, args []string) error {
	cl := client.New(c.socket)
	req, err := c.executeRequest(ctx, cl, o, args)
	if err != nil {
		return err
	}
	stdout, stderr := tailWriters(c.stdout, c.stderr, false)
	res, err := c.runExecute(ctx, cl, req, o, stdout, stderr)
	if err != nil {
		return err
	}
	if v := cl.ServerVersion(); c.verbose && v != "" && v != Version {
		fmt.Fprintf(c.stderr, "sandboxctl: warning: sandboxctl is %s but sandboxd is %s\n", Version, v)
	}
	if err := c.printResult(res, o, stdout, stderr); err != nil {
		return err
	}
	if code := ExitCode(res); code != 0 {
		return exitStatus(code)
	}
	return nil
}

// streamsText reports whether execute prints the program's output as it
// comes, rather than from the result.
func (c *cli) streamsText(o *execOptions) bool { return c.format == "text" && !o.noStream }

// executeRequest builds execute's request from its flags, the files they
// name and standard input.
func (c *cli) executeRequest(ctx context.Context, cl *client.Client, o *execOptions, args []string) (*api.ExecuteRequest, error) {
	req := &api.ExecuteRequest{Language: o.language, Args: args, Env: o.env, SessionID: o.session, Runtime: o.runtime}
	if len(o.env) == 0 {
		req.Env = nil
	}
	if len(req.Args) == 0 {
		req.Args = nil
	}
	if err := o.addFiles(req); err != nil {
		return nil, err
	}
	req.Collect = o.collect
	if o.code == "" && req.Entrypoint == "" {
		return nil, errors.New("no code: pass -c CODE, -c FILE, -c -, or -f FILE")
	}
	if req.Entrypoint != "" && req.Language == "" && req.SessionID == "" {
		lang, err := languageOf(ctx, cl, req.Entrypoint)
		if err != nil {
			return nil, err
		}
		req.Language = lang
	}
	if o.code == "-" && o.input == "-" {
		return nil, errors.New("-c - and -i - both want standard input")
	}
	if err := c.addCode(ctx, cl, o, req); err != nil {
		return nil, err
	}
	if req.Language == "" && req.SessionID == "" {
		return nil, errors.New("no language: pass -l LANG (see sandboxctl languages)")
	}
	if err := c.addInput(o, req); err != nil {
		return nil, err
	}
	if o.timeout < 0 {
		return nil, fmt.Errorf("-t %v: the timeout must be positive", o.timeout)
	}
	req.TimeoutMS = int64(o.timeout * 1000)
	if o.memory != "" {
		n, err := api.ParseSize(o.memory)
		if err != nil {
			return nil, fmt.Errorf("--memory: %w", err)
		}
		req.MemoryBytes = n
	}
	return req, nil
}

// addCode puts the code of -c in the request: inline, from a file (whose
// extension may name the language) or from standard input.
func (c *cli) addCode(ctx context.Context, cl *client.Client, o *execOptions, req *api.ExecuteRequest) error {
	switch {
	case o.code == "":
	case o.code == "-":
		b, err := io.ReadAll(c.stdin)
		if err != nil {
			return fmt.Errorf("read code from stdin: %w", err)
		}
		req.Code = string(b)
	case isFile(o.code):
		b, err := os.ReadFile(o.code)
		if err != nil {
			return err
		}
		req.Code = string(b)
		if req.Language == "" {
			// In a session, a file of no known language runs in the
			// session's own.
			lang, err := languageOf(ctx, cl, o.code)
			if err != nil && req.SessionID == "" {
				return err
			}
			req.Language = lang
		}
	default:
		req.Code = o.code
	}
	return nil
}

// addInput puts the program's standard input in the request, or asks for
// it to be streamed.
func (c *cli) addInput(o *execOptions, req *api.ExecuteRequest) error {
	switch {
	case o.input != "" && o.inputFile != "":
		return errors.New("-i and --input-file are exclusive")
	case o.input == "-" && (c.format == "ndjson" || c.streamsText(o)):
		// Forwarded live while the program runs, once it has started.
		req.StdinStream = true
	case o.input == "-":
		b, err := io.ReadAll(c.stdin)
		if err != nil {
			return fmt.Errorf("read input: %w", err)
		}
		req.Stdin = string(b)
	case o.inputFile != "":
		b, err := os.ReadFile(o.inputFile)
		if err != nil {
			return err
		}
		req.Stdin = string(b)
	default:
		req.Stdin = o.input
	}
	return nil
}

// runExecute runs the request: streamed in ndjson (each event printed as
// it comes) and in text unless --no-stream (the program's output printed
// to stdout and stderr as it comes), in one piece otherwise.
func (c *cli) runExecute(ctx context.Context, cl *client.Client, req *api.ExecuteRequest, o *execOptions, stdout, stderr io.Writer) (*api.ExecuteResult, error) {
	// feed sends live stdin once the start event names the execution.
	feed := func(ev api.StreamEvent) {
		if req.StdinStream && ev.Type == api.EventStart {
			go cl.SendStdin(ctx, ev.ID, c.stdin)
		}
	}
	switch {
	case c.format == "ndjson":
		enc := json.NewEncoder(c.stdout)
		res, err := cl.ExecuteStream(ctx, req, func(ev api.StreamEvent) error { feed(ev); return enc.Encode(ev) })
		if err == nil {
			enc.Encode(api.ResultEvent{Type: api.EventResult, ExecuteResult: *res})
		}
		return res, err
	case c.streamsText(o):
		return cl.ExecuteStream(ctx, req, func(ev api.StreamEvent) error {
			feed(ev)
			return writeEvent(ev, stdout, stderr)
		})
	}
	return cl.Execute(ctx, req)
}

// writeEvent writes an output event of a stream to stdout or stderr.
func writeEvent(ev api.StreamEvent, stdout, stderr io.Writer) error {
	switch ev.Type {
	case api.EventStdout:
		return writeStream(stdout, ev.Data, ev.Encoding)
	case api.EventStderr:
		return writeStream(stderr, ev.Data, ev.Encoding)
	}
	return nil
}

// printResult prints what runExecute has not: the result in json, the
// program's output in text with --no-stream, the notes of text, a cell's
// value, exception and rich outputs, the collected files and, with -v,
// the result's figures.
func (c *cli) printResult(res *api.ExecuteResult, o *execOptions, stdout, stderr *tailWriter) error {
	switch {
	case c.format == "json":
		c.printJSON(res)
	case c.format == "text" && !c.streamsText(o):
		out := stdout
		if res.Phase == api.PhaseCompile {
			// The compiler's output is diagnostics, whichever stream it
			// wrote: on stderr, as the stream sends it.
			out = stderr
		}
		if err := writeStream(out, res.Stdout, res.StdoutEncoding); err != nil {
			return fmt.Errorf("stdout: %w", err)
		}
		if err := writeStream(stderr, res.Stderr, res.StderrEncoding); err != nil {
			return fmt.Errorf("stderr: %w", err)
		}
	}
	switch {
	case c.format == "text":
		err := printCell(res, stdout, stderr, cellPrint{outputsDir: o.outputsDir, nameFiles: c.verbose,
			hint: "--outputs-dir DIR writes them to files"})
		if err != nil {
			return err
		}
	case o.outputsDir != "":
		// JSON carries the outputs themselves; the files are asked for too.
		if err := saveOutputs(o.outputsDir, res, stderr, c.verbose); err != nil {
			return err
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
			return fmt.Errorf("--collect-dir: %w", err)
		}
	}
	if c.verbose {
		fmt.Fprintf(c.stderr, "id=%s status=%s phase=%s exit_code=%d duration=%dms cpu=%dms memory_peak=%d\n",
			res.ID, res.Status, res.Phase, res.ExitCode, res.DurationMS, res.Usage.CPUMS, res.Usage.MemoryPeakBytes)
	}
	return nil
}

// addFiles puts the files of -f and -d in the request, and picks the
// entrypoint.
func (o *execOptions) addFiles(req *api.ExecuteRequest) error {
	add := func(local, remote string) error {
		data, err := os.ReadFile(local)
		if err != nil {
			return err
		}
		f := api.File{Path: remote}
		f.Content, f.Encoding = client.EncodeContent(data)
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
		data, err := client.DecodeContent(f.Content, f.Encoding)
		if err != nil {
			return err
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
	case api.StatusFailed:
		// A cell that raised fails whatever exit code the interpreter,
		// which goes on running, reports.
		if res.ExitCode == 0 {
			return 1
		}
	}
	return res.ExitCode
}

// writeStream writes output the API carries in encoding to w.
func writeStream(w io.Writer, data, encoding string) error {
	b, err := client.DecodeContent(data, encoding)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
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
func languageOf(ctx context.Context, cl *client.Client, file string) (string, error) {
	ext := strings.ToLower(filepath.Ext(file))
	langs, err := cl.Languages(ctx)
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

// Package ctl is sandboxctl: its commands, their flags and their output.
// The Go client it drives is package client; the MCP server of
// sandboxctl mcp is package mcp.
package ctl

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// Version is sandboxctl's version, set at build time.
var Version = "dev"

type globals struct {
	socket  string
	format  string
	verbose bool
	// timeout is -t before the command: execute's timeout when execute
	// has no -t of its own. Other commands take none.
	timeout float64
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.socket, "socket", g.socket, "sandboxd's socket (env SANDBOXD_SOCKET)")
	fs.StringVar(&g.format, "o", g.format, "output format: text or json; execute also takes ndjson (its events)")
	fs.StringVar(&g.format, "output-format", g.format, "output format: text or json; execute also takes ndjson (its events)")
	fs.BoolVar(&g.verbose, "v", g.verbose, "verbose: say more on stderr")
	fs.BoolVar(&g.verbose, "verbose", g.verbose, "verbose: say more on stderr")
}

// registerTimeout registers -t and --timeout before the command; after
// the command, they are execute's own flags.
func (g *globals) registerTimeout(fs *flag.FlagSet) {
	for _, n := range []string{"t", "timeout"} {
		fs.Float64Var(&g.timeout, n, 0, "execute's timeout (repl's, of each cell) in seconds, as their own -t (which wins when both are given)")
	}
}

type cli struct {
	globals
	stdin          io.Reader
	stdout, stderr io.Writer
}

// runFunc runs a command with its positional arguments. What it returns
// becomes sandboxctl's exit status and message in one place, exit.
type runFunc func(c *cli, ctx context.Context, args []string) error

// noFlags is for commands with only the global flags.
func noFlags(f runFunc) func(*flag.FlagSet) runFunc {
	return func(*flag.FlagSet) runFunc { return f }
}

// command is a command, or a command of a group such as session create.
type command struct {
	name, args, help string
	// nargs bounds a group's command's positional arguments (least and
	// most); the flags of such a command may also come after them.
	nargs [2]int
	// flags registers the command's own flags, and returns its run.
	flags func(*flag.FlagSet) runFunc
}

var commands = []command{
	{name: "execute", args: "-l LANG -c CODE|FILE|- [flags] [ARGS...]", help: "run code in a fresh sandbox", flags: executeFlags},
	{name: "session", args: "create|list|show|delete|restart|files|upload|download ...", help: "work with sessions: sandboxes that keep their files across executions",
		flags: noFlags(group("session", sessionCommands))},
	{name: "repl", args: "-l python|javascript [--keep] [--outputs-dir DIR] | --session ID", help: "an interactive interpreter in a sandbox, its state kept from one input to the next",
		flags: replFlags},
	{name: "languages", help: "list the languages the daemon offers", flags: noFlags((*cli).languages)},
	{name: "image", args: "import|list|pull|rm ...", help: "manage the OCI images languages run from", flags: noFlags(group("image", imageCommands))},
	{name: "info", help: "show the daemon's version, containerd and limits", flags: noFlags((*cli).info)},
	{name: "doctor", help: "check the host and the daemon, with a fix for each problem", flags: noFlags((*cli).doctor)},
	{name: "health", args: "[--ready|--live]", help: "check that the daemon can run sandboxes (exit 1 if not): a probe", flags: healthFlags},
	{name: "drain", args: "[--timeout DURATION]", help: "stop taking new work and wait for what runs (root; before a restart)", flags: drainFlags},
	{name: "mcp", help: "serve the Model Context Protocol on stdin/stdout, for AI agents", flags: noFlags((*cli).mcp)},
	{name: "version", help: "print sandboxctl's and the daemon's versions", flags: noFlags((*cli).version)},
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
	name, err := c.run(ctx, args)
	return c.exit(name, err)
}

// run parses the command line and runs the command it names; it returns
// the command's name ("" when none was found) and its error.
func (c *cli) run(ctx context.Context, args []string) (string, error) {
	top := flag.NewFlagSet("sandboxctl", flag.ContinueOnError)
	top.SetOutput(c.stderr)
	c.register(top)
	c.registerTimeout(top)
	top.Usage = func() { c.usage(top) }
	if err := top.Parse(args); err != nil {
		return "", parseError(err)
	}
	if top.NArg() == 0 {
		return "", &usageError{usage: top.Usage}
	}
	name := top.Arg(0)
	if name == "help" {
		c.usage(top)
		return "", nil
	}
	i := slices.IndexFunc(commands, func(cmd command) bool { return cmd.name == name })
	if i < 0 {
		return "", &usageError{err: fmt.Errorf("unknown command %q", name), usage: top.Usage}
	}
	if given(top, "t", "timeout") && name != "execute" && name != "repl" {
		return name, &usageError{err: fmt.Errorf("-t/--timeout is the timeout of an execution: %s takes none", name)}
	}
	cmd := commands[i]
	fs := c.flagSet("sandboxctl "+name, cmd)
	run := cmd.flags(fs)
	if err := fs.Parse(top.Args()[1:]); err != nil {
		return name, parseError(err)
	}
	if c.format != "text" && c.format != "json" && !(c.format == "ndjson" && name == "execute") {
		return name, &usageError{err: fmt.Errorf("-o %q: want text or json (or ndjson for execute)", c.format)}
	}
	return name, run(c, ctx, fs.Args())
}

// group returns the run of a group of commands, such as session, which
// runs `sandboxctl GROUP COMMAND`.
func group(name string, cmds []command) runFunc {
	return func(c *cli, ctx context.Context, args []string) error {
		usage := func() { c.groupUsage(name, cmds) }
		if len(args) == 0 {
			return &usageError{usage: usage}
		}
		i := slices.IndexFunc(cmds, func(cmd command) bool { return cmd.name == args[0] })
		if i < 0 {
			return &usageError{err: fmt.Errorf("unknown %s command %q", name, args[0]), usage: usage}
		}
		cmd := cmds[i]
		fs := c.flagSet("sandboxctl "+name+" "+cmd.name, cmd)
		run := cmd.flags(fs)
		pos, err := parseInterleaved(fs, args[1:])
		if err != nil {
			return parseError(err)
		}
		if len(pos) < cmd.nargs[0] || len(pos) > cmd.nargs[1] {
			return &usageError{usage: fs.Usage}
		}
		return run(c, ctx, pos)
	}
}

// flagSet returns the flag set of cmd, called name on the command line,
// with the global flags.
func (c *cli) flagSet(name string, cmd command) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	c.register(fs)
	fs.Usage = func() {
		fmt.Fprintf(c.stderr, "usage: %s %s\n\n%s\n\nflags:\n", name, cmd.args, cmd.help)
		fs.PrintDefaults()
	}
	return fs
}

// given reports whether any of the flags names was set on the command line.
func given(fs *flag.FlagSet, names ...string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || slices.Contains(names, f.Name) })
	return set
}

// parseInterleaved parses flags that come before, between or after the
// positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		if args = fs.Args(); args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

func (c *cli) usage(fs *flag.FlagSet) {
	fmt.Fprintf(c.stderr, "usage: sandboxctl [--socket PATH] [-o text|json] [-v] [-t SECONDS] <command> [flags] [args]\n\ncommands:\n")
	tw := tabwriter.NewWriter(c.stderr, 2, 8, 2, ' ', 0)
	for _, cmd := range commands {
		fmt.Fprintf(tw, "  %s\t%s\n", cmd.name, cmd.help)
	}
	tw.Flush()
	fmt.Fprintf(c.stderr, "\nglobal flags (before or after the command; -t and --timeout go with execute and repl only):\n")
	fs.PrintDefaults()
}

func (c *cli) groupUsage(group string, cmds []command) {
	fmt.Fprintf(c.stderr, "usage: sandboxctl %s <command> [flags] [args]\n\ncommands:\n", group)
	tw := tabwriter.NewWriter(c.stderr, 2, 8, 2, ' ', 0)
	for _, cmd := range cmds {
		fmt.Fprintf(tw, "  %s %s\t%s\n", cmd.name, cmd.args, cmd.help)
	}
	tw.Flush()
}

func (c *cli) printJSON(v any) {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

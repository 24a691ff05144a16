package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// subcommand is a command of a group, such as session create.
type subcommand struct {
	name, args, help string
	nargs            [2]int // least and most positional arguments
	flags            func(fs *flag.FlagSet) func(c *cli, ctx context.Context, client *Client, args []string) error
}

var sessionCommands = []subcommand{
	{"create", "-l LANG [--memory SIZE] [--idle-timeout D] [--max-lifetime D]", "create a session; prints its id", [2]int{0, 0}, sessionCreateFlags},
	{"list", "", "list your sessions (all of them for root)", [2]int{0, 0}, noSessionFlags((*cli).sessionList)},
	{"show", "ID", "show a session", [2]int{1, 1}, noSessionFlags((*cli).sessionShow)},
	{"delete", "ID", "destroy a session and everything in it", [2]int{1, 1}, noSessionFlags((*cli).sessionDelete)},
	{"files", "ID", "list a session's /workspace", [2]int{1, 1}, noSessionFlags((*cli).sessionFiles)},
	{"upload", "ID LOCAL [REMOTE]", "copy a local file (- for stdin) into /workspace", [2]int{2, 3}, sessionUploadFlags},
	{"download", "ID REMOTE [LOCAL]", "copy a file of /workspace to a local file (- for stdout)", [2]int{2, 3}, noSessionFlags((*cli).sessionDownload)},
}

func noSessionFlags(f func(c *cli, ctx context.Context, client *Client, args []string) error) func(*flag.FlagSet) func(*cli, context.Context, *Client, []string) error {
	return func(*flag.FlagSet) func(*cli, context.Context, *Client, []string) error { return f }
}

// session runs `sandboxctl session SUBCOMMAND`.
func (c *cli) session(ctx context.Context, args []string) int {
	return c.subcommand(ctx, "session", sessionCommands, args)
}

// subcommand runs `sandboxctl GROUP SUBCOMMAND`.
func (c *cli) subcommand(ctx context.Context, group string, cmds []subcommand, args []string) int {
	if len(args) == 0 {
		c.subcommandUsage(group, cmds)
		return exitUsage
	}
	var cmd *subcommand
	for i := range cmds {
		if cmds[i].name == args[0] {
			cmd = &cmds[i]
		}
	}
	if cmd == nil {
		fmt.Fprintf(c.stderr, "sandboxctl: unknown %s command %q\n", group, args[0])
		c.subcommandUsage(group, cmds)
		return exitUsage
	}
	fs := flag.NewFlagSet("sandboxctl "+group+" "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	c.register(fs)
	run := cmd.flags(fs)
	fs.Usage = func() {
		fmt.Fprintf(c.stderr, "usage: sandboxctl %s %s %s\n\n%s\n\nflags:\n", group, cmd.name, cmd.args, cmd.help)
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return flagExit(err)
	}
	if len(pos) < cmd.nargs[0] || len(pos) > cmd.nargs[1] {
		fs.Usage()
		return exitUsage
	}
	if err := run(c, ctx, NewClient(c.socket), pos); err != nil {
		return c.fail(err, 1)
	}
	return 0
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

func (c *cli) subcommandUsage(group string, cmds []subcommand) {
	fmt.Fprintf(c.stderr, "usage: sandboxctl %s <command> [flags] [args]\n\ncommands:\n", group)
	tw := tabwriter.NewWriter(c.stderr, 2, 8, 2, ' ', 0)
	for _, cmd := range cmds {
		fmt.Fprintf(tw, "  %s %s\t%s\n", cmd.name, cmd.args, cmd.help)
	}
	tw.Flush()
}

func sessionCreateFlags(fs *flag.FlagSet) func(*cli, context.Context, *Client, []string) error {
	var lang, memory string
	var idle, life time.Duration
	env := envFlag{}
	for _, n := range []string{"l", "language"} {
		fs.StringVar(&lang, n, "", "the session's language (others may run in it too)")
	}
	fs.StringVar(&memory, "memory", "", "memory limit of the whole session, such as 512m (default: the daemon's)")
	fs.DurationVar(&idle, "idle-timeout", 0, "destroy the session after this long unused, such as 10m (default: the daemon's)")
	fs.DurationVar(&life, "max-lifetime", 0, "destroy the session this long after its creation, such as 1h (default: the daemon's)")
	fs.Var(env, "env", "KEY=VALUE for every execution's environment (repeatable)")
	var runtime string
	fs.StringVar(&runtime, "runtime", "", "OCI runtime, such as runsc (gVisor), for a language that runs on runc by default")
	return func(c *cli, ctx context.Context, client *Client, _ []string) error {
		req := &api.CreateSessionRequest{Language: lang, IdleTimeoutMS: idle.Milliseconds(), MaxLifetimeMS: life.Milliseconds(), Runtime: runtime}
		if len(env) > 0 {
			req.Env = env
		}
		if memory != "" {
			n, err := ParseSize(memory)
			if err != nil {
				return fmt.Errorf("--memory: %w", err)
			}
			req.MemoryBytes = n
		}
		if lang == "" {
			return errors.New("no language: pass -l LANG (see sandboxctl languages)")
		}
		s, err := client.CreateSession(ctx, req)
		if err != nil {
			return err
		}
		if c.format == "json" {
			c.printJSON(s)
		} else {
			fmt.Fprintln(c.stdout, s.ID)
		}
		return nil
	}
}

func (c *cli) sessionList(ctx context.Context, client *Client, _ []string) error {
	list, err := client.Sessions(ctx)
	if err != nil {
		return err
	}
	if c.format == "json" {
		if list == nil {
			list = []api.Session{}
		}
		c.printJSON(list)
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tLANGUAGE\tSTATE\tEXECUTIONS\tOWNER\tEXPIRES")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", s.ID, s.Language, s.State, s.Executions, s.OwnerUID, s.ExpiresAt)
	}
	return tw.Flush()
}

func (c *cli) sessionShow(ctx context.Context, client *Client, args []string) error {
	s, err := client.Session(ctx, args[0])
	if err != nil {
		return err
	}
	if c.format == "json" {
		c.printJSON(s)
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\nlanguage:\t%s\nstate:\t%s\nowner uid:\t%d\ncreated:\t%s\nlast used:\t%s\nexpires:\t%s\nexecutions:\t%d\nmemory in use:\t%d of %d\n",
		s.ID, s.Language, s.State, s.OwnerUID, s.CreatedAt, s.LastUsedAt, s.ExpiresAt, s.Executions, s.MemoryUsageBytes, s.Limits.MemoryBytes)
	return tw.Flush()
}

func (c *cli) sessionDelete(ctx context.Context, client *Client, args []string) error {
	return client.DeleteSession(ctx, args[0])
}

func (c *cli) sessionFiles(ctx context.Context, client *Client, args []string) error {
	files, err := client.Files(ctx, args[0])
	if err != nil {
		return err
	}
	if c.format == "json" {
		c.printJSON(files)
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PATH\tTYPE\tSIZE\tMODE")
	for _, f := range files {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%04o\n", f.Path, f.Type, f.Size, f.Mode)
	}
	return tw.Flush()
}

func sessionUploadFlags(fs *flag.FlagSet) func(*cli, context.Context, *Client, []string) error {
	var mode string
	fs.StringVar(&mode, "mode", "", "permissions of the file in the sandbox, in octal (default: the local file's, or 644)")
	return func(c *cli, ctx context.Context, client *Client, args []string) error {
		id, local := args[0], args[1]
		remote := path.Base(filepath.ToSlash(local))
		if len(args) == 3 {
			remote = args[2]
		} else if local == "-" {
			return errors.New("upload from stdin needs a REMOTE path")
		}
		perm := uint32(0o644)
		var in io.Reader = c.stdin
		if local != "-" {
			f, err := os.Open(local)
			if err != nil {
				return err
			}
			defer f.Close()
			if fi, err := f.Stat(); err == nil {
				perm = uint32(fi.Mode().Perm())
			}
			in = f
		}
		if mode != "" {
			m, err := strconv.ParseUint(mode, 8, 32)
			if err != nil || m > 0o777 {
				return fmt.Errorf("--mode %q: want octal permissions such as 644", mode)
			}
			perm = uint32(m)
		}
		info, err := client.Upload(ctx, id, remote, perm, in)
		if err != nil {
			return err
		}
		if c.format == "json" {
			c.printJSON(info)
		} else if c.verbose {
			fmt.Fprintf(c.stderr, "uploaded %s (%d bytes)\n", info.Path, info.Size)
		}
		return nil
	}
}

func (c *cli) sessionDownload(ctx context.Context, client *Client, args []string) error {
	id, remote := args[0], args[1]
	local := path.Base(remote)
	if len(args) == 3 {
		local = args[2]
	}
	if local == "-" {
		return client.Download(ctx, id, remote, c.stdout)
	}
	// Into a temporary file first: a failed download leaves no half file.
	tmp, err := os.CreateTemp(filepath.Dir(local), "."+filepath.Base(local)+".part*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := client.Download(ctx, id, remote, tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), local)
}

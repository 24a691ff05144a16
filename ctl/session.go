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

	"github.com/sandboxd/sandboxd/ctl/client"
	"github.com/sandboxd/sandboxd/daemon/api"
)

var sessionCommands = []command{
	{"create", "-l LANG [--interpreter] [--memory SIZE] [--idle-timeout D] [--max-lifetime D]", "create a session; prints its id", [2]int{0, 0}, sessionCreateFlags},
	{"list", "", "list your sessions (all of them for root)", [2]int{0, 0}, noFlags((*cli).sessionList)},
	{"show", "ID", "show a session", [2]int{1, 1}, noFlags((*cli).sessionShow)},
	{"delete", "ID", "destroy a session and everything in it", [2]int{1, 1}, noFlags((*cli).sessionDelete)},
	{"restart", "ID", "restart an interpreter session's interpreter: its variables are gone, its files kept", [2]int{1, 1}, noFlags((*cli).sessionRestart)},
	{"files", "ID", "list a session's /workspace", [2]int{1, 1}, noFlags((*cli).sessionFiles)},
	{"upload", "ID LOCAL [REMOTE]", "copy a local file (- for stdin) into /workspace", [2]int{2, 3}, sessionUploadFlags},
	{"download", "ID REMOTE [LOCAL]", "copy a file of /workspace to a local file (- for stdout)", [2]int{2, 3}, noFlags((*cli).sessionDownload)},
}

func sessionCreateFlags(fs *flag.FlagSet) runFunc {
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
	var interpreter bool
	fs.BoolVar(&interpreter, "interpreter", false, "keep one interpreter running (python or javascript): each execution of the language is a cell run in its state, as in a notebook")
	return func(c *cli, ctx context.Context, _ []string) error {
		req := &api.CreateSessionRequest{Language: lang, IdleTimeoutMS: idle.Milliseconds(), MaxLifetimeMS: life.Milliseconds(),
			Runtime: runtime, Interpreter: interpreter}
		if len(env) > 0 {
			req.Env = env
		}
		if memory != "" {
			n, err := api.ParseSize(memory)
			if err != nil {
				return fmt.Errorf("--memory: %w", err)
			}
			req.MemoryBytes = n
		}
		if lang == "" {
			return errors.New("no language: pass -l LANG (see sandboxctl languages)")
		}
		s, err := client.New(c.socket).CreateSession(ctx, req)
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

func (c *cli) sessionList(ctx context.Context, _ []string) error {
	list, err := client.New(c.socket).Sessions(ctx)
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

func (c *cli) sessionShow(ctx context.Context, args []string) error {
	s, err := client.New(c.socket).Session(ctx, args[0])
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
	if s.Interpreter != nil {
		fmt.Fprintf(tw, "interpreter:\t%s, %d restarts\n", s.Interpreter.State, s.Interpreter.Restarts)
	}
	return tw.Flush()
}

func (c *cli) sessionDelete(ctx context.Context, args []string) error {
	return client.New(c.socket).DeleteSession(ctx, args[0])
}

func (c *cli) sessionRestart(ctx context.Context, args []string) error {
	s, err := client.New(c.socket).RestartSession(ctx, args[0])
	if err != nil {
		return err
	}
	if c.format == "json" {
		c.printJSON(s)
	} else if c.verbose && s.Interpreter != nil {
		fmt.Fprintf(c.stderr, "interpreter restarted: %d restarts\n", s.Interpreter.Restarts)
	}
	return nil
}

func (c *cli) sessionFiles(ctx context.Context, args []string) error {
	files, err := client.New(c.socket).Files(ctx, args[0])
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

func sessionUploadFlags(fs *flag.FlagSet) runFunc {
	var mode string
	fs.StringVar(&mode, "mode", "", "permissions of the file in the sandbox, in octal (default: the local file's, or 644)")
	return func(c *cli, ctx context.Context, args []string) error {
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
		info, err := client.New(c.socket).Upload(ctx, id, remote, perm, in)
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

func (c *cli) sessionDownload(ctx context.Context, args []string) error {
	cl := client.New(c.socket)
	id, remote := args[0], args[1]
	local := path.Base(remote)
	if len(args) == 3 {
		local = args[2]
	}
	if local == "-" {
		return cl.Download(ctx, id, remote, c.stdout)
	}
	// Into a temporary file first: a failed download leaves no half file.
	tmp, err := os.CreateTemp(filepath.Dir(local), "."+filepath.Base(local)+".part*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := cl.Download(ctx, id, remote, tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), local)
}

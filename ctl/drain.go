package ctl

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/sandboxd/sandboxd/ctl/client"
)

// drainFlags are `sandboxctl drain`'s: the DaemonSet's preStop, or a
// restart's first step.
func drainFlags(fs *flag.FlagSet) runFunc {
	timeout := fs.Duration("timeout", client.DrainDefault, "how long to wait for the executions under way, such as 90s (0: not at all; default: the daemon's max_timeout)")
	return func(c *cli, ctx context.Context, args []string) error {
		if len(args) > 0 {
			return &usageError{err: fmt.Errorf("drain takes no arguments, got %q", args), usage: fs.Usage}
		}
		if *timeout < 0 && given(fs, "timeout") {
			return &usageError{err: fmt.Errorf("--timeout %v: want 0 or more", *timeout)}
		}
		res, err := client.New(c.socket).Drain(ctx, *timeout)
		if err != nil {
			return err
		}
		if c.format == "json" {
			c.printJSON(res)
		} else if res.Drained {
			fmt.Fprintf(c.stdout, "drained: nothing under way; %d sessions stay for the next daemon\n", res.Sessions)
		} else {
			fmt.Fprintf(c.stdout, "not drained: %d executions or session creations still under way after %v; %d sessions stay for the next daemon\n",
				res.Running, time.Duration(res.WaitedMS)*time.Millisecond, res.Sessions)
		}
		if !res.Drained {
			return exitStatus(1)
		}
		return nil
	}
}

// healthFlags are `sandboxctl health`'s: the probes of a service manager
// or of Kubernetes.
func healthFlags(fs *flag.FlagSet) runFunc {
	ready := fs.Bool("ready", false, "readiness: also fail while the pools warm up or the daemon drains")
	live := fs.Bool("live", false, "liveness: succeed whenever the daemon answers, healthy or not (containerd away, disk full)")
	return func(c *cli, ctx context.Context, args []string) error {
		if len(args) > 0 {
			return &usageError{err: fmt.Errorf("health takes no arguments, got %q", args), usage: fs.Usage}
		}
		if *ready && *live {
			return &usageError{err: fmt.Errorf("--ready and --live ask different questions: give one")}
		}
		h, ok, err := client.New(c.socket).HealthStatus(ctx, *ready)
		if err != nil {
			return err
		}
		if c.format == "json" {
			c.printJSON(h)
		} else {
			tw := tabwriter.NewWriter(c.stdout, 2, 8, 2, ' ', 0)
			fmt.Fprintf(tw, "status:\t%s\ncontainerd:\t%s\nstate dir:\t%s\n", h.Status, h.Containerd, h.StateDir)
			if h.Draining {
				fmt.Fprintf(tw, "draining:\tyes: no new executions or sessions\n")
			}
			if h.Pool != "" {
				fmt.Fprintf(tw, "pool:\t%s\n", h.Pool)
			}
			tw.Flush()
		}
		if !ok && !*live {
			return exitStatus(1)
		}
		return nil
	}
}

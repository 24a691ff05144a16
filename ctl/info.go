package ctl

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/sandboxd/sandboxd/ctl/client"
	"github.com/sandboxd/sandboxd/ctl/mcp"
	"github.com/sandboxd/sandboxd/daemon/api"
)

func (c *cli) languages(ctx context.Context, _ []string) error {
	langs, err := client.New(c.socket).Languages(ctx)
	if err != nil {
		return err
	}
	if c.format == "json" {
		c.printJSON(api.LanguagesResponse{Languages: langs})
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tRUNTIME\tROOT\tALIASES\tEXTENSIONS")
	var notes []string
	for _, l := range langs {
		root := "host"
		if l.Image != "" {
			root = l.Image
		}
		name, version := l.Name, l.Version
		switch {
		case l.Missing != "":
			// Not an error of the daemon's: a language this host has not
			// installed.
			name += " (not installed)"
			version = "-"
			notes = append(notes, fmt.Sprintf("%s is not installed: %s", l.Name, l.Unavailable))
		case l.Unavailable != "":
			name += " (unavailable)"
			notes = append(notes, fmt.Sprintf("%s is unavailable: %s", l.Name, l.Unavailable))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", name, version, l.Runtime, root, strings.Join(l.Aliases, ","), strings.Join(l.Extensions, ","))
	}
	tw.Flush()
	if len(notes) > 0 {
		fmt.Fprintf(c.stdout, "\n%s\n", strings.Join(notes, "\n"))
	}
	return nil
}

func (c *cli) info(ctx context.Context, _ []string) error {
	info, err := client.New(c.socket).Info(ctx)
	if err != nil {
		return err
	}
	if c.format == "json" {
		c.printJSON(info)
		return nil
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
	return nil
}

// version prints both versions; an unreachable daemon is part of its
// output, and fails it.
func (c *cli) version(ctx context.Context, _ []string) error {
	fmt.Fprintf(c.stdout, "sandboxctl %s\n", Version)
	info, err := client.New(c.socket).Info(ctx)
	if err != nil {
		fmt.Fprintf(c.stdout, "sandboxd   unreachable (%v)\n", err)
		return exitStatus(1)
	}
	fmt.Fprintf(c.stdout, "sandboxd   %s\n", info.Version)
	return nil
}

// mcp runs `sandboxctl mcp`: an MCP server on standard input and output,
// until either ends or sandboxctl is stopped.
func (c *cli) mcp(ctx context.Context, _ []string) error {
	err := mcp.Serve(ctx, client.New(c.socket), Version, c.stdin, c.stdout)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

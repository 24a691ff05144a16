package ctl

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/sandboxd/sandboxd/ctl/client"
	"github.com/sandboxd/sandboxd/daemon/api"
)

var imageCommands = []command{
	{"import", "FILE.tar|-", "import the images of a tarball (OCI layout or docker save); for root", [2]int{1, 1}, noFlags((*cli).imageImport)},
	{"list", "", "list the images, and the languages that run from each", [2]int{0, 0}, noFlags((*cli).imageList)},
	{"pull", "REF", "pull an image from its registry; for root", [2]int{1, 1}, noFlags((*cli).imagePull)},
	{"rm", "REF", "remove an image; for root", [2]int{1, 1}, noFlags((*cli).imageRemove)},
}

func (c *cli) imageImport(ctx context.Context, args []string) error {
	var r io.Reader = c.stdin
	if args[0] != "-" {
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	imgs, err := client.New(c.socket).ImportImages(ctx, r)
	if err != nil {
		return err
	}
	c.printImages(imgs)
	return nil
}

func (c *cli) imageList(ctx context.Context, _ []string) error {
	imgs, err := client.New(c.socket).Images(ctx)
	if err != nil {
		return err
	}
	c.printImages(imgs)
	return nil
}

func (c *cli) imagePull(ctx context.Context, args []string) error {
	imgs, err := client.New(c.socket).PullImage(ctx, args[0])
	if err != nil {
		return err
	}
	c.printImages(imgs)
	return nil
}

func (c *cli) imageRemove(ctx context.Context, args []string) error {
	if err := client.New(c.socket).RemoveImage(ctx, args[0]); err != nil {
		return err
	}
	if c.format == "text" {
		fmt.Fprintf(c.stdout, "removed %s\n", args[0])
	}
	return nil
}

func (c *cli) printImages(imgs []api.Image) {
	if c.format == "json" {
		c.printJSON(api.ImagesResponse{Images: imgs})
		return
	}
	tw := tabwriter.NewWriter(c.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "REF\tDIGEST\tSIZE\tLANGUAGES")
	for _, img := range imgs {
		d := img.Digest
		if len(d) > 19 {
			d = d[:19]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", img.Ref, d, humanSize(img.SizeBytes), strings.Join(img.Languages, ","))
	}
	tw.Flush()
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

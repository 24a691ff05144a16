package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// Labels of the snapshots sandboxd makes.
const (
	// LabelBase marks a base: an image's root plus the mount points and
	// the agent every sandbox needs, committed once per image and agent.
	// Its value is the agent's hash.
	LabelBase = "io.sandboxd.base"
	// labelGCRoot keeps a base from containerd's garbage collector: no
	// container or image refers to it between sandboxes.
	labelGCRoot = "containerd.io/gc.root"
)

// NormalizeRef turns a short reference such as python:3.12 into the full
// name containerd keeps (docker.io/library/python:3.12).
func NormalizeRef(ref string) (string, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %w: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	return named.String(), nil
}

// PullImage fetches an image for this host's platform and unpacks it,
// logging each piece of content as it comes.
func (c *Client) PullImage(ctx context.Context, ref string) error {
	ref, err := NormalizeRef(ref)
	if err != nil {
		return err
	}
	ctx = c.ctx(ctx)
	start := time.Now()
	c.log.Info("pulling image", "ref", ref)
	progress := images.HandlerFunc(func(_ context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		c.log.Info("pulling image", "ref", ref, "media_type", desc.MediaType, "digest", desc.Digest.String(), "bytes", desc.Size)
		return nil, nil
	})
	_, err = c.client.Pull(ctx, ref,
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(c.snapshotter),
		containerd.WithPlatformMatcher(platforms.Default()),
		containerd.WithImageHandler(progress))
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	c.log.Info("pulled image", "ref", ref, "duration", time.Since(start))
	return nil
}

// ImportImages imports the images of a tarball, an OCI layout or a
// docker-archive (docker save), for this host's platform, and unpacks them.
// Only named images are imported: a language names its image.
func (c *Client) ImportImages(ctx context.Context, r io.Reader) ([]sandbox.ImageInfo, error) {
	ctx = c.ctx(ctx)
	imgs, err := c.client.Import(ctx, r, containerd.WithImportPlatform(platforms.Default()))
	if err != nil {
		return nil, fmt.Errorf("import: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("import: the archive names no image (tag it, as docker save NAME:TAG does, or set org.opencontainers.image.ref.name in an OCI layout): %w", errdefs.ErrInvalidArgument)
	}
	var out []sandbox.ImageInfo
	for _, img := range imgs {
		image := containerd.NewImageWithPlatform(c.client, img, platforms.Default())
		if err := image.Unpack(ctx, c.snapshotter); err != nil {
			return out, fmt.Errorf("unpack %s: %w", img.Name, err)
		}
		c.log.Info("imported image", "ref", img.Name, "digest", img.Target.Digest.String())
		out = append(out, c.imageInfo(ctx, img))
	}
	return out, nil
}

func (c *Client) imageInfo(ctx context.Context, img images.Image) sandbox.ImageInfo {
	size, _ := containerd.NewImage(c.client, img).Size(ctx)
	return sandbox.ImageInfo{Ref: img.Name, Digest: img.Target.Digest.String(), Size: size, Created: img.CreatedAt}
}

// Images lists the images in sandboxd's namespace.
func (c *Client) Images(ctx context.Context) ([]sandbox.ImageInfo, error) {
	ctx = c.ctx(ctx)
	imgs, err := c.client.ImageService().List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]sandbox.ImageInfo, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, c.imageInfo(ctx, img))
	}
	return out, nil
}

// RemoveImage deletes an image and the bases made from it that no sandbox
// uses; those in use go at a later start-up.
func (c *Client) RemoveImage(ctx context.Context, ref string) error {
	ctx = c.ctx(ctx)
	if err := c.client.ImageService().Delete(ctx, c.lookupName(ctx, ref), images.SynchronousDelete()); err != nil {
		return fmt.Errorf("remove image %s: %w", ref, err)
	}
	c.removeStale(ctx, false)
	return nil
}

// lookupName returns ref as containerd names it: normalized (python:3.12
// is docker.io/library/python:3.12 there), or as given when an image has
// that name; and a reference pinned by digest
// finds the image of that digest whatever its name, as one imported from
// an OCI layout under its tag.
func (c *Client) lookupName(ctx context.Context, ref string) string {
	is := c.client.ImageService()
	n, err := NormalizeRef(ref)
	if err != nil {
		return ref
	}
	for _, name := range []string{n, ref} {
		if _, err := is.Get(ctx, name); err == nil {
			return name
		}
	}
	if i := strings.LastIndex(n, "@"); i >= 0 {
		if imgs, err := is.List(ctx, fmt.Sprintf("target.digest==%s", n[i+1:])); err == nil && len(imgs) > 0 {
			return imgs[0].Name
		}
	}
	return n
}

// imageBase is the base snapshot of an image and the image's environment.
type imageBase struct {
	snapshot string
	env      []string
}

// imageRoot returns the base snapshot a sandbox of an image is a view of,
// and the image's environment; it unpacks the image and commits its base
// the first time. Later, for the same image content, it costs one lookup.
func (c *Client) imageRoot(ctx context.Context, ref string) (base string, env []string, err error) {
	img, err := c.client.ImageService().Get(ctx, c.lookupName(ctx, ref))
	if err != nil {
		if errdefs.IsNotFound(err) {
			return "", nil, fmt.Errorf("image %s is not in containerd (pull it, or import it with sandboxctl image import): %w", ref, errdefs.ErrNotFound)
		}
		return "", nil, fmt.Errorf("image %s: %w", ref, err)
	}
	digest := img.Target.Digest.String()
	c.baseMu.Lock()
	defer c.baseMu.Unlock()
	if b, ok := c.bases[digest]; ok {
		return b.snapshot, b.env, nil
	}
	image := containerd.NewImageWithPlatform(c.client, img, platforms.Default())
	spec, err := image.Spec(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("image %s: config: %w", ref, err)
	}
	diffIDs, err := image.RootFS(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("image %s: layers: %w", ref, err)
	}
	chain := identity.ChainID(diffIDs).String()
	base = "sandboxd-base-" + strings.TrimPrefix(chain, "sha256:")[:32] + "-" + c.initHash[:16]
	if _, err := c.client.SnapshotService(c.snapshotter).Stat(ctx, base); err != nil {
		if ok, err := image.IsUnpacked(ctx, c.snapshotter); err != nil || !ok {
			c.log.Info("unpacking image", "ref", ref)
			if err := image.Unpack(ctx, c.snapshotter); err != nil {
				return "", nil, fmt.Errorf("unpack %s: %w", ref, err)
			}
		}
		if err := c.commitBase(ctx, base, chain); err != nil {
			return "", nil, fmt.Errorf("image %s: base: %w", ref, err)
		}
		c.log.Info("prepared image base", "ref", ref, "snapshot", base)
	}
	c.bases[digest] = imageBase{snapshot: base, env: spec.Config.Env}
	return base, spec.Config.Env, nil
}

// ImageReady returns nil when sandboxes can be made from an image, making
// its base if need be, or why not: a NotFound error when it is missing.
func (c *Client) ImageReady(ctx context.Context, ref string) error {
	_, _, err := c.imageRoot(c.ctx(ctx), ref)
	return err
}

// baseDirs are the mount points every sandbox needs in its root: a read-only
// view cannot have them made at start.
var baseDirs = []string{"proc", "dev", "sys", "tmp", "etc", "workspace", "sandbox", ".sandboxd"}

// commitBase commits, on top of an image's layers, a layer with sandboxd's
// mount points and agent.
func (c *Client) commitBase(ctx context.Context, base, parent string) error {
	ctx, done, err := c.client.WithLease(ctx)
	if err != nil {
		return err
	}
	defer done(context.WithoutCancel(ctx))
	sn := c.client.SnapshotService(c.snapshotter)
	key := base + "-prepare-" + fmt.Sprint(time.Now().UnixNano())
	mounts, err := sn.Prepare(ctx, key, parent)
	if err != nil {
		return err
	}
	defer sn.Remove(context.WithoutCancel(ctx), key) // gone once committed
	dir, err := os.MkdirTemp(c.cfg.StateDir, "base-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	if err := mount.All(mounts, dir); err != nil {
		return err
	}
	err = populateBase(dir, c.cfg.Init)
	if uerr := mount.UnmountAll(dir, 0); uerr != nil {
		return errors.Join(err, uerr)
	}
	if err != nil {
		return err
	}
	labels := map[string]string{labelGCRoot: time.Now().UTC().Format(time.RFC3339), LabelBase: c.initHash, LabelManaged: "true"}
	if err := sn.Commit(ctx, base, key, snapshots.WithLabels(labels)); err != nil && !errdefs.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// populateBase makes the mount points in an image's root, whatever the
// image has there (a link to elsewhere is replaced), and puts the agent in.
func populateBase(root, init string) error {
	for _, d := range baseDirs {
		p := filepath.Join(root, d)
		if fi, err := os.Lstat(p); err == nil && !fi.IsDir() {
			if err := os.Remove(p); err != nil {
				return err
			}
		}
		if err := mkdirAllMode(p, 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o777|os.ModeSticky); err != nil {
		return err
	}
	if err := copyFile(init, filepath.Join(root, InitPath), 0o555); err != nil {
		return err
	}
	return writeDrivers(root)
}

// withView makes the container's root a read-only view of base: nothing a
// sandbox does reaches the image, and the view costs no copy.
func withView(snapshotter, key, base string, labels map[string]string) containerd.NewContainerOpts {
	return func(ctx context.Context, client *containerd.Client, ctr *containers.Container) error {
		if _, err := client.SnapshotService(snapshotter).View(ctx, key, base, snapshots.WithLabels(labels)); err != nil {
			return fmt.Errorf("view of %s: %w", base, err)
		}
		ctr.Snapshotter, ctr.SnapshotKey = snapshotter, key
		return nil
	}
}

// removeStale removes the bases of another agent, or of an image that is
// gone, that no sandbox's view still sits on; and, with views, the views
// of sandboxes whose container is gone (only when no sandbox is being
// created: a view is made just before its container).
func (c *Client) removeStale(ctx context.Context, views bool) {
	sn := c.client.SnapshotService(c.snapshotter)
	live := map[string]bool{}
	imgs, err := c.client.ImageService().List(ctx)
	if err != nil {
		return
	}
	for _, img := range imgs {
		diffIDs, err := containerd.NewImageWithPlatform(c.client, img, platforms.Default()).RootFS(ctx)
		if err == nil {
			live[identity.ChainID(diffIDs).String()] = true
		}
	}
	ctrs, err := c.client.Containers(ctx)
	if err != nil {
		return
	}
	used := map[string]bool{}
	for _, ctr := range ctrs {
		if info, err := ctr.Info(ctx); err == nil {
			used[info.SnapshotKey] = true
		}
	}
	var stale []snapshots.Info
	sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Labels[LabelManaged] != "true" {
			return nil
		}
		switch {
		case info.Kind == snapshots.KindView && views && !used[info.Name]:
			stale = append(stale, info)
		case info.Labels[LabelBase] != "" && (info.Labels[LabelBase] != c.initHash || !live[info.Parent]):
			stale = append(stale, info)
		}
		return nil
	})
	// Views first: a base with a view on it cannot go.
	for _, info := range stale {
		if info.Kind == snapshots.KindView {
			sn.Remove(ctx, info.Name)
		}
	}
	c.baseMu.Lock()
	defer c.baseMu.Unlock()
	for _, info := range stale {
		if info.Kind != snapshots.KindView {
			if err := sn.Remove(ctx, info.Name); err == nil {
				c.log.Info("removed image base", "snapshot", info.Name)
				for digest, b := range c.bases {
					if b.snapshot == info.Name {
						delete(c.bases, digest)
					}
				}
			}
		}
	}
}

package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// RootFS is where a sandbox's root filesystem comes from. The host's
// runtimes are one source; OCI images are another.
type RootFS interface {
	// Prepare readies the root once, at start-up. It returns the directory
	// to use as the read-only root and the mounts that complete it.
	Prepare() (root string, mounts []specs.Mount, err error)
}

// HostRootFS is a root made of the host's /usr, read-only, and an /etc of
// our own: the sandbox sees the host's language runtimes and nothing else of
// the host.
type HostRootFS struct {
	// Dir is where the root directory is built; it is rebuilt at each start.
	Dir string
	// ExtraPaths are more host paths to mount read-only at the same place,
	// such as a runtime's configuration under /etc. They must hold no secret.
	ExtraPaths []string
	// Init is the host path of sandboxd-init, copied in as InitPath.
	Init string
	// UID and GID are the sandbox user's.
	UID, GID uint32
}

// InitPath is where sandboxd-init is inside every sandbox.
const InitPath = "/.sandboxd/init"

// hostTopDirs are the host's top-level entries that hold programs and
// libraries: mirrored as links on merged-/usr systems, mounted otherwise.
var hostTopDirs = []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32"}

// Prepare implements RootFS.
func (h *HostRootFS) Prepare() (string, []specs.Mount, error) {
	// The root is updated in place, never removed: sessions that outlive
	// a daemon restart still have it as their root. Files are replaced by
	// rename, so that a running sandbox sees the old or the new, whole.
	root := filepath.Join(h.Dir, "rootfs")
	for _, d := range []string{"usr", "proc", "dev", "sys", "tmp", "etc", "workspace", "sandbox"} {
		if err := mkdirAllMode(filepath.Join(root, d), 0o755); err != nil {
			return "", nil, fmt.Errorf("rootfs: %w", err)
		}
	}
	if err := os.Chmod(root, 0o755); err != nil {
		return "", nil, fmt.Errorf("rootfs: %w", err)
	}
	// runc gives a tmpfs the mode of the directory it covers.
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o777|os.ModeSticky); err != nil {
		return "", nil, fmt.Errorf("rootfs: %w", err)
	}
	ro := []string{"rbind", "ro", "nosuid", "nodev"}
	mounts := []specs.Mount{{Destination: "/usr", Type: "bind", Source: "/usr", Options: ro}}
	for _, name := range hostTopDirs {
		host := "/" + name
		fi, err := os.Lstat(host)
		switch {
		case err != nil:
			continue
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(host)
			if err != nil {
				return "", nil, fmt.Errorf("rootfs: %w", err)
			}
			if err := replaceSymlink(target, filepath.Join(root, name)); err != nil {
				return "", nil, fmt.Errorf("rootfs: %w", err)
			}
		case fi.IsDir():
			if err := mkdirAllMode(filepath.Join(root, name), 0o755); err != nil {
				return "", nil, fmt.Errorf("rootfs: %w", err)
			}
			mounts = append(mounts, specs.Mount{Destination: host, Type: "bind", Source: host, Options: ro})
		}
	}
	for _, p := range h.ExtraPaths {
		fi, err := os.Stat(p)
		if err != nil || !filepath.IsAbs(p) || strings.HasPrefix(p, "/usr/") {
			continue
		}
		dst := filepath.Join(root, p)
		if fi.IsDir() {
			err = mkdirAllMode(dst, 0o755)
		} else if err = mkdirAllMode(filepath.Dir(dst), 0o755); err == nil {
			err = writeFileAtomic(dst, nil, 0o644)
		}
		if err != nil {
			return "", nil, fmt.Errorf("rootfs: %w", err)
		}
		mounts = append(mounts, specs.Mount{Destination: p, Type: "bind", Source: p, Options: ro})
	}
	if err := copyFile(h.Init, filepath.Join(root, InitPath), 0o555); err != nil {
		return "", nil, fmt.Errorf("rootfs: init: %w", err)
	}
	if err := writeDrivers(root); err != nil {
		return "", nil, fmt.Errorf("rootfs: %w", err)
	}
	for name, content := range etcFiles(h.UID, h.GID) {
		if err := writeFileAtomic(filepath.Join(root, "etc", name), []byte(content), 0o644); err != nil {
			return "", nil, fmt.Errorf("rootfs: %w", err)
		}
	}
	return root, mounts, nil
}

// etcFiles is the whole of a sandbox's /etc: enough for programs that look
// up their user or resolve localhost, and nothing of the host's.
func etcFiles(uid, gid uint32) map[string]string {
	return map[string]string{
		"passwd":        fmt.Sprintf("root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:%d:%d:sandbox:/workspace:/bin/sh\n", uid, gid),
		"group":         fmt.Sprintf("root:x:0:\nsandbox:x:%d:\n", gid),
		"hosts":         "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
		"nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
		"hostname":      "sandbox\n",
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := mkdirAllMode(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return writeFileAtomic(dst, data, mode)
}

// mkdirAllMode is os.MkdirAll with mode set on every directory it makes,
// and on p: what a sandbox's user must traverse must not depend on the
// daemon's umask (its unit sets 0077).
func mkdirAllMode(p string, mode os.FileMode) error {
	if fi, err := os.Stat(p); err == nil {
		if !fi.IsDir() {
			return &os.PathError{Op: "mkdir", Path: p, Err: syscall.ENOTDIR}
		}
		return os.Chmod(p, mode)
	}
	if parent := filepath.Dir(p); parent != p {
		if _, err := os.Stat(parent); errors.Is(err, os.ErrNotExist) {
			if err := mkdirAllMode(parent, mode); err != nil {
				return err
			}
		}
	}
	if err := os.Mkdir(p, mode); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return os.Chmod(p, mode)
}

func writeFileAtomic(dst string, data []byte, mode os.FileMode) error {
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

func replaceSymlink(target, dst string) error {
	if cur, err := os.Readlink(dst); err == nil && cur == target {
		return nil
	}
	tmp := dst + ".new"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

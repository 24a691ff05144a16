package main

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// Workspace is the directory the file helpers are confined to.
const Workspace = "/workspace"

var errInvalid = errors.New("invalid path")

// resolveFlags confine every lookup to the workspace: symlinks, absolute or
// relative, and ".." resolve as if the workspace were "/", and magic links
// such as /proc/self/root are refused. The kernel does it (openat2), so a
// program racing to swap a directory for a symlink cannot win.
const resolveFlags = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

func openRoot() (int, error) {
	return unix.Open(Workspace, unix.O_DIRECTORY|unix.O_PATH|unix.O_CLOEXEC, 0)
}

func openIn(root int, p string, flags int, mode uint32) (*os.File, error) {
	fd, err := unix.Openat2(root, p, &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: resolveFlags})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// clean rejects what is not a plain relative path.
func clean(p string) (string, error) {
	if p == "" || strings.ContainsRune(p, 0) || path.IsAbs(p) {
		return "", errInvalid
	}
	c := path.Clean(p)
	if c == "." || c == ".." || strings.HasPrefix(c, "../") {
		return "", errInvalid
	}
	return c, nil
}

func get(p string) error {
	p, err := clean(p)
	if err != nil {
		return err
	}
	root, err := openRoot()
	if err != nil {
		return err
	}
	f, err := openIn(root, p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return errInvalid
	}
	_, err = io.Copy(os.Stdout, f)
	return err
}

func put(p string, mode uint32) error {
	p, err := clean(p)
	if err != nil {
		return err
	}
	root, err := openRoot()
	if err != nil {
		return err
	}
	dir, err := mkdirAll(root, path.Dir(p))
	if err != nil {
		return err
	}
	// O_NOFOLLOW: a symlink planted at the final name is not followed,
	// even to a place inside the workspace.
	f, err := openIn(dir, path.Base(p), unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_NONBLOCK, mode)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return errInvalid
	}
	if _, err := io.Copy(f, os.Stdin); err != nil {
		f.Close()
		return err
	}
	if err := unix.Fchmod(int(f.Fd()), mode); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// mkdirAll creates dir under root one component at a time, each looked up
// with the same confinement, and returns it opened.
func mkdirAll(root int, dir string) (int, error) {
	fd := root
	if dir == "." {
		return fd, nil
	}
	for _, name := range strings.Split(dir, "/") {
		err := unix.Mkdirat(fd, name, 0o755)
		if err != nil && err != unix.EEXIST {
			return -1, &os.PathError{Op: "mkdir", Path: dir, Err: err}
		}
		f, err := openIn(fd, name, unix.O_DIRECTORY|unix.O_PATH|unix.O_NOFOLLOW, 0)
		if err != nil {
			return -1, err
		}
		fd = int(f.Fd())
	}
	return fd, nil
}

// entry is one line of `list`.
type entry struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
	Mode uint32 `json:"mode"`
	Type string `json:"type"` // file, dir, symlink, other
}

// maxListed bounds a listing; a workspace holds few files in practice.
const maxListed = 10000

func list() error {
	root, err := unix.Open(Workspace, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	n := 0
	return walk(json.NewEncoder(os.Stdout), os.NewFile(uintptr(root), Workspace), "", &n)
}

// walk lists dir, descending only into real directories opened under the
// same confinement: a symlink is listed, never followed.
func walk(enc *json.Encoder, dir *os.File, prefix string, n *int) error {
	defer dir.Close()
	entries, err := dir.ReadDir(-1)
	if err != nil {
		return err
	}
	for _, d := range entries {
		if *n++; *n > maxListed {
			return nil
		}
		var st unix.Stat_t
		if unix.Fstatat(int(dir.Fd()), d.Name(), &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			continue
		}
		e := entry{Path: prefix + d.Name(), Size: st.Size, Mode: st.Mode & 0o777, Type: "other"}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.Type = "file"
		case unix.S_IFLNK:
			e.Type = "symlink"
		case unix.S_IFDIR:
			e.Type, e.Size = "dir", 0
		}
		if err := enc.Encode(e); err != nil {
			return err
		}
		if e.Type == "dir" {
			sub, err := openIn(int(dir.Fd()), d.Name(), unix.O_DIRECTORY|unix.O_RDONLY|unix.O_NOFOLLOW, 0)
			if err == nil {
				walk(enc, sub, e.Path+"/", n)
			}
		}
	}
	return nil
}

package main

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
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
	f, err := openFile(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(os.Stdout, f)
	return err
}

// openFile opens a regular file of the workspace for reading.
func openFile(p string) (*os.File, error) {
	p, err := clean(p)
	if err != nil {
		return nil, err
	}
	root, err := openRoot()
	if err != nil {
		return nil, err
	}
	defer unix.Close(root)
	f, err := openIn(root, p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, errInvalid
	}
	return f, nil
}

// collect returns the regular files of the workspace whose paths match a
// glob, up to max bytes of content in all; past it, files are listed with
// Truncated and no content. The walk is the listing's: symlinks are never
// followed, and each file is opened under the workspace's confinement.
func collect(globs []string, max int64) ([]agentproto.Collected, error) {
	var entries []entry
	root, err := unix.Open(Workspace, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	n := 0
	if err := walkEntries(os.NewFile(uintptr(root), Workspace), "", &n, func(e entry) { entries = append(entries, e) }); err != nil {
		return nil, err
	}
	var out []agentproto.Collected
	for _, e := range entries {
		if e.Type != "file" || !matchAny(globs, e.Path) {
			continue
		}
		c := agentproto.Collected{Path: e.Path, Size: e.Size}
		if e.Size > max {
			c.Truncated = true
			out = append(out, c)
			continue
		}
		f, err := openFile(e.Path)
		if err != nil {
			continue // gone, or swapped for something else: not collected
		}
		c.Data, err = io.ReadAll(io.LimitReader(f, max+1))
		f.Close()
		if err != nil || int64(len(c.Data)) > max {
			c.Data, c.Truncated = nil, true
		} else {
			max -= int64(len(c.Data))
			c.Size = int64(len(c.Data))
		}
		out = append(out, c)
	}
	return out, nil
}

func matchAny(globs []string, p string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, p); ok {
			return true
		}
	}
	return false
}

func put(p string, mode uint32) error { return writeFile(p, mode, os.Stdin) }

// writeFile writes r to p in the workspace, creating its directories.
func writeFile(p string, mode uint32, r io.Reader) error {
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
	if _, err := io.Copy(f, r); err != nil {
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
	enc := json.NewEncoder(os.Stdout)
	return walkEntries(os.NewFile(uintptr(root), Workspace), "", &n, func(e entry) { enc.Encode(e) })
}

// walkEntries lists dir, descending only into real directories opened
// under the same confinement: a symlink is listed, never followed.
func walkEntries(dir *os.File, prefix string, n *int, emit func(entry)) error {
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
		emit(e)
		if e.Type == "dir" {
			sub, err := openIn(int(dir.Fd()), d.Name(), unix.O_DIRECTORY|unix.O_RDONLY|unix.O_NOFOLLOW, 0)
			if err == nil {
				walkEntries(sub, e.Path+"/", n, emit)
			}
		}
	}
	return nil
}

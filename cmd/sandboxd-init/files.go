package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
)

// Workspace is the directory the file operations are confined to.
const Workspace = "/workspace"

var errInvalid = errors.New("invalid path")

// A root is a directory that file operations are confined to. Every path
// under it is resolved with the same rules, whichever way it is resolved:
// no symlink is followed at any component (to a place outside the root or
// inside it, magic links such as /proc/self/root included), no ".." and no
// absolute path is accepted, and no lookup crosses into another mount. A
// path through a symlink fails with ELOOP.
//
// Where the kernel has openat2, it resolves the whole path at once
// (resolveFlags). Where it has not (Debian 12's gVisor: its kernel answers
// ENOSYS, and its seccomp filter, which drops the syscall names it does
// not know, answers EPERM), the path is walked one component at a time
// with openat and O_NOFOLLOW from a descriptor of the root, each
// component checked once open (walk). Either way each step starts from a
// directory already open inside the root, so a program that swaps a
// directory for a symlink meanwhile makes the lookup fail, never escape.
type root struct {
	fd  int    // the directory, opened O_PATH
	dev uint64 // its file system's device: lookups stay on it
	// walk resolves component by component instead of by openat2. It is
	// set when openat2 fails on the root itself; tests set it to cover
	// the walk on kernels that have openat2.
	walk bool
}

// resolveFlags are openat2's form of the root's rules.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// openRoot opens dir as a root, and finds out whether openat2 serves in it.
func openRoot(dir string) (*root, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "stat", Path: dir, Err: err}
	}
	return &root{fd: fd, dev: st.Dev, walk: !openat2Works(fd)}, nil
}

// openat2Works asks openat2 for the directory itself: any error means it
// cannot serve here (ENOSYS without it, EPERM from a filter that does not
// know it, EINVAL from a kernel that lacks one of the flags), and the walk
// is used instead, which is as strict.
func openat2Works(dirfd int) bool {
	fd, err := unix.Openat2(dirfd, ".", &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolveFlags})
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

func (r *root) close() error { return unix.Close(r.fd) }

// components splits a relative path into names, refusing the empty path,
// absolute paths, "." and ".." components and NUL: the walk itself refuses
// them, whatever the callers checked before.
func components(p string) ([]string, error) {
	if p == "" || strings.ContainsRune(p, 0) {
		return nil, errInvalid
	}
	names := strings.Split(p, "/")
	for _, n := range names {
		if n == "" || n == "." || n == ".." {
			return nil, errInvalid
		}
	}
	return names, nil
}

// open opens p under r with flags (O_NOFOLLOW and O_CLOEXEC are added)
// and returns the descriptor.
func (r *root) open(p string, flags int) (int, error) {
	names, err := components(p)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: p, Err: err}
	}
	if !r.walk {
		fd, err := unix.Openat2(r.fd, p, &unix.OpenHow{Flags: uint64(flags | unix.O_NOFOLLOW | unix.O_CLOEXEC), Resolve: resolveFlags})
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: p, Err: err}
		}
		return fd, nil
	}
	dir := r.fd
	for i, name := range names[:len(names)-1] {
		next, err := r.openIn(dir, strings.Join(names[:i+1], "/"), name, unix.O_PATH|unix.O_DIRECTORY, 0)
		if dir != r.fd {
			unix.Close(dir)
		}
		if err != nil {
			return -1, err
		}
		dir = next
	}
	fd, err := r.openIn(dir, p, names[len(names)-1], flags, 0)
	if dir != r.fd {
		unix.Close(dir)
	}
	return fd, err
}

// openIn opens name, one component, in the directory dirfd that is already
// inside r; p is its path under r, for errors.
func (r *root) openIn(dirfd int, p, name string, flags int, mode uint32) (int, error) {
	flags |= unix.O_NOFOLLOW | unix.O_CLOEXEC
	var fd int
	var err error
	if r.walk {
		fd, err = unix.Openat(dirfd, name, flags, mode)
	} else {
		fd, err = unix.Openat2(dirfd, name, &unix.OpenHow{Flags: uint64(flags), Mode: uint64(mode), Resolve: resolveFlags})
	}
	if err != nil {
		// O_DIRECTORY|O_NOFOLLOW answers ENOTDIR for a symlink: say
		// what it is, as for any other component.
		var st unix.Stat_t
		if err == unix.ENOTDIR && unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			err = unix.ELOOP
		}
		return -1, &os.PathError{Op: "open", Path: p, Err: err}
	}
	if !r.walk {
		return fd, nil // the kernel checked what follows
	}
	// What was opened is checked, not what was looked at before.
	var st unix.Stat_t
	err = unix.Fstat(fd, &st)
	switch {
	case err != nil:
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		err = unix.ELOOP // O_PATH|O_NOFOLLOW may open a symlink itself
	case flags&unix.O_DIRECTORY != 0 && st.Mode&unix.S_IFMT != unix.S_IFDIR:
		err = unix.ENOTDIR
	case st.Dev != r.dev:
		err = unix.EXDEV
	default:
		return fd, nil
	}
	unix.Close(fd)
	return -1, &os.PathError{Op: "open", Path: p, Err: err}
}

// mkdirAll creates the directories of names under r one at a time, each
// opened as it is made, and returns the last one opened.
func (r *root) mkdirAll(names []string) (int, error) {
	dir, err := unix.FcntlInt(uintptr(r.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for i, name := range names {
		p := strings.Join(names[:i+1], "/")
		if err := unix.Mkdirat(dir, name, 0o755); err != nil && err != unix.EEXIST {
			unix.Close(dir)
			return -1, &os.PathError{Op: "mkdir", Path: p, Err: err}
		}
		next, err := r.openIn(dir, p, name, unix.O_PATH|unix.O_DIRECTORY, 0)
		unix.Close(dir)
		if err != nil {
			return -1, err
		}
		dir = next
	}
	return dir, nil
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

// openFile opens a regular file under r for reading.
func (r *root) openFile(p string) (*os.File, error) {
	p, err := clean(p)
	if err != nil {
		return nil, err
	}
	fd, err := r.open(p, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), p)
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, errInvalid
	}
	return f, nil
}

// writeFile writes src to p under r with mode, creating its directories.
func (r *root) writeFile(p string, mode uint32, src io.Reader) error {
	p, err := clean(p)
	if err != nil {
		return err
	}
	names, err := components(p)
	if err != nil {
		return err
	}
	dir, err := r.mkdirAll(names[:len(names)-1])
	if err != nil {
		return err
	}
	// O_NOFOLLOW (added by openIn): a symlink planted at the final name is
	// not followed either.
	fd, err := r.openIn(dir, p, names[len(names)-1], unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NONBLOCK, mode)
	unix.Close(dir)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return errInvalid
	}
	if _, err := io.Copy(f, src); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return &os.PathError{Op: "chmod", Path: p, Err: err}
	}
	return f.Close()
}

// entry is an entry of a listing.
type entry = agentproto.Entry

// maxListed bounds a listing; a workspace holds few files in practice.
const maxListed = 10000

// list walks r, descending only into real directories, each opened under
// the root's rules: a symlink is listed, never followed. What cannot be
// read is an error, not a gap in the listing.
func (r *root) list(emit func(entry)) error {
	fd, err := unix.Openat(r.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: ".", Err: err}
	}
	n := 0
	return r.walkEntries(os.NewFile(uintptr(fd), "."), "", &n, emit)
}

func (r *root) walkEntries(dir *os.File, prefix string, n *int, emit func(entry)) error {
	defer dir.Close()
	entries, err := dir.ReadDir(-1)
	if err != nil {
		return err
	}
	// In order of name, as ls lists: collect's cap is spent in that order.
	slices.SortFunc(entries, func(a, b os.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	for _, d := range entries {
		if *n++; *n > maxListed {
			return nil
		}
		p := prefix + d.Name()
		var st unix.Stat_t
		if err := unix.Fstatat(int(dir.Fd()), d.Name(), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "stat", Path: p, Err: err}
		}
		e := entry{Path: p, Size: st.Size, Mode: st.Mode & 0o777, Type: "other"}
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
			fd, err := r.openIn(int(dir.Fd()), p, d.Name(), unix.O_RDONLY|unix.O_DIRECTORY, 0)
			if err != nil {
				return err
			}
			if err := r.walkEntries(os.NewFile(uintptr(fd), p), p+"/", n, emit); err != nil {
				return err
			}
		}
	}
	return nil
}

// collect returns the regular files under r whose paths match a glob, up
// to max bytes of content in all; past it, files are listed with Truncated
// and no content. The walk is the listing's. A matched file that cannot be
// opened or read fails the whole collect: it is never silently left out.
func (r *root) collect(globs []string, max int64) ([]agentproto.Collected, error) {
	var matched []entry
	err := r.list(func(e entry) {
		if e.Type == "file" && matchAny(globs, e.Path) {
			matched = append(matched, e)
		}
	})
	if err != nil {
		return nil, err
	}
	return r.read(matched, max)
}

// read returns the content of files listed under r, up to max bytes in all.
func (r *root) read(files []entry, max int64) ([]agentproto.Collected, error) {
	var out []agentproto.Collected
	for _, e := range files {
		c := agentproto.Collected{Path: e.Path, Size: e.Size}
		if e.Size > max {
			c.Truncated = true
			out = append(out, c)
			continue
		}
		f, err := r.openFile(e.Path)
		if errors.Is(err, errInvalid) {
			err = fmt.Errorf("%s: not a regular file any more", e.Path)
		}
		if err != nil {
			return nil, err
		}
		c.Data, err = io.ReadAll(io.LimitReader(f, max+1))
		f.Close()
		if err != nil {
			return nil, err
		}
		if int64(len(c.Data)) > max {
			// It grew past the cap since it was listed.
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

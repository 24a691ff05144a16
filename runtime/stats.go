package runtime

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	cgroup1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroup2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// cgroupRoot is where the cgroup hierarchies are mounted.
var cgroupRoot = "/sys/fs/cgroup"

// counterFiles are the paths of a sandbox's counter files in cgroupfs.
type counterFiles struct {
	cpu, usage, peak, oomKills, pids string
}

func counterFilesOf(v2 bool, cgroupPath string) counterFiles {
	if v2 {
		dir := filepath.Join(cgroupRoot, cgroupPath)
		return counterFiles{cpu: dir + "/cpu.stat", usage: dir + "/memory.current", peak: dir + "/memory.peak",
			oomKills: dir + "/memory.events", pids: dir + "/pids.events"}
	}
	memory := filepath.Join(cgroupRoot, "memory", cgroupPath)
	return counterFiles{cpu: filepath.Join(cgroupRoot, "cpuacct", cgroupPath, "cpuacct.usage"),
		usage: memory + "/memory.usage_in_bytes", peak: memory + "/memory.max_usage_in_bytes",
		oomKills: memory + "/memory.oom_control", pids: filepath.Join(cgroupRoot, "pids", cgroupPath, "pids.events")}
}

// readCgroupStats reads a sandbox's counters straight from cgroupfs: a few
// small files, where asking containerd costs two IPC round trips and a
// read of every controller. It fails when the files are not there (another
// cgroup layout, a runtime that keeps its own), and the caller then asks
// containerd. readFile reads a file by its path (os.ReadFile, or a
// sandbox's cgroupFiles).
func readCgroupStats(v2 bool, files counterFiles, readFile func(string) ([]byte, error)) (sandbox.Stats, error) {
	var st sandbox.Stats
	var err error
	read := func(path string) []byte {
		if err != nil {
			return nil
		}
		var b []byte
		b, err = readFile(path)
		return b
	}
	if v2 {
		st.CPUNanos = field(read(files.cpu), "usage_usec", &err) * 1000
		st.MemoryUsageBytes = number(read(files.usage), &err)
		st.OOMKills = field(read(files.oomKills), "oom_kill", &err)
		st.PidsLimitHits = pidsMax(files.pids, readFile)
		if err == nil {
			// memory.peak is from Linux 5.19; before, the peak is unknown.
			if b, perr := readFile(files.peak); perr == nil {
				st.MemoryPeakBytes = number(b, &err)
			}
		}
	} else {
		st.CPUNanos = number(read(files.cpu), &err)
		st.MemoryUsageBytes = number(read(files.usage), &err)
		st.MemoryPeakBytes = number(read(files.peak), &err)
		st.OOMKills = field(read(files.oomKills), "oom_kill", &err)
		st.PidsLimitHits = pidsMax(files.pids, readFile)
	}
	return st, err
}

// cgroupFiles holds a sandbox's counter files open, so that a read of
// its counters (twice an execution in a cell) is a pread each, not a walk
// of each file's path through cgroupfs, an open and a close. Its user
// serializes its calls (Sandbox.mu).
type cgroupFiles struct {
	files   map[string]cgroupFile
	writers map[string]*os.File // opened for writing
	closed  bool
}

// cgroupFile is a counter file held open, and its descriptor: os.File's
// Fd would ask the kernel for its flags at each read.
type cgroupFile struct {
	f  *os.File
	fd int
}

func (c *cgroupFiles) read(path string) ([]byte, error) {
	if c.closed {
		return os.ReadFile(path)
	}
	cf, ok := c.files[path]
	if !ok {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		if c.files == nil {
			c.files = map[string]cgroupFile{}
		}
		cf = cgroupFile{f: f, fd: int(f.Fd())}
		c.files[path] = cf
	}
	// cgroupfs makes a file's content anew for a read from its start, and
	// gives it whole to a read with room for it: one pread, where ReadAt
	// would make a second to see the end.
	buf := make([]byte, 512)
	n, err := syscall.Pread(cf.fd, buf, 0)
	if err != nil {
		return nil, &os.PathError{Op: "pread", Path: path, Err: err}
	}
	if n == len(buf) {
		// Longer than any counter file here: read it whole.
		return io.ReadAll(io.NewSectionReader(cf.f, 0, 1<<20))
	}
	return buf[:n], nil
}

// write writes data to a file from its start, as cgroupfs takes a write.
func (c *cgroupFiles) write(path string, data []byte) error {
	if c.closed {
		return os.WriteFile(path, data, 0)
	}
	f := c.writers[path]
	if f == nil {
		var err error
		if f, err = os.OpenFile(path, os.O_WRONLY, 0); err != nil {
			return err
		}
		if c.writers == nil {
			c.writers = map[string]*os.File{}
		}
		c.writers[path] = f
	}
	_, err := f.WriteAt(data, 0)
	return err
}

// close closes the files; later reads and writes open them each time.
func (c *cgroupFiles) close() {
	for _, cf := range c.files {
		cf.f.Close()
	}
	for _, f := range c.writers {
		f.Close()
	}
	c.files, c.writers, c.closed = nil, nil, true
}

// pidsMax reads the count of forks refused at the pids limit; 0 when the
// kernel does not say.
func pidsMax(path string, readFile func(string) ([]byte, error)) uint64 {
	b, err := readFile(path)
	if err != nil {
		return 0
	}
	n := field(b, "max", &err)
	if err != nil {
		return 0
	}
	return n
}

// resetPeak starts a new memory peak for a cell's next execution: its
// counters are the cell's, which serves many. cgroup v1 resets it on a
// write; v2's memory.peak resets only for the descriptor written to, so
// there the peak stays the cell's own. The file stays open, as the
// counters do: 0.1 ms less on the request's path than an open and a close.
func (s *Sandbox) resetPeak() {
	if s.c.cgroupV2 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.final == nil {
		s.cgroup.write(s.counterPaths().peak, []byte("0"))
	}
}

// number parses a file holding one decimal number.
func number(b []byte, err *error) uint64 {
	if *err != nil {
		return 0
	}
	n, perr := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64)
	if perr != nil {
		*err = fmt.Errorf("cgroup counter %q: %w", b, perr)
	}
	return n
}

// field parses the value of a "key value" line; a missing key is an error.
func field(b []byte, key string, err *error) uint64 {
	if *err != nil {
		return 0
	}
	for line := range bytes.Lines(b) {
		k, v, ok := bytes.Cut(line, []byte{' '})
		if ok && string(k) == key {
			return number(v, err)
		}
	}
	*err = fmt.Errorf("cgroup counter %s: not found", key)
	return 0
}

// pidsLimitHit reports whether a fork in the sandbox's cgroup was refused
// at its pids limit.
func pidsLimitHit(v2 bool, cgroupPath string) bool {
	return pidsMax(counterFilesOf(v2, cgroupPath).pids, os.ReadFile) > 0
}

// Stats reads the sandbox's cgroup counters; once the sandbox is killed,
// they are those read just before.
func (s *Sandbox) Stats(ctx context.Context) (sandbox.Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.final != nil {
		return *s.final, nil
	}
	if s.task == nil {
		return sandbox.Stats{}, fmt.Errorf("sandbox %s has no task: %w", s.id, errdefs.ErrFailedPrecondition)
	}
	return s.readStats(ctx)
}

// counterPaths returns the paths of the sandbox's counter files, built
// once. Call it with s.mu held.
func (s *Sandbox) counterPaths() counterFiles {
	if s.counters.cpu == "" {
		s.counters = counterFilesOf(s.c.cgroupV2, CgroupsPath(s.c.cfg.Namespace, s.id))
	}
	return s.counters
}

func (s *Sandbox) readStats(ctx context.Context) (sandbox.Stats, error) {
	if st, err := readCgroupStats(s.c.cgroupV2, s.counterPaths(), s.cgroup.read); err == nil {
		s.oomSeen.Store(st.OOMKills)
		return st, nil
	}
	m, err := s.task.Metrics(s.c.ctx(ctx))
	if err != nil {
		return sandbox.Stats{}, err
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return sandbox.Stats{}, err
	}
	var st sandbox.Stats
	switch m := v.(type) {
	case *cgroup1stats.Metrics:
		st.CPUNanos = m.GetCPU().GetUsage().GetTotal()
		st.MemoryPeakBytes = m.GetMemory().GetUsage().GetMax()
		st.MemoryUsageBytes = m.GetMemory().GetUsage().GetUsage()
		st.OOMKills = m.GetMemoryOomControl().GetOomKill()
	case *cgroup2stats.Metrics:
		st.CPUNanos = m.GetCPU().GetUsageUsec() * 1000
		st.MemoryPeakBytes = m.GetMemory().GetMaxUsage()
		st.MemoryUsageBytes = m.GetMemory().GetUsage()
		st.OOMKills = m.GetMemoryEvents().GetOomKill()
	default:
		return sandbox.Stats{}, fmt.Errorf("metrics of type %T: %w", v, errdefs.ErrNotImplemented)
	}
	s.oomSeen.Store(st.OOMKills)
	return st, nil
}

// keepStats reads the counters one last time, before the sandbox ends.
func (s *Sandbox) keepStats(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.final == nil {
		st, err := s.readStats(ctx)
		if err != nil {
			s.c.log.Debug("read stats before the end", "container_id", s.id, "err", err)
		}
		s.final = &st
		s.cgroup.close()
	}
}

package runtime

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// cgroupRoot is where the cgroup hierarchies are mounted.
var cgroupRoot = "/sys/fs/cgroup"

// readCgroupStats reads a sandbox's counters straight from cgroupfs: a few
// small files, where asking containerd costs two IPC round trips and a
// read of every controller. It fails when the files are not there (another
// cgroup layout, a runtime that keeps its own), and the caller then asks
// containerd.
func readCgroupStats(v2 bool, cgroupPath string) (Stats, error) {
	var st Stats
	var err error
	read := func(file string) []byte {
		if err != nil {
			return nil
		}
		var b []byte
		b, err = os.ReadFile(filepath.Join(cgroupRoot, file))
		return b
	}
	if v2 {
		dir := cgroupPath
		st.CPUNanos = field(read(filepath.Join(dir, "cpu.stat")), "usage_usec", &err) * 1000
		st.MemoryUsageBytes = number(read(filepath.Join(dir, "memory.current")), &err)
		st.OOMKills = field(read(filepath.Join(dir, "memory.events")), "oom_kill", &err)
		if err == nil {
			// memory.peak is from Linux 5.19; before, the peak is unknown.
			if b, perr := os.ReadFile(filepath.Join(cgroupRoot, dir, "memory.peak")); perr == nil {
				st.MemoryPeakBytes = number(b, &err)
			}
		}
	} else {
		st.CPUNanos = number(read(filepath.Join("cpuacct", cgroupPath, "cpuacct.usage")), &err)
		st.MemoryUsageBytes = number(read(filepath.Join("memory", cgroupPath, "memory.usage_in_bytes")), &err)
		st.MemoryPeakBytes = number(read(filepath.Join("memory", cgroupPath, "memory.max_usage_in_bytes")), &err)
		st.OOMKills = field(read(filepath.Join("memory", cgroupPath, "memory.oom_control")), "oom_kill", &err)
	}
	return st, err
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
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := bytes.Cut(sc.Bytes(), []byte{' '})
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
	file := filepath.Join(cgroupRoot, "pids", cgroupPath, "pids.events")
	if v2 {
		file = filepath.Join(cgroupRoot, cgroupPath, "pids.events")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return false
	}
	var ferr error
	return field(b, "max", &ferr) > 0 && ferr == nil
}

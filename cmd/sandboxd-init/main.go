// Command sandboxd-init is PID 1 of every sandbox, and the helper that
// sandboxd runs inside a sandbox for what must happen there:
//
//	sandboxd-init                 PID 1: run programs for sandboxd (see agent.go), reap orphans
//	sandboxd-init reap            kill every process of the sandbox but PID 1
//	sandboxd-init get PATH        copy a workspace file to stdout
//	sandboxd-init put PATH MODE   copy stdin to a workspace file
//	sandboxd-init list            list the workspace as JSON lines
//	sandboxd-init collect MAX GLOB...  the matching files, as JSON lines
//
// It is not a security boundary: it runs as the sandbox's user, holds no
// secret and has no channel out of the sandbox. A program that kills or
// replaces it harms only its own sandbox.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
)

// Exit codes of the file helpers, read by sandboxd.
const (
	exitNotFound = 3 // no such file
	exitInvalid  = 4 // not a regular file, or a bad path
)

func main() {
	if len(os.Args) < 2 {
		runAgent()
		return
	}
	var err error
	switch cmd := os.Args[1]; {
	case cmd == "reap" && len(os.Args) == 2:
		err = reap()
	case cmd == "get" && len(os.Args) == 3:
		err = get(os.Args[2])
	case cmd == "put" && len(os.Args) == 4:
		mode, perr := strconv.ParseUint(os.Args[3], 8, 32)
		if perr != nil || mode > 0o777 {
			fail(exitInvalid, fmt.Errorf("mode %q", os.Args[3]))
		}
		err = put(os.Args[2], uint32(mode))
	case cmd == "list" && len(os.Args) == 2:
		err = list()
	case cmd == "collect" && len(os.Args) >= 4:
		max, perr := strconv.ParseInt(os.Args[2], 10, 64)
		if perr != nil || max < 0 {
			fail(exitInvalid, fmt.Errorf("max %q", os.Args[2]))
		}
		var files []agentproto.Collected
		if files, err = collect(os.Args[3:], max); err == nil {
			enc := json.NewEncoder(os.Stdout)
			for _, f := range files {
				enc.Encode(f)
			}
		}
	default:
		fail(2, fmt.Errorf("usage: sandboxd-init [reap | get PATH | put PATH MODE | list | collect MAX GLOB...]"))
	}
	if err != nil {
		fail(exitCode(err), err)
	}
}

func fail(code int, err error) {
	fmt.Fprintln(os.Stderr, "sandboxd-init:", err)
	os.Exit(code)
}

func exitCode(err error) int {
	var errno syscall.Errno
	errors.As(err, &errno)
	switch {
	case os.IsNotExist(err) || errno == syscall.ENOENT:
		return exitNotFound
	case errors.Is(err, errInvalid) || os.IsExist(err):
		return exitInvalid
	}
	switch errno {
	case syscall.EISDIR, syscall.ENOTDIR, syscall.EXDEV, syscall.ELOOP, syscall.EINVAL:
		return exitInvalid
	}
	return 1
}

// reap kills every process the sandbox's user runs, but PID 1 and itself:
// kill(-1) is atomic against fork, so nothing escapes by forking.
func reap() error {
	if err := syscall.Kill(-1, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		return err
	}
	return nil
}

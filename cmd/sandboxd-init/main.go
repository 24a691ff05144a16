// Command sandboxd-init is PID 1 of every sandbox: the agent through which
// sandboxd runs programs and reads and writes the workspace's files, over
// its stdio (see agent.go and runtime/agentproto), and the reaper of the
// orphans that programs leave.
//
// It is not a security boundary: it runs as the sandbox's user, holds no
// secret and has no channel out of the sandbox. A program that kills or
// replaces it harms only its own sandbox.
package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
)

func main() {
	if os.Args[0] == jailInitName {
		runJail()
		return
	}
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: sandboxd-init (PID 1 of a sandbox; it takes no arguments)")
		os.Exit(2)
	}
	runAgent()
}

// errorCode classifies a file operation's failure for sandboxd: no such
// file, or not a regular file / a bad path; "" for any other failure.
func errorCode(err error) string {
	var errno syscall.Errno
	errors.As(err, &errno)
	switch {
	case os.IsNotExist(err) || errno == syscall.ENOENT:
		return agentproto.CodeNotFound
	case errors.Is(err, errInvalid) || os.IsExist(err):
		return agentproto.CodeInvalid
	}
	switch errno {
	case syscall.EISDIR, syscall.ENOTDIR, syscall.EXDEV, syscall.ELOOP, syscall.EINVAL:
		return agentproto.CodeInvalid
	}
	return ""
}

// Command sandboxd-init is PID 1 of every sandbox. It holds the sandbox open
// while sandboxd runs programs in it, and reaps the orphans those programs
// leave, so that zombies never fill the sandbox's pids limit.
//
// It is not a security boundary: it holds no secret and has no channel out
// of the sandbox. A program that kills it only ends its own sandbox.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// As PID 1, a signal without a handler is ignored; Go installs handlers,
	// so say plainly that only SIGCHLD matters.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE, syscall.SIGALRM)
	sigc := make(chan os.Signal, 16)
	signal.Notify(sigc, syscall.SIGCHLD)
	for range sigc {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

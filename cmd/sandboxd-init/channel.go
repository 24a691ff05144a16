package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
)

// agentChannel is the agent's channel to sandboxd (channel).
func agentChannel() (src *stallReader, in *bufio.Reader, out io.Writer) {
	name := ""
	if os.Getenv(agentproto.ChannelEnv) == "1" {
		name = agentproto.ChannelName
	}
	return channel(os.Stdin, os.Stdout, name, requestStall, fromOutside)
}

// channel is the agent's channel to sandboxd, for its whole life: its
// stdio, or, in a cell, a connection on its abstract socket name from a
// peer that trusted accepts: whichever brings a request first. The socket
// is in the cell's network namespace, where no program runs (each jail
// has its own), and it is closed once the choice is made: no one can
// connect later.
func channel(stdinFile *os.File, stdout io.Writer, name string, stall time.Duration, trusted func(*net.UnixConn) bool) (src *stallReader, in *bufio.Reader, out io.Writer) {
	stdin := newStallReader(stdinFile, stall)
	stdinBuf := bufio.NewReaderSize(stdin, 1<<20)
	if name == "" {
		return stdin, stdinBuf, stdout
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandboxd-init: stdio only:", err)
		return stdin, stdinBuf, stdout
	}
	defer ln.Close()
	type conn struct {
		c   *net.UnixConn
		src *stallReader
		in  *bufio.Reader
	}
	// A connection is taken once a request comes on it: sandboxd may
	// connect, find that the socket is not its agent's, and close.
	conns := make(chan conn, 1)
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return // closed
			}
			if !trusted(c) {
				c.Close()
				continue
			}
			go func() {
				src := &stallReader{f: c, stall: stall}
				in := bufio.NewReaderSize(src, 1<<20)
				if _, err := in.Peek(1); err != nil {
					c.Close()
					return
				}
				select {
				case conns <- conn{c, src, in}:
				default:
					c.Close()
				}
			}()
		}
	}()
	input := make(chan struct{}, 1)
	go func() {
		stdinBuf.Peek(1) // returns with the first byte, or at the end
		input <- struct{}{}
	}()
	select {
	case c := <-conns:
		return c.src, c.in, c.c
	case <-input:
		return stdin, stdinBuf, stdout
	}
}

// fromOutside reports whether c's peer is outside this sandbox's PID
// namespace, as sandboxd is: the kernel gives pid 0 for a process this
// namespace cannot name.
func fromOutside(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || credErr != nil {
		return false
	}
	return cred.Pid == 0
}

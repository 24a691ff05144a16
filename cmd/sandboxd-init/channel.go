package main

import (
	"bufio"
	"fmt"
	"io"
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
// connect later. (Sockets through x/sys/unix, not package net: the agent
// stays small.)
func channel(stdinFile *os.File, stdout io.Writer, name string, stall time.Duration, trusted func(*os.File) bool) (src *stallReader, in *bufio.Reader, out io.Writer) {
	stdin := newStallReader(stdinFile, stall)
	stdinBuf := bufio.NewReaderSize(stdin, 1<<20)
	if name == "" {
		return stdin, stdinBuf, stdout
	}
	ln, err := listenAbstract(name)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandboxd-init: stdio only:", err)
		return stdin, stdinBuf, stdout
	}
	defer ln.Close()
	type conn struct {
		c   *os.File
		src *stallReader
		in  *bufio.Reader
	}
	// A connection is taken once a request comes on it: sandboxd may
	// connect, find that the socket is not its agent's, and close.
	conns := make(chan conn, 1)
	go func() {
		for {
			c, err := accept(ln)
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

// listenAbstract listens on the abstract Unix socket name ("@…"), in
// non-blocking mode, so that Go's poller waits on it and a close ends an
// accept.
func listenAbstract(name string) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: name}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Listen(fd, 4); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// accept waits for a connection on ln, until ln is closed.
func accept(ln *os.File) (*os.File, error) {
	raw, err := ln.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	var acceptErr error
	if err := raw.Read(func(lfd uintptr) bool {
		fd, _, acceptErr = unix.Accept4(int(lfd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		return acceptErr != unix.EAGAIN
	}); err != nil {
		return nil, err
	}
	if acceptErr != nil {
		return nil, acceptErr
	}
	return os.NewFile(uintptr(fd), "sandboxd"), nil
}

// fromOutside reports whether c's peer is outside this sandbox's PID
// namespace, as sandboxd is: the kernel gives pid 0 for a process this
// namespace cannot name.
func fromOutside(c *os.File) bool {
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

package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	goruntime "runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
)

// dialAgentWithin bounds the wait for a cell's agent to listen, from its
// task's start.
const dialAgentWithin = 5 * time.Second

// dialAgent connects to the socket of the cell's agent whose pid is pid
// (agentproto.ChannelName), from outside the cell: the socket is made in
// the cell's network namespace, which alone holds the name (each jail has
// a network namespace of its own). The agent at the other end is checked
// to be pid. Where the cell's processes cannot be seen (a daemon without
// the host's PID namespace), it fails, and the agent is driven through
// its stdio instead.
func dialAgent(ctx context.Context, pid uint32) (*net.UnixConn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialAgentWithin)
	defer cancel()
	for {
		c, err := dialAgentOnce(pid)
		if !errors.Is(err, unix.ECONNREFUSED) {
			return c, err
		}
		// The agent does not listen yet.
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the agent does not listen: %w", ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

func dialAgentOnce(pid uint32) (*net.UnixConn, error) {
	fd, err := socketInNetNS(pid)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: agentproto.ChannelName}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "agent")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	uc := c.(*net.UnixConn)
	if peer, err := peerPid(uc); err != nil || peer != int32(pid) {
		uc.Close()
		return nil, fmt.Errorf("the socket's listener is pid %d, not the agent's %d (%v)", peer, pid, err)
	}
	return uc, nil
}

// socketInNetNS makes a Unix socket in the network namespace of process
// pid, on a thread of its own: a thread that cannot come back to the
// daemon's namespace is left locked, and Go ends it with its goroutine.
func socketInNetNS(pid uint32) (int, error) {
	type result struct {
		fd  int
		err error
	}
	res := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		own, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			goruntime.UnlockOSThread()
			res <- result{-1, err}
			return
		}
		defer unix.Close(own)
		target, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			goruntime.UnlockOSThread()
			res <- result{-1, err}
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			goruntime.UnlockOSThread()
			res <- result{-1, err}
			return
		}
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if unix.Setns(own, unix.CLONE_NEWNET) == nil {
			goruntime.UnlockOSThread()
		}
		res <- result{fd, err}
	}()
	r := <-res
	return r.fd, r.err
}

// peerPid is the pid of c's peer, in the daemon's PID namespace.
func peerPid(c *net.UnixConn) (int32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, credErr
	}
	return cred.Pid, nil
}

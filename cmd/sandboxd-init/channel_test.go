package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
)

// chosen is what channel returned: the channel's first request, and its
// way back.
type chosen struct {
	req agentproto.Request
	out io.Writer
}

// startChannel runs channel on a pipe as stdin and a socket name of the
// test's own, as a cell's agent does; trusted decides on each peer.
func startChannel(t *testing.T, trusted func(*os.File) bool) (name string, stdin *os.File, stdout io.Writer, got <-chan chosen) {
	t.Helper()
	r, w := blockingPipe(t)
	name = fmt.Sprintf("@sandboxd-agent-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	out := new(bytes.Buffer) // the agent's stdout, told apart by identity
	c := make(chan chosen, 1)
	go func() {
		_, in, o := channel(r, out, name, time.Second, trusted)
		req, err := agentproto.ReadRequestLine(in)
		if err != nil {
			t.Error(err)
		}
		c <- chosen{req, o}
	}()
	// The listener is up once a connection is refused no more.
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, err := net.Dial("unix", name)
		if err == nil {
			conn.Close() // no request: not taken
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent's socket does not listen: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	return name, w, out, c
}

// blockingPipe is a pipe in blocking mode, as the agent's stdin is. It
// stays open for the test binary's life, as stdin does for the agent's:
// channel holds its read end in a File of its own, which a close here
// would leave reading whatever pipe gets the descriptor's number next.
func blockingPipe(t *testing.T) (r, w *os.File) {
	var fds [2]int
	if err := syscall.Pipe(fds[:]); err != nil {
		t.Fatal(err)
	}
	r, w = os.NewFile(uintptr(fds[0]), "stdin"), os.NewFile(uintptr(fds[1]), "daemon")
	keptPipes = append(keptPipes, r, w)
	return r, w
}

var keptPipes []*os.File

func request(t *testing.T, w io.Writer, sync string) {
	t.Helper()
	if err := agentproto.WriteRequest(w, agentproto.Request{Sync: sync}); err != nil {
		t.Fatal(err)
	}
}

func await(t *testing.T, got <-chan chosen) chosen {
	t.Helper()
	select {
	case c := <-got:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("channel chose nothing")
	}
	return chosen{}
}

// dial connects to the agent's socket name, until the test ends.
func dial(t *testing.T, name string) net.Conn {
	t.Helper()
	conn, err := net.Dial("unix", name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// refused reports whether a connection to name is refused: the listener
// is gone.
func refused(name string) bool {
	c, err := net.Dial("unix", name)
	if err == nil {
		c.Close()
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

func TestChannelTakesTheSocketThatBringsARequest(t *testing.T) {
	name, stdin, _, got := startChannel(t, func(*os.File) bool { return true })
	conn := dial(t, name)
	request(t, conn, "on the socket")
	c := await(t, got)
	if c.req.Sync != "on the socket" {
		t.Fatalf("first request %+v", c.req)
	}
	if _, ok := c.out.(*os.File); !ok {
		t.Errorf("frames go to %T, not the connection", c.out)
	}
	if !refused(name) {
		t.Error("the socket still takes connections once the channel is chosen")
	}
	request(t, stdin, "on stdin") // read by no one: no panic, no choice
}

func TestChannelTakesStdinWhenItComesFirst(t *testing.T) {
	name, stdin, stdout, got := startChannel(t, func(*os.File) bool { return true })
	request(t, stdin, "on stdin")
	c := await(t, got)
	if c.req.Sync != "on stdin" || c.out != stdout {
		t.Fatalf("first request %+v, frames to %v", c.req, c.out)
	}
	if !refused(name) {
		t.Error("the socket still takes connections once stdin is chosen")
	}
}

func TestChannelRefusesUntrustedPeers(t *testing.T) {
	name, stdin, stdout, got := startChannel(t, func(*os.File) bool { return false })
	conn := dial(t, name)
	// Closed by the agent, now or as soon as it sees the peer: a write
	// may fail.
	agentproto.WriteRequest(conn, agentproto.Request{Sync: "from inside"})
	time.Sleep(50 * time.Millisecond)
	request(t, stdin, "on stdin")
	if c := await(t, got); c.req.Sync != "on stdin" || c.out != stdout {
		t.Fatalf("an untrusted peer's request was taken: %+v", c.req)
	}
}

func TestChannelWithoutSocket(t *testing.T) {
	r, w := blockingPipe(t)
	request(t, w, "on stdin")
	_, in, out := channel(r, w, "", time.Second, nil)
	if req, err := agentproto.ReadRequestLine(in); err != nil || req.Sync != "on stdin" || out != io.Writer(w) {
		t.Fatalf("%+v %v, frames to %v", req, err, out)
	}
}

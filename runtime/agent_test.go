package runtime

import (
	"bufio"
	"io"
	"log/slog"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/runtime/agentproto"
)

// Closing an agent connection ends its decoder, even one blocked on frames
// nobody reads, and fails the writer of the agent's output, so that the
// task's IO copy ends: nothing of it outlives its sandbox.
func TestAgentConnCloseEndsEverything(t *testing.T) {
	base := goruntime.NumGoroutine()
	a, _, out, _ := newAgentConn(slog.New(slog.NewTextHandler(io.Discard, nil)), "test")
	// More frames than the channel and the decoder's buffer hold, and nobody
	// reads them.
	frames := strings.Repeat(`{"s":1,"d":"eA=="}`+"\n", 1<<16)
	wrote := make(chan error, 1)
	go func() {
		_, err := io.WriteString(out, frames)
		wrote <- err
	}()
	time.Sleep(50 * time.Millisecond)
	a.close()
	select {
	case err := <-wrote:
		if err == nil {
			t.Error("the agent's output was taken whole after close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a write of the agent's output is still blocked after close")
	}
	// The decoder returns, although nobody took its frames.
	for deadline := time.Now().Add(5 * time.Second); goruntime.NumGoroutine() > base; {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after close, %d before the connection", goruntime.NumGoroutine(), base)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := a.send(agentproto.Request{Kill: true}); err == nil {
		t.Error("a send to a closed agent succeeded")
	}
}

// A request sent apart does not wait for the agent to take it, and goes
// out before every request sent after it.
func TestAgentConnSendApartKeepsOrder(t *testing.T) {
	a, in, _, _ := newAgentConn(slog.New(slog.NewTextHandler(io.Discard, nil)), "test")
	defer a.close()
	apart := make(chan struct{})
	go func() {
		a.sendApart(agentproto.Request{Prepare: true, Sync: "first"})
		a.sendApart(agentproto.Request{Prepare: true, Sync: "second"})
		close(apart)
	}()
	select {
	case <-apart:
	case <-time.After(5 * time.Second):
		t.Fatal("sendApart waited for a reader")
	}
	sent := make(chan error, 1)
	go func() { sent <- a.send(agentproto.Request{Args: []string{"true"}, Sync: "third"}) }()
	r := bufio.NewReader(in)
	for _, want := range []string{"first", "second", "third"} {
		req, err := agentproto.ReadRequestLine(r)
		if err != nil || req.Sync != want {
			t.Fatalf("got %+v (%v), want the request %q", req, err, want)
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
}

// The end of a sandbox's agent that sandboxd did not ask for is logged
// with what the agent wrote on its stderr: a warning when it said why (a
// Go runtime's fatal error), otherwise information (killed, as gVisor
// ends a sandbox out of memory). An end sandboxd asked for is not.
func TestAgentDeathLogged(t *testing.T) {
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(&logged, nil))
	a, _, _, stderr := newAgentConn(log, "test")
	defer a.close()
	s := &Sandbox{c: &Client{log: log}, id: "sbx-test", agent: a}

	s.logDeath(137)
	if got := logged.String(); !strings.Contains(got, "level=INFO") || !strings.Contains(got, "exit_code=137") || !strings.Contains(got, "container_id=sbx-test") {
		t.Errorf("a silent death: %q", got)
	}
	logged.Reset()
	io.WriteString(stderr, "runtime: failed to create new OS thread\nfatal error: newosproc\n")
	s.logDeath(2)
	if got := logged.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "exit_code=2") || !strings.Contains(got, `fatal error: newosproc`) {
		t.Errorf("a death with the agent's reason: %q", got)
	}
	logged.Reset()
	s.endAsked.Store(true)
	s.logDeath(137)
	if got := logged.String(); got != "" {
		t.Errorf("an end sandboxd asked for: %q", got)
	}
}

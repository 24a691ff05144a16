package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// cappedSocket is a ConnListener on a Unix socket in a test's directory,
// with what it accepts on a channel. Unless real is set, a peer's uid is
// the one its client socket is named after (see dialAs): one process can
// then be many uids.
type cappedSocket struct {
	l        *ConnListener
	path     string
	accepted chan net.Conn
}

func listenCapped(t *testing.T, lim ConnLimits, real bool) *cappedSocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	cs := &cappedSocket{l: NewConnListener(ln, lim, slog.New(slog.DiscardHandler)), path: path, accepted: make(chan net.Conn, 256)}
	if !real {
		cs.l.peer = func(c net.Conn) Caller {
			var uid uint32
			var n int
			if _, err := fmt.Sscanf(filepath.Base(c.RemoteAddr().String()), "c%d-%d", &uid, &n); err != nil {
				return Caller{}
			}
			return Caller{UID: uid, Known: true}
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := cs.l.Accept()
			if err != nil {
				return
			}
			cs.accepted <- c
		}
	}()
	t.Cleanup(func() {
		cs.l.Close()
		<-done
		close(cs.accepted)
		for c := range cs.accepted {
			c.Close()
		}
	})
	return cs
}

var clientSeq atomic.Int64

// dialAs connects from a client socket named after uid.
func (cs *cappedSocket) dialAs(t *testing.T, uid uint32) net.Conn {
	t.Helper()
	local := &net.UnixAddr{Net: "unix", Name: filepath.Join(filepath.Dir(cs.path), fmt.Sprintf("c%d-%d", uid, clientSeq.Add(1)))}
	c, err := net.DialUnix("unix", local, &net.UnixAddr{Net: "unix", Name: cs.path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// admitted waits for the listener to hand a connection over.
func (cs *cappedSocket) admitted(t *testing.T, what string) net.Conn {
	t.Helper()
	select {
	case c := <-cs.accepted:
		return c
	case <-time.After(2 * time.Second):
		t.Fatalf("%s: not accepted", what)
		return nil
	}
}

// refused reads the answer of a refused connection: a whole HTTP/1.1
// response with the API's JSON error, then the end of the connection.
func (cs *cappedSocket) refused(t *testing.T, c net.Conn, what string, status int, code string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	// A client that has sent its request is answered as well.
	fmt.Fprint(c, "GET /v1/health HTTP/1.1\r\nHost: sandboxd\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s: no HTTP answer: %v", what, err)
	}
	body, err := io.ReadAll(resp.Body)
	var e api.Error
	if err != nil || json.Unmarshal(body, &e) != nil {
		t.Fatalf("%s: body %q: %v", what, body, err)
	}
	if resp.StatusCode != status || e.Code != code || e.Message == "" || !resp.Close || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("%s: %d %v %+v, want %d %s and Connection: close", what, resp.StatusCode, resp.Header, e, status, code)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("%s: the connection stays open after the answer: %d %v", what, n, err)
	}
	select {
	case <-cs.accepted:
		t.Errorf("%s: a refused connection reached the server", what)
	default:
	}
}

func TestConnListenerCaps(t *testing.T) {
	cs := listenCapped(t, ConnLimits{Max: 6, PerUID: 2, RootReserve: 2}, false)
	cs.dialAs(t, 1000)
	first := cs.admitted(t, "uid 1000's first")
	cs.dialAs(t, 1000)
	cs.admitted(t, "uid 1000's second")
	cs.refused(t, cs.dialAs(t, 1000), "uid 1000's third", http.StatusTooManyRequests, api.CodeResourceExhausted)

	cs.dialAs(t, 1001)
	cs.admitted(t, "uid 1001's first")
	cs.dialAs(t, 1001)
	cs.admitted(t, "uid 1001's second")
	// Four of six: the rest is root's.
	cs.refused(t, cs.dialAs(t, 1002), "uid 1002 with the daemon full", http.StatusServiceUnavailable, api.CodeUnavailable)
	cs.dialAs(t, 0)
	cs.admitted(t, "root in its reserve")
	cs.dialAs(t, 0)
	cs.admitted(t, "root's second")
	// Root has a share like any uid.
	cs.refused(t, cs.dialAs(t, 0), "root's third", http.StatusTooManyRequests, api.CodeResourceExhausted)
	if st := cs.l.Stats(); st.Open != 6 || st.RefusedPerUID != 2 || st.RefusedAll != 1 {
		t.Errorf("stats %+v, want 6 open, 2 refused per uid, 1 full", st)
	}

	// A closed connection gives its place back, once however often it is
	// closed.
	first.Close()
	first.Close()
	cs.dialAs(t, 1002)
	cs.admitted(t, "uid 1002 once uid 1000 closed one")
	cs.refused(t, cs.dialAs(t, 1003), "uid 1003 with the daemon full again", http.StatusServiceUnavailable, api.CodeUnavailable)

	// Caps lowered at reload refuse new connections; open ones stay.
	cs.l.SetLimits(ConnLimits{Max: 6, PerUID: 1, RootReserve: 2})
	cs.refused(t, cs.dialAs(t, 0), "root over a lowered share", http.StatusTooManyRequests, api.CodeResourceExhausted)
	if st := cs.l.Stats(); st.Open != 6 {
		t.Errorf("%d open after the reload, want 6", st.Open)
	}
}

// Refused clients that never read nor close do not hold Accept up.
func TestConnListenerRefusalsDoNotBlock(t *testing.T) {
	cs := listenCapped(t, ConnLimits{Max: 4, PerUID: 1, RootReserve: 1}, false)
	cs.dialAs(t, 1000)
	cs.admitted(t, "uid 1000's first")
	start := time.Now()
	for range 2 * maxLingering {
		cs.dialAs(t, 1000)
	}
	cs.dialAs(t, 0)
	cs.admitted(t, "root after 128 refusals")
	if d := time.Since(start); d > requestWait {
		t.Errorf("root was accepted after %v behind refused clients", d)
	}
	if st := cs.l.Stats(); st.RefusedPerUID != 2*maxLingering {
		t.Errorf("%d refused, want %d", st.RefusedPerUID, 2*maxLingering)
	}
}

// The peer's credentials come from the socket, and reach the requests.
func TestConnListenerPeerCredentials(t *testing.T) {
	cs := listenCapped(t, ConnLimits{Max: 4, PerUID: 1, RootReserve: 1}, true)
	c, err := net.Dial("unix", cs.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := cs.admitted(t, "the test's connection")
	caller := callerOf(ConnContext(context.Background(), sc))
	if !caller.Known || caller.UID != uint32(os.Getuid()) || caller.PID != int32(os.Getpid()) {
		t.Errorf("caller %+v, want uid %d pid %d", caller, os.Getuid(), os.Getpid())
	}
	c2, err := net.Dial("unix", cs.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	cs.refused(t, c2, "the test's second connection", http.StatusTooManyRequests, api.CodeResourceExhausted)
}

func TestConnLimitsFit(t *testing.T) {
	for _, tc := range []struct {
		nofile  uint64
		want    ConnLimits
		lowered bool
	}{
		{1 << 20, ConnLimits{Max: 1024, PerUID: 128, RootReserve: 16}, false},
		{2048, ConnLimits{Max: 1024, PerUID: 128, RootReserve: 16}, false},
		{1024, ConnLimits{Max: 512, PerUID: 128, RootReserve: 16}, true},
		{100, ConnLimits{Max: 50, PerUID: 34, RootReserve: 16}, true},
		{20, ConnLimits{Max: 10, PerUID: 9, RootReserve: 1}, true},
		{1, ConnLimits{Max: 1, PerUID: 1, RootReserve: 0}, true},
	} {
		got, lowered := DefaultConnLimits().Fit(tc.nofile)
		if got != tc.want || lowered != tc.lowered {
			t.Errorf("nofile %d: %+v %v, want %+v %v", tc.nofile, got, lowered, tc.want, tc.lowered)
		}
	}
}

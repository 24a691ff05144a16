package daemon

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
	"github.com/sandboxd/sandboxd/runtime/sandbox/sandboxtest"
)

// gauge reads a gauge of the server's metrics; -1 when absent.
func gauge(t *testing.T, s *Server, name string) float64 {
	t.Helper()
	mfs, err := s.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// A sandbox is known from before its container exists: one being created
// is not a leak, and only a container no part of the daemon knows is.
func TestLeakedContainersAreOnlyUnknownOnes(t *testing.T) {
	release := make(chan struct{}) // creates wait on it once their container exists
	rt := &sandboxtest.Runtime{Creating: func(sandbox.Config) { <-release }}
	s := newTestServer(t, rt, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		post(t, s, `{"language":"python","code":"print(1)"}`)
	}()
	for {
		if ids, _ := rt.List(context.Background()); len(ids) == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if got := gauge(t, s, "sandboxd_leaked_containers"); got != 0 {
		t.Errorf("a sandbox being created counts as leaked: %v", got)
	}
	close(release)
	<-done
	s.Wait()
	rt.AddContainer("planted")
	if got, n := gauge(t, s, "sandboxd_leaked_containers"), gauge(t, s, "sandboxd_containers"); got != 1 || n != 1 {
		t.Errorf("with one planted container: %v leaked of %v", got, n)
	}
}

// A sandbox that cannot be deleted while containerd is away is deleted once
// it is back, and is never counted as leaked meanwhile.
func TestUndeletedSandboxesGoOnceContainerdIsBack(t *testing.T) {
	rt := &sandboxtest.Runtime{}
	rt.Exec = func(context.Context, sandbox.Process) (sandbox.ExitResult, error) {
		rt.SetAway(true) // containerd dies while the program runs
		return sandbox.ExitResult{}, nil
	}
	s := newTestServer(t, rt, nil)
	if w, _, _ := post(t, s, `{"language":"python","code":"print(1)"}`); w.Code != 200 {
		t.Fatalf("execute: %d %s", w.Code, w.Body)
	}
	s.Wait()
	if got := gauge(t, s, "sandboxd_undeleted_sandboxes"); got != 1 {
		t.Fatalf("undeleted: %v", got)
	}
	s.retryDeletes(context.Background())
	if got := gauge(t, s, "sandboxd_undeleted_sandboxes"); got != 1 {
		t.Fatalf("deleted while containerd is away? undeleted: %v", got)
	}
	rt.SetAway(false)
	if got := gauge(t, s, "sandboxd_leaked_containers"); got != 0 {
		t.Errorf("the undeleted sandbox counts as leaked: %v", got)
	}
	s.retryDeletes(context.Background())
	if ids, _ := rt.List(context.Background()); len(ids) != 0 || gauge(t, s, "sandboxd_undeleted_sandboxes") != 0 {
		t.Errorf("after containerd is back: containers %v, undeleted %v", ids, gauge(t, s, "sandboxd_undeleted_sandboxes"))
	}
	n := 0
	s.known.Range(func(any, any) bool { n++; return true })
	if n != 0 {
		t.Errorf("%d sandboxes still known", n)
	}
}

// A streaming client that reads nothing cannot hold its execution past
// the timeout: the writes to it end at the execution's deadline, and the
// program, which writes without end, is killed then.
func TestStalledStreamEndsAtTimeout(t *testing.T) {
	ended := make(chan time.Time, 1)
	rt := &sandboxtest.Runtime{Exec: func(ctx context.Context, p sandbox.Process) (sandbox.ExitResult, error) {
		chunk := make([]byte, 64<<10)
		for ctx.Err() == nil {
			p.Stdout.Write(chunk)
		}
		ended <- time.Now()
		return sandbox.ExitResult{Killed: true}, nil
	}}
	s := newTestServer(t, rt, func(l *Limits) { l.OutputBytes = 1 << 30 })
	srv := httptest.NewServer(s)
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"language":"python","code":"x","timeout_ms":500}`
	start := time.Now()
	fmt.Fprintf(conn, "POST /v1/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: %s\r\nContent-Length: %d\r\n\r\n%s", api.NDJSON, len(body), body)
	select {
	case at := <-ended:
		if took := at.Sub(start); took > 3*time.Second {
			t.Errorf("the execution ended %v after its start; its timeout is 500ms", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the execution outlived its timeout by 10s while its client read nothing")
	}
}

// A character cut by the end of a program's write is held back and sent
// whole with the next chunk: no chunk ends inside a character.
func TestStreamHoldsBackACutCharacter(t *testing.T) {
	w := httptest.NewRecorder()
	st := newStream(w)
	out := st.output(api.EventStdout)
	out([]byte("a\xe2\x82"))
	out([]byte("\xac!"))
	var chunks []string
	for _, line := range strings.Split(strings.TrimSpace(w.Body.String()), "\n") {
		var ev api.StreamEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if ev.Encoding != "" {
			t.Errorf("chunk %q sent as %s: it was cut inside a character", ev.Data, ev.Encoding)
		}
		chunks = append(chunks, ev.Data)
	}
	if !slices.Equal(chunks, []string{"a", "\u20ac!"}) {
		t.Errorf("chunks %q, want [a €!]", chunks)
	}
}

// Writers that share an event type (the compiler's stdout and stderr, both
// sent as stderr) each complete their own cut characters: another's chunk
// in between is not glued to the cut one.
func TestStreamHoldsBackEachWritersCutCharacter(t *testing.T) {
	w := httptest.NewRecorder()
	st := newStream(w)
	out, errOut := st.outputAs("compiler stdout", api.EventStderr), st.outputAs("compiler stderr", api.EventStderr)
	out([]byte("a\xe2\x82"))
	errOut([]byte("b\xe2"))
	out([]byte("\xac!"))
	st.flush("compiler stdout", api.EventStderr)
	st.flush("compiler stderr", api.EventStderr) // a writer that ended inside a character
	var chunks []string
	for _, line := range strings.Split(strings.TrimSpace(w.Body.String()), "\n") {
		var ev api.StreamEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if ev.Type != api.EventStderr {
			t.Errorf("event %+v", ev)
		}
		chunks = append(chunks, ev.Data+ev.Encoding)
	}
	if !slices.Equal(chunks, []string{"a", "b", "\u20ac!", "4g==base64"}) {
		t.Errorf("chunks %q, want [a b €! 4g==base64]", chunks)
	}
}

// decodeBase64 agrees with the standard library's DecodeString, padding,
// newlines and corrupt input included.
func TestDecodeBase64(t *testing.T) {
	inputs := []string{"", "QQ==", "QUI=", "QUJD", "QUJDRA==", "QUJD\nRA==", "QUJDRA", "QU=D", "Q", "!!!!", "QUJDRA==QQ=="}
	// And random strings of base64's alphabet, padding and newlines.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n"
	for i := range 2000 {
		b := make([]byte, i%37)
		for j := range b {
			b[j] = alphabet[(i*31+j*17+j*j)%len(alphabet)]
		}
		inputs = append(inputs, string(b), base64.StdEncoding.EncodeToString(b))
	}
	for _, in := range inputs {
		want, wantErr := base64.StdEncoding.DecodeString(in)
		got, err := decodeBase64(in)
		if (err == nil) != (wantErr == nil) || (err == nil && !bytes.Equal(got, want)) {
			t.Errorf("%q: %q %v, want %q %v", in, got, err, want, wantErr)
		}
	}
}

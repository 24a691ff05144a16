package client_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/sandboxd/sandboxd/ctl/client"
	"github.com/sandboxd/sandboxd/daemon/api"
)

// serve answers every request on a Unix socket with h.
func serve(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return sock
}

// TestServerVersionConcurrent reads the server's version while another
// goroutine's requests set it, as sandboxctl execute -i - -v does with
// the goroutine that sends stdin; run with -race.
func TestServerVersionConcurrent(t *testing.T) {
	sock := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(api.VersionHeader, "v1.2.3")
		w.Write([]byte(`{}`))
	})
	c := client.New(sock)
	var done atomic.Bool
	errc := make(chan error, 1)
	go func() {
		defer done.Store(true)
		for range 20 {
			if _, err := c.Info(context.Background()); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for !done.Load() {
		if v := c.ServerVersion(); v != "" && v != "v1.2.3" {
			t.Fatalf("ServerVersion %q", v)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if v := c.ServerVersion(); v != "v1.2.3" {
		t.Errorf("ServerVersion %q, want v1.2.3", v)
	}
}

// TestErrorBodies rebuilds the daemon's errors, and those of a plain-text
// body such as ServeMux's own 405.
func TestErrorBodies(t *testing.T) {
	for _, tc := range []struct {
		status        int
		body          string
		code, message string
	}{
		{404, `{"error":"session \"a1\": not found","code":"not_found"}`, api.CodeNotFound, `session "a1": not found`},
		{405, "Method Not Allowed\n", api.CodeInvalidArgument, "Method Not Allowed"},
		{503, "", api.CodeUnavailable, "503 Service Unavailable"},
	} {
		sock := serve(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.status)
			w.Write([]byte(tc.body))
		})
		_, err := client.New(sock).Info(context.Background())
		e, ok := err.(*api.Error)
		if !ok || e.Status != tc.status || e.Code != tc.code || e.Message != tc.message {
			t.Errorf("%d %q: %#v", tc.status, tc.body, err)
		}
	}
	_, err := client.New(filepath.Join(t.TempDir(), "none.sock")).Info(context.Background())
	if e, ok := errors.AsType[*api.Error](err); !ok || e.Code != api.CodeUnavailable {
		t.Errorf("no daemon: %v", err)
	}
}

func TestContent(t *testing.T) {
	for _, data := range [][]byte{[]byte("héllo\n"), {0xff, 0x00, 0xfe}, {}} {
		content, enc := client.EncodeContent(data)
		if (enc == api.EncodingBase64) == (string(data) == content) {
			t.Errorf("%q: %q encoded %q", data, content, enc)
		}
		back, err := client.DecodeContent(content, enc)
		if err != nil || !bytes.Equal(back, data) {
			t.Errorf("%q: back %q, %v", data, back, err)
		}
	}
}

// TestExecuteStreamCell reads a stream whose result is a cell that
// raised: its "error" is an object, where an error event's is a message.
func TestExecuteStreamCell(t *testing.T) {
	sock := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"type":"start","id":"e1"}` + "\n" + `{"type":"stdout","data":"hi\n"}` + "\n" +
			`{"type":"result","id":"e1","status":"failed","error":{"name":"ZeroDivisionError","message":"division by zero","traceback":"Traceback\n"},"state_lost":true}` + "\n"))
	})
	var out []string
	res, err := client.New(sock).ExecuteStream(context.Background(), &api.ExecuteRequest{SessionID: "s1", Code: "1/0"}, func(ev api.StreamEvent) error {
		out = append(out, ev.Type+":"+ev.Data)
		return nil
	})
	if err != nil || res.Error == nil || res.Error.Name != "ZeroDivisionError" || res.Error.Traceback != "Traceback\n" || !res.StateLost {
		t.Fatalf("result %+v, %v", res, err)
	}
	if len(out) != 2 || out[1] != "stdout:hi\n" {
		t.Errorf("events %q", out)
	}
	sock = serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"type":"start","id":"e1"}` + "\n" + `{"type":"error","error":"the session died","code":"failed_precondition"}` + "\n"))
	})
	_, err = client.New(sock).ExecuteStream(context.Background(), &api.ExecuteRequest{SessionID: "s1", Code: "x"}, func(api.StreamEvent) error { return nil })
	if e, ok := errors.AsType[*api.Error](err); !ok || e.Code != api.CodeFailedPrecondition || e.Message != "the session died" {
		t.Errorf("error event: %v", err)
	}
}

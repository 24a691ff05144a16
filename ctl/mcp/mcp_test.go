package mcp_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/ctl/client"
	"github.com/sandboxd/sandboxd/ctl/mcp"
	"github.com/sandboxd/sandboxd/daemon/api"
)

// slowDaemon answers executions after delay, with "slow" on stdout.
func slowDaemon(t *testing.T, delay time.Duration) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/execute", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		json.NewEncoder(w).Encode(api.ExecuteResult{Status: api.StatusOK, Stdout: "slow\n"})
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return sock
}

// TestServeAnswersAllBeforeEndOfInput sends requests and ends the input
// at once, as `printf … | sandboxctl mcp` does: every request is answered,
// a slow execution included, and Serve returns without error.
func TestServeAnswersAllBeforeEndOfInput(t *testing.T) {
	sock := slowDaemon(t, 500*time.Millisecond)
	in := strings.Join([]string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"execute","arguments":{"language":"python","code":"print(1)"}}}`,
	}, "\n") + "\n"
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := mcp.Serve(ctx, client.New(sock), "test", strings.NewReader(in), &out); err != nil {
		t.Fatalf("Serve: %v\n%s", err, out.String())
	}
	answers := map[float64]map[string]any{}
	dec := json.NewDecoder(&out)
	for dec.More() {
		var msg map[string]any
		if err := dec.Decode(&msg); err != nil {
			t.Fatal(err)
		}
		if id, ok := msg["id"].(float64); ok {
			answers[id] = msg
		}
	}
	for id := range 3 {
		if a := answers[float64(id+1)]; a == nil || a["error"] != nil {
			t.Errorf("request %d: answer %v", id+1, a)
		}
	}
	if b, _ := json.Marshal(answers[3]); !strings.Contains(string(b), `slow\n`) {
		t.Errorf("tools/call execute: %s", b)
	}
}

// interpreterDaemon creates sessions, recording their requests, and
// answers every execution as a cell that drew a figure.
func interpreterDaemon(t *testing.T, created chan<- api.CreateSessionRequest) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateSessionRequest
		json.NewDecoder(r.Body).Decode(&req)
		created <- req
		json.NewEncoder(w).Encode(api.Session{ID: "s1", Language: req.Language, Interpreter: &api.Interpreter{State: api.InterpreterFresh}})
	})
	mux.HandleFunc("POST /v1/execute", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.ExecuteResult{ID: "e1", SessionID: "s1", Status: api.StatusOK, Stdout: "drawn\n", Value: "<Figure size 640x480>",
			StateLost: true, Outputs: []api.Output{
				{MIME: "image/png", Data: base64.StdEncoding.EncodeToString(pngBytes)},
				{MIME: "image/svg+xml", Data: "<svg/>"},
				{MIME: "text/html", Data: "<b>hi</b>"},
			}})
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return sock
}

var pngBytes = []byte("\x89PNG\r\n\x1a\nnot really a png")

// TestInterpreterTools creates an interpreter session and runs a cell in
// it: the figure comes back as image content, the other outputs as text,
// the value and the lost state in the summary.
func TestInterpreterTools(t *testing.T) {
	created := make(chan api.CreateSessionRequest, 1)
	sock := interpreterDaemon(t, created)
	in := strings.Join([]string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"create_session","arguments":{"language":"python","interpreter":true}}}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"execute","arguments":{"session_id":"s1","code":"plt.plot([1, 2])"}}}`,
	}, "\n") + "\n"
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := mcp.Serve(ctx, client.New(sock), "test", strings.NewReader(in), &out); err != nil {
		t.Fatalf("Serve: %v\n%s", err, out.String())
	}
	if req := <-created; !req.Interpreter || req.Language != "python" {
		t.Errorf("create_session sent %+v", req)
	}
	type content struct {
		Type, Text, Data, MimeType string
	}
	type answer struct {
		ID     int
		Result struct {
			IsError bool
			Content []content
		}
	}
	var execute answer
	dec := json.NewDecoder(&out)
	for dec.More() && execute.ID != 3 {
		execute = answer{}
		if err := dec.Decode(&execute); err != nil {
			t.Fatal(err)
		}
	}
	res := execute.Result
	if execute.ID != 3 || res.IsError || len(res.Content) != 4 {
		t.Fatalf("execute answered %+v", execute)
	}
	if c := res.Content[0]; c.Type != "text" || !strings.Contains(c.Text, "the interpreter was restarted") || !strings.HasSuffix(c.Text, "--- value\n<Figure size 640x480>") {
		t.Errorf("summary %+v", c)
	}
	if c := res.Content[1]; c.Type != "image" || c.MimeType != "image/png" || c.Data != base64.StdEncoding.EncodeToString(pngBytes) {
		t.Errorf("figure %+v", c)
	}
	if c := res.Content[2]; c.Type != "text" || c.Text != "--- output 2 (image/svg+xml)\n<svg/>" {
		t.Errorf("svg %+v", c)
	}
	if c := res.Content[3]; c.Type != "text" || c.Text != "--- output 3 (text/html)\n<b>hi</b>" {
		t.Errorf("html %+v", c)
	}
}

package mcp_test

import (
	"bytes"
	"context"
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

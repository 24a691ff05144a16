//go:build integration

package main_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// TestMCP is a scripted MCP client session over stdio with `sandboxctl
// mcp`, against the real daemon: initialize, list the tools, call them.
func TestMCP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "sandboxd-test", Version: "1"}, nil)
	cmd := cli{}.command("--socket", socket, "mcp")
	session, err := client.Connect(ctx, procTransport{&mcp.CommandTransport{Command: cmd}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	tools, err := session.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	if strings.Join(names, " ") != "create_session delete_session download_file execute list_languages upload_file" {
		t.Errorf("tools: %v", names)
	}
	call := func(name string, args map[string]any, out any) *mcp.CallToolResult {
		t.Helper()
		res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if out != nil && !res.IsError {
			b, _ := json.Marshal(res.StructuredContent)
			if err := json.Unmarshal(b, out); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		return res
	}
	var res api.ExecuteResult
	r := call("execute", map[string]any{"language": "python", "code": "print(6*7)"}, &res)
	if r.IsError || res.Stdout != "42\n" || res.Status != api.StatusOK {
		t.Fatalf("execute: %+v %+v", r, res)
	}
	if text := r.Content[0].(*mcp.TextContent).Text; !strings.Contains(text, "status: ok") || !strings.Contains(text, "42") {
		t.Errorf("summary: %q", text)
	}
	r = call("execute", map[string]any{"language": "python", "code": "import platform; print(platform.release())", "runtime": "runsc"}, &res)
	if r.IsError || res.Stdout != "4.4.0\n" || res.Runtime != "runsc" {
		t.Fatalf("execute on gVisor: %+v %+v", r, res)
	}
	var sess api.Session
	call("create_session", map[string]any{"language": "bash"}, &sess)
	if len(sess.ID) != 32 {
		t.Fatalf("session: %+v", sess)
	}
	call("upload_file", map[string]any{"session_id": sess.ID, "path": "in.txt", "content": "from the agent"}, nil)
	call("execute", map[string]any{"session_id": sess.ID, "code": "tr a-z A-Z < in.txt > out.txt"}, &res)
	var f api.File
	call("download_file", map[string]any{"session_id": sess.ID, "path": "out.txt"}, &f)
	if f.Content != "FROM THE AGENT" {
		t.Errorf("download: %+v", f)
	}
	var langs api.LanguagesResponse
	call("list_languages", map[string]any{}, &langs)
	if len(langs.Languages) == 0 {
		t.Error("no languages")
	}
	call("delete_session", map[string]any{"session_id": sess.ID}, nil)
	if r := call("execute", map[string]any{"session_id": sess.ID, "code": "true"}, nil); !r.IsError {
		t.Error("a deleted session still runs code")
	}
	if r := call("execute", map[string]any{"language": "nosuchlanguage", "code": "x"}, nil); !r.IsError {
		t.Error("an unknown language is no error")
	}
}

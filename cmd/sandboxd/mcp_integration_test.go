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

// TestMCPPipedRequests writes its requests and closes sandboxctl mcp's
// input at once, as `printf … | sandboxctl mcp` does: each is answered, an
// execution still running at the end of input included, and sandboxctl
// exits 0.
func TestMCPPipedRequests(t *testing.T) {
	in := strings.Join([]string{
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"piped","version":"1"}}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`,
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"execute","arguments":{"language":"python","code":"import time; time.sleep(2); print(6*7)"}}}`,
	}, "\n") + "\n"
	out, errOut, code := sandboxctl(t, in, "mcp")
	if code != 0 {
		t.Errorf("exit %d, %q", code, errOut)
	}
	type answer struct {
		ID     int             `json:"id"`
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	answers := map[int]answer{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var a answer
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("%v: %q", err, line)
		}
		answers[a.ID] = a
	}
	for id := 1; id <= 3; id++ {
		if a, ok := answers[id]; !ok || a.Result == nil || a.Error != nil {
			t.Errorf("request %d: %+v; stdout %q, stderr %q", id, a, out, errOut)
		}
	}
	if !strings.Contains(string(answers[2].Result), `"name":"execute"`) {
		t.Errorf("tools/list: %s", answers[2].Result)
	}
	var call struct {
		IsError           bool              `json:"isError"`
		StructuredContent api.ExecuteResult `json:"structuredContent"`
	}
	if err := json.Unmarshal(answers[3].Result, &call); err != nil || call.IsError || call.StructuredContent.Stdout != "42\n" || call.StructuredContent.Status != api.StatusOK {
		t.Errorf("tools/call execute: %v %s", err, answers[3].Result)
	}
}

// TestMCPInterpreter: an agent creates an interpreter session through MCP,
// keeps state across execute calls, and sees its plot as image content.
func TestMCPInterpreter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "sandboxd-test", Version: "1"}, nil)
	session, err := client.Connect(ctx, procTransport{&mcp.CommandTransport{Command: cli{}.command("--socket", socket, "mcp")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	call := func(name string, args map[string]any) *mcp.CallToolResult {
		t.Helper()
		res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		if err != nil || res.IsError {
			t.Fatalf("%s: %v %+v", name, err, res)
		}
		return res
	}
	var sess api.Session
	b, _ := json.Marshal(call("create_session", map[string]any{"language": "python", "interpreter": true}).StructuredContent)
	if err := json.Unmarshal(b, &sess); err != nil || sess.Interpreter == nil {
		t.Fatalf("create_session: %v %s", err, b)
	}
	defer request(socket, "DELETE", "/v1/sessions/"+sess.ID, "", nil)
	call("execute", map[string]any{"session_id": sess.ID, "code": "xs = [1, 4, 9]"})
	r := call("execute", map[string]any{"session_id": sess.ID, "code": "sum(xs)"})
	if text := r.Content[0].(*mcp.TextContent).Text; !strings.Contains(text, "14") {
		t.Errorf("the value is not in the summary: %q", text)
	}
	r = call("execute", map[string]any{"session_id": sess.ID, "code": "import matplotlib.pyplot as plt\nplt.plot(xs)\nplt.show()", "timeout_seconds": 60})
	var png *mcp.ImageContent
	for _, c := range r.Content {
		if img, ok := c.(*mcp.ImageContent); ok {
			png = img
		}
	}
	if png == nil || png.MIMEType != "image/png" || !strings.HasPrefix(string(png.Data), "\x89PNG") {
		t.Fatalf("no PNG image content: %+v", r.Content)
	}
}

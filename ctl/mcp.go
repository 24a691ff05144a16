package ctl

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// The MCP tools' inputs. Their JSON schemas are derived from these types.
type (
	mcpExecuteInput struct {
		Language       string     `json:"language,omitempty" jsonschema:"the language (see list_languages); in a session, defaults to the session's"`
		Code           string     `json:"code,omitempty" jsonschema:"the program's source"`
		Stdin          string     `json:"stdin,omitempty" jsonschema:"the program's standard input"`
		TimeoutSeconds float64    `json:"timeout_seconds,omitempty" jsonschema:"wall-clock timeout; the daemon's default when left out"`
		SessionID      string     `json:"session_id,omitempty" jsonschema:"run in this session, whose /workspace keeps its files"`
		Files          []api.File `json:"files,omitempty" jsonschema:"files to place under /workspace before the run"`
		Entrypoint     string     `json:"entrypoint,omitempty" jsonschema:"the file of files to run, instead of code"`
		Collect        []string   `json:"collect,omitempty" jsonschema:"globs of files under /workspace to return"`
		Runtime        string     `json:"runtime,omitempty" jsonschema:"runsc to run on gVisor, a second wall between the code and the kernel (slower to start); the language's runtime when left out"`
	}
	mcpCreateSessionInput struct {
		Language           string  `json:"language" jsonschema:"the session's language"`
		IdleTimeoutSeconds float64 `json:"idle_timeout_seconds,omitempty" jsonschema:"destroy the session after this long unused"`
		Runtime            string  `json:"runtime,omitempty" jsonschema:"runsc to run the session on gVisor"`
	}
	mcpSessionInput struct {
		SessionID string `json:"session_id"`
	}
	mcpUploadInput struct {
		SessionID string `json:"session_id"`
		Path      string `json:"path" jsonschema:"relative to /workspace"`
		Content   string `json:"content"`
		Encoding  string `json:"encoding,omitempty" jsonschema:"utf-8 (the default) or base64"`
	}
	mcpDownloadInput struct {
		SessionID string `json:"session_id"`
		Path      string `json:"path" jsonschema:"relative to /workspace"`
	}
	mcpDeleted struct {
		Deleted string `json:"deleted"`
	}
)

// mcpServer exposes sandboxd to AI agents as Model Context Protocol tools,
// each a call to the daemon through its socket.
func mcpServer(client *Client) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "sandboxd", Version: Version}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "execute", Description: "Run code in a fresh sandbox (no network, limited memory and time), or in a session. Returns stdout, stderr, exit code and status."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in mcpExecuteInput) (*mcp.CallToolResult, *api.ExecuteResult, error) {
			res, err := client.Execute(ctx, &api.ExecuteRequest{Language: in.Language, Code: in.Code, Stdin: in.Stdin,
				TimeoutMS: int64(in.TimeoutSeconds * 1000), SessionID: in.SessionID, Files: in.Files, Entrypoint: in.Entrypoint, Collect: in.Collect, Runtime: in.Runtime})
			if err != nil {
				return nil, nil, err
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: summary(res)}}}, res, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "create_session", Description: "Create a session: a sandbox whose /workspace keeps files across executions. Returns its id."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in mcpCreateSessionInput) (*mcp.CallToolResult, *api.Session, error) {
			sess, err := client.CreateSession(ctx, &api.CreateSessionRequest{Language: in.Language, IdleTimeoutMS: int64(in.IdleTimeoutSeconds * 1000), Runtime: in.Runtime})
			return nil, sess, err
		})
	mcp.AddTool(s, &mcp.Tool{Name: "delete_session", Description: "Destroy a session and everything in it."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in mcpSessionInput) (*mcp.CallToolResult, mcpDeleted, error) {
			return nil, mcpDeleted{Deleted: in.SessionID}, client.DeleteSession(ctx, in.SessionID)
		})
	mcp.AddTool(s, &mcp.Tool{Name: "list_languages", Description: "List the languages the sandbox runs, with versions, runtimes (runc or runsc), images, and why one is unavailable."},
		func(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, api.LanguagesResponse, error) {
			langs, err := client.Languages(ctx)
			return nil, api.LanguagesResponse{Languages: langs}, err
		})
	mcp.AddTool(s, &mcp.Tool{Name: "upload_file", Description: "Write a file into a session's /workspace."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in mcpUploadInput) (*mcp.CallToolResult, *api.FileInfo, error) {
			data := []byte(in.Content)
			if in.Encoding == api.EncodingBase64 {
				var err error
				if data, err = base64.StdEncoding.DecodeString(in.Content); err != nil {
					return nil, nil, fmt.Errorf("content is not base64: %w", err)
				}
			}
			info, err := client.Upload(ctx, in.SessionID, in.Path, 0o644, strings.NewReader(string(data)))
			return nil, info, err
		})
	mcp.AddTool(s, &mcp.Tool{Name: "download_file", Description: "Read a file of a session's /workspace."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in mcpDownloadInput) (*mcp.CallToolResult, api.File, error) {
			var b strings.Builder
			if err := client.Download(ctx, in.SessionID, in.Path, &b); err != nil {
				return nil, api.File{}, err
			}
			f := api.File{Path: in.Path, Content: b.String(), Size: int64(b.Len())}
			if !utf8.ValidString(f.Content) {
				f.Content, f.Encoding = base64.StdEncoding.EncodeToString([]byte(f.Content)), api.EncodingBase64
			}
			return nil, f, nil
		})
	return s
}

// summary is the text an agent reads first.
func summary(res *api.ExecuteResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "status: %s, exit code %d", res.Status, res.ExitCode)
	if res.Signal != "" {
		fmt.Fprintf(&b, ", signal %s", res.Signal)
	}
	for _, s := range []struct{ name, data, enc string }{{"stdout", res.Stdout, res.StdoutEncoding}, {"stderr", res.Stderr, res.StderrEncoding}} {
		if s.data != "" {
			fmt.Fprintf(&b, "\n--- %s", s.name)
			if s.enc != "" {
				fmt.Fprintf(&b, " (%s)", s.enc)
			}
			fmt.Fprintf(&b, "\n%s", s.data)
		}
	}
	return b.String()
}

// mcp runs `sandboxctl mcp`: an MCP server on standard input and output.
func (c *cli) mcp(ctx context.Context, _ []string) int {
	err := mcpServer(NewClient(c.socket)).Run(ctx, &mcp.IOTransport{Reader: io.NopCloser(c.stdin), Writer: nopWriteCloser{c.stdout}})
	if err != nil && ctx.Err() == nil {
		fmt.Fprintln(c.stderr, "sandboxctl mcp:", err)
		return 1
	}
	return 0
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

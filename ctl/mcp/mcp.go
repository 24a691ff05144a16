// Package mcp exposes sandboxd to AI agents as Model Context Protocol
// tools, each a call to the daemon through a client.Client.
package mcp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandboxd/sandboxd/ctl/client"
	"github.com/sandboxd/sandboxd/daemon/api"
)

// The tools' inputs. Their JSON schemas are derived from these types.
type (
	executeInput struct {
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
	createSessionInput struct {
		Language           string  `json:"language" jsonschema:"the session's language"`
		IdleTimeoutSeconds float64 `json:"idle_timeout_seconds,omitempty" jsonschema:"destroy the session after this long unused"`
		Runtime            string  `json:"runtime,omitempty" jsonschema:"runsc to run the session on gVisor"`
	}
	sessionInput struct {
		SessionID string `json:"session_id"`
	}
	uploadInput struct {
		SessionID string `json:"session_id"`
		Path      string `json:"path" jsonschema:"relative to /workspace"`
		Content   string `json:"content"`
		Encoding  string `json:"encoding,omitempty" jsonschema:"utf-8 (the default) or base64"`
	}
	downloadInput struct {
		SessionID string `json:"session_id"`
		Path      string `json:"path" jsonschema:"relative to /workspace"`
	}
	deleted struct {
		Deleted string `json:"deleted"`
	}
)

// NewServer returns an MCP server whose tools call the daemon through c;
// version is the server's version it reports to clients.
func NewServer(c *client.Client, version string) *sdk.Server {
	s := sdk.NewServer(&sdk.Implementation{Name: "sandboxd", Version: version}, nil)
	sdk.AddTool(s, &sdk.Tool{Name: "execute", Description: "Run code in a fresh sandbox (no network, limited memory and time), or in a session. Returns stdout, stderr, exit code and status."},
		func(ctx context.Context, _ *sdk.CallToolRequest, in executeInput) (*sdk.CallToolResult, *api.ExecuteResult, error) {
			res, err := c.Execute(ctx, &api.ExecuteRequest{Language: in.Language, Code: in.Code, Stdin: in.Stdin,
				TimeoutMS: int64(in.TimeoutSeconds * 1000), SessionID: in.SessionID, Files: in.Files, Entrypoint: in.Entrypoint, Collect: in.Collect, Runtime: in.Runtime})
			if err != nil {
				return nil, nil, err
			}
			return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: summary(res)}}}, res, nil
		})
	sdk.AddTool(s, &sdk.Tool{Name: "create_session", Description: "Create a session: a sandbox whose /workspace keeps files across executions. Returns its id."},
		func(ctx context.Context, _ *sdk.CallToolRequest, in createSessionInput) (*sdk.CallToolResult, *api.Session, error) {
			sess, err := c.CreateSession(ctx, &api.CreateSessionRequest{Language: in.Language, IdleTimeoutMS: int64(in.IdleTimeoutSeconds * 1000), Runtime: in.Runtime})
			return nil, sess, err
		})
	sdk.AddTool(s, &sdk.Tool{Name: "delete_session", Description: "Destroy a session and everything in it."},
		func(ctx context.Context, _ *sdk.CallToolRequest, in sessionInput) (*sdk.CallToolResult, deleted, error) {
			return nil, deleted{Deleted: in.SessionID}, c.DeleteSession(ctx, in.SessionID)
		})
	sdk.AddTool(s, &sdk.Tool{Name: "list_languages", Description: "List the languages the sandbox runs, with versions, runtimes (runc or runsc), images, and why one is unavailable."},
		func(ctx context.Context, _ *sdk.CallToolRequest, _ struct{}) (*sdk.CallToolResult, api.LanguagesResponse, error) {
			langs, err := c.Languages(ctx)
			return nil, api.LanguagesResponse{Languages: langs}, err
		})
	sdk.AddTool(s, &sdk.Tool{Name: "upload_file", Description: "Write a file into a session's /workspace."},
		func(ctx context.Context, _ *sdk.CallToolRequest, in uploadInput) (*sdk.CallToolResult, *api.FileInfo, error) {
			data, err := client.DecodeContent(in.Content, in.Encoding)
			if err != nil {
				return nil, nil, fmt.Errorf("content is not base64: %w", err)
			}
			info, err := c.Upload(ctx, in.SessionID, in.Path, 0o644, bytes.NewReader(data))
			return nil, info, err
		})
	sdk.AddTool(s, &sdk.Tool{Name: "download_file", Description: "Read a file of a session's /workspace."},
		func(ctx context.Context, _ *sdk.CallToolRequest, in downloadInput) (*sdk.CallToolResult, api.File, error) {
			var b bytes.Buffer
			if err := c.Download(ctx, in.SessionID, in.Path, &b); err != nil {
				return nil, api.File{}, err
			}
			f := api.File{Path: in.Path, Size: int64(b.Len())}
			f.Content, f.Encoding = client.EncodeContent(b.Bytes())
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
	if res.Phase == api.PhaseCompile && res.Status != api.StatusCompileError {
		// A limit that ended the compiler is for the caller to raise, not
		// an error in the code to fix.
		b.WriteString(", while compiling")
	}
	if res.Message != "" {
		fmt.Fprintf(&b, "\n%s", res.Message)
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

// Serve runs an MCP server for c on r and w (standard input and output,
// for an agent that starts sandboxctl mcp) until r ends and every request
// read has been answered, or ctx is done.
func Serve(ctx context.Context, c *client.Client, version string, r io.Reader, w io.Writer) error {
	return NewServer(c, version).Run(ctx, answerAll{&sdk.IOTransport{Reader: io.NopCloser(r), Writer: nopWriteCloser{w}}})
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

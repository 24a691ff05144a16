// Package mcp exposes sandboxd to AI agents as Model Context Protocol
// tools, each a call to the daemon through a client.Client.
package mcp

import (
	"bytes"
	"context"
	"encoding/base64"
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
		Interpreter        bool    `json:"interpreter,omitempty" jsonschema:"python and javascript only: keep one interpreter running, so that each execute of the language in the session runs as a cell in its state (variables, imports, functions, loaded data), as in a notebook"`
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
	sdk.AddTool(s, &sdk.Tool{Name: "execute", Description: "Run code in a fresh sandbox (no network, limited memory and time), or in a session. Returns stdout, stderr, exit code and status. " +
		"In an interpreter session, the code is a cell run in the interpreter's state: it also returns the last expression's value, the exception it raised, and the figures it drew, as images."},
		func(ctx context.Context, _ *sdk.CallToolRequest, in executeInput) (*sdk.CallToolResult, *api.ExecuteResult, error) {
			res, err := c.Execute(ctx, &api.ExecuteRequest{Language: in.Language, Code: in.Code, Stdin: in.Stdin,
				TimeoutMS: int64(in.TimeoutSeconds * 1000), SessionID: in.SessionID, Files: in.Files, Entrypoint: in.Entrypoint, Collect: in.Collect, Runtime: in.Runtime})
			if err != nil {
				return nil, nil, err
			}
			return &sdk.CallToolResult{Content: content(res)}, res, nil
		})
	sdk.AddTool(s, &sdk.Tool{Name: "create_session", Description: "Create a session: a sandbox whose /workspace keeps files across executions, and with interpreter, whose interpreter keeps its state. Returns its id."},
		func(ctx context.Context, _ *sdk.CallToolRequest, in createSessionInput) (*sdk.CallToolResult, *api.Session, error) {
			sess, err := c.CreateSession(ctx, &api.CreateSessionRequest{Language: in.Language, IdleTimeoutMS: int64(in.IdleTimeoutSeconds * 1000),
				Runtime: in.Runtime, Interpreter: in.Interpreter})
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

// content is what the execute tool returns: the summary, then a cell's
// rich outputs, PNG figures as images (an agent sees its plots) and the
// others as text. An SVG is text too: the markup reads well, and clients
// and models take only raster images.
func content(res *api.ExecuteResult) []sdk.Content {
	cs := []sdk.Content{&sdk.TextContent{Text: summary(res)}}
	for i, o := range res.Outputs {
		if o.MIME == "image/png" {
			if data, err := base64.StdEncoding.DecodeString(o.Data); err == nil {
				cs = append(cs, &sdk.ImageContent{MIMEType: o.MIME, Data: data})
				continue
			}
		}
		cs = append(cs, &sdk.TextContent{Text: fmt.Sprintf("--- output %d (%s)\n%s", i+1, o.MIME, o.Data)})
	}
	return cs
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
	if res.StateLost {
		// First: the agent must not count on what earlier cells defined.
		b.WriteString("\nthe interpreter was restarted: the variables, imports and functions of earlier cells are gone")
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
	if res.Value != "" {
		fmt.Fprintf(&b, "\n--- value\n%s", res.Value)
	}
	if e := res.Error; e != nil {
		b.WriteString("\n--- error\n")
		switch {
		case e.Traceback != "":
			b.WriteString(e.Traceback)
		case e.Message != "":
			fmt.Fprintf(&b, "%s: %s", e.Name, e.Message)
		default:
			b.WriteString(e.Name)
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

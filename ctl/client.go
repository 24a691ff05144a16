// Package ctl is sandboxd's client library and the commands of sandboxctl.
// It imports only the API's wire types, never the daemon.
//
//	c := ctl.NewClient(api.DefaultSocket)
//	res, err := c.Execute(ctx, &api.ExecuteRequest{Language: "python", Code: "print(1)"})
package ctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// Client talks to sandboxd over its Unix socket.
type Client struct {
	socket string
	http   *http.Client
	// ServerVersion is the daemon's version from the last response.
	ServerVersion string
}

// expectContinue makes a large body wait for the daemon's go-ahead: a body
// it refuses by its length is answered before it is sent, and Go's client
// may lose an answer that comes while it still sends.
func expectContinue(req *http.Request) {
	if req.ContentLength > 1<<20 {
		req.Header.Set("Expect", "100-continue")
	}
}

// NewClient returns a Client for the daemon at socket.
func NewClient(socket string) *Client {
	return &Client{
		socket: socket,
		http: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
			// The daemon answers 100 Continue once it reads a body, after
			// its turn in the budget for bodies.
			ExpectContinueTimeout: 15 * time.Second,
		}},
	}
}

// Execute runs code and returns its result.
func (c *Client) Execute(ctx context.Context, req *api.ExecuteRequest) (*api.ExecuteResult, error) {
	var res api.ExecuteResult
	return &res, c.do(ctx, http.MethodPost, "/v1/execute", req, &res)
}

// ExecuteStream runs code and calls onEvent with each event as the daemon
// sends it (start, output chunks), then returns the result.
func (c *Client) ExecuteStream(ctx context.Context, req *api.ExecuteRequest, onEvent func(api.StreamEvent) error) (*api.ExecuteResult, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://sandboxd/v1/execute", bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", api.NDJSON)
	expectContinue(hreq)
	resp, err := c.http.Do(hreq)
	if err != nil {
		return nil, c.unreachable(err)
	}
	defer resp.Body.Close()
	c.ServerVersion = resp.Header.Get(api.VersionHeader)
	if resp.StatusCode >= 400 {
		return nil, decodeError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var ev api.StreamEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("decode event: %w", err)
		}
		switch ev.Type {
		case api.EventResult:
			var res api.ExecuteResult
			if err := json.Unmarshal(sc.Bytes(), &res); err != nil {
				return nil, fmt.Errorf("decode result: %w", err)
			}
			return &res, nil
		case api.EventError:
			return nil, &api.Error{Message: ev.Error, Code: ev.Code, Status: api.StatusOf(ev.Code)}
		}
		if err := onEvent(ev); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, &api.Error{Code: api.CodeUnavailable, Message: "the stream ended without a result"}
}

// SendStdin feeds a streamed execution's stdin (one started with
// StdinStream) from r, as r gives it; the end of r is the end of the
// program's input.
func (c *Client) SendStdin(ctx context.Context, id string, r io.Reader) error {
	return c.doRaw(ctx, http.MethodPost, "/v1/executions/"+url.PathEscape(id)+"/stdin", io.NopCloser(r), "application/octet-stream",
		func(io.Reader) error { return nil })
}

// Languages lists the languages the daemon offers.
func (c *Client) Languages(ctx context.Context) ([]api.Language, error) {
	var res api.LanguagesResponse
	return res.Languages, c.do(ctx, http.MethodGet, "/v1/languages", nil, &res)
}

// Info describes the daemon.
func (c *Client) Info(ctx context.Context) (*api.Info, error) {
	var res api.Info
	return &res, c.do(ctx, http.MethodGet, "/v1/info", nil, &res)
}

// CreateSession creates a session.
func (c *Client) CreateSession(ctx context.Context, req *api.CreateSessionRequest) (*api.Session, error) {
	var res api.Session
	return &res, c.do(ctx, http.MethodPost, "/v1/sessions", req, &res)
}

// Sessions lists the caller's sessions (all of them for root).
func (c *Client) Sessions(ctx context.Context) ([]api.Session, error) {
	var res api.SessionsResponse
	return res.Sessions, c.do(ctx, http.MethodGet, "/v1/sessions", nil, &res)
}

// Session shows one session.
func (c *Client) Session(ctx context.Context, id string) (*api.Session, error) {
	var res api.Session
	return &res, c.do(ctx, http.MethodGet, "/v1/sessions/"+url.PathEscape(id), nil, &res)
}

// DeleteSession destroys a session and everything in it.
func (c *Client) DeleteSession(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/sessions/"+url.PathEscape(id), nil, nil)
}

// Files lists a session's workspace.
func (c *Client) Files(ctx context.Context, id string) ([]api.FileInfo, error) {
	var res api.FilesResponse
	return res.Files, c.do(ctx, http.MethodGet, "/v1/sessions/"+url.PathEscape(id)+"/files/", nil, &res)
}

// Upload writes content to path, relative to the session's /workspace.
func (c *Client) Upload(ctx context.Context, id, path string, mode uint32, content io.Reader) (*api.FileInfo, error) {
	var res api.FileInfo
	u := fmt.Sprintf("/v1/sessions/%s/files/%s?mode=%o", url.PathEscape(id), escapePath(path), mode)
	return &res, c.doRaw(ctx, http.MethodPut, u, content, "application/octet-stream", func(r io.Reader) error {
		return json.NewDecoder(r).Decode(&res)
	})
}

// Download copies a file of the session's /workspace to w.
func (c *Client) Download(ctx context.Context, id, path string, w io.Writer) error {
	u := fmt.Sprintf("/v1/sessions/%s/files/%s", url.PathEscape(id), escapePath(path))
	return c.doRaw(ctx, http.MethodGet, u, nil, "", func(r io.Reader) error {
		_, err := io.Copy(w, r)
		return err
	})
}

func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, part := range parts {
		parts[i] = url.PathEscape(part)
	}
	return strings.Join(parts, "/")
}

func (c *Client) unreachable(err error) error {
	return &api.Error{Code: api.CodeUnavailable,
		Message: fmt.Sprintf("cannot reach sandboxd at %s: %v (is it running, and may you use its socket?)", c.socket, unwrapURLError(err))}
}

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 1 << 20

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	return c.doRaw(ctx, method, path, body, "application/json", func(r io.Reader) error {
		if out == nil {
			return nil
		}
		if err := json.NewDecoder(r).Decode(out); err != nil {
			return fmt.Errorf("decode response of %s: %w", path, err)
		}
		return nil
	})
}

func (c *Client) doRaw(ctx context.Context, method, path string, body io.Reader, contentType string, read func(io.Reader) error) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://sandboxd"+path, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	expectContinue(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return c.unreachable(err)
	}
	defer resp.Body.Close()
	c.ServerVersion = resp.Header.Get(api.VersionHeader)
	if resp.StatusCode >= 400 {
		return decodeError(resp)
	}
	return read(resp.Body)
}

// decodeError rebuilds the daemon's error; a plain-text body (from a proxy,
// or ServeMux itself) is kept as the message.
func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var e api.Error
	if json.Unmarshal(b, &e) != nil || e.Message == "" {
		e.Message = strings.TrimSpace(string(b))
		if e.Message == "" {
			e.Message = resp.Status
		}
	}
	if e.Code == "" {
		e.Code = api.CodeOfStatus(resp.StatusCode)
	}
	e.Status = resp.StatusCode
	return &e
}

func unwrapURLError(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		inner := u.Unwrap()
		if inner == nil {
			return err
		}
		if _, ok := inner.(*net.OpError); ok {
			return inner
		}
		err = inner
	}
}

// Images lists the images in the daemon's containerd namespace.
func (c *Client) Images(ctx context.Context) ([]api.Image, error) {
	var res api.ImagesResponse
	return res.Images, c.do(ctx, http.MethodGet, "/v1/images", nil, &res)
}

// ImportImages sends an image tarball (OCI layout or docker-archive) to be
// imported; it returns the images it held.
func (c *Client) ImportImages(ctx context.Context, tarball io.Reader) ([]api.Image, error) {
	var res api.ImagesResponse
	return res.Images, c.doRaw(ctx, http.MethodPost, "/v1/images/import", tarball, "application/x-tar", func(r io.Reader) error {
		return json.NewDecoder(r).Decode(&res)
	})
}

// PullImage has the daemon pull an image from its registry.
func (c *Client) PullImage(ctx context.Context, ref string) ([]api.Image, error) {
	var res api.ImagesResponse
	return res.Images, c.do(ctx, http.MethodPost, "/v1/images/pull", api.PullRequest{Ref: ref}, &res)
}

// RemoveImage removes an image.
func (c *Client) RemoveImage(ctx context.Context, ref string) error {
	return c.do(ctx, http.MethodDelete, "/v1/images/"+escapePath(ref), nil, nil)
}

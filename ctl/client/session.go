package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/sandboxd/sandboxd/daemon/api"
)

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

// RestartSession restarts an interpreter session's interpreter: the
// state of its cells is gone, its files are kept.
func (c *Client) RestartSession(ctx context.Context, id string) (*api.Session, error) {
	var res api.Session
	return &res, c.do(ctx, http.MethodPost, "/v1/sessions/"+url.PathEscape(id)+"/restart", nil, &res)
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

// Package client is a Go client of sandboxd's API. It imports only the
// API's wire types and the standard library, so a program can use it
// without sandboxctl's commands or the MCP SDK.
//
//	c := client.New(api.DefaultSocket)
//	res, err := c.Execute(ctx, &api.ExecuteRequest{Language: "python", Code: "print(1)"})
//
// A failed request returns an *api.Error rebuilt from the daemon's status
// and code; api.IsCode tells them apart.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// Client talks to sandboxd over its Unix socket. It is safe for
// concurrent use.
type Client struct {
	socket string
	http   *http.Client

	mu            sync.Mutex
	serverVersion string
}

// New returns a Client for the daemon at socket.
func New(socket string) *Client {
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

// ServerVersion is the daemon's version from the last response, or ""
// before any.
func (c *Client) ServerVersion() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.serverVersion
}

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 1 << 20

// do sends in, if not nil, as JSON and decodes the answer into out, if
// not nil.
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

// doRaw sends body, if not nil, as contentType and hands a successful
// answer's body to read.
func (c *Client) doRaw(ctx context.Context, method, path string, body io.Reader, contentType string, read func(io.Reader) error) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://sandboxd"+path, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return read(resp.Body)
}

// send sends req and returns a successful response, whose body the caller
// closes; a failed one becomes an *api.Error.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	// A large body waits for the daemon's go-ahead: a body it refuses by
	// its length is answered before it is sent, and Go's client may lose
	// an answer that comes while it still sends.
	if req.ContentLength > 1<<20 {
		req.Header.Set("Expect", "100-continue")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.unreachable(err)
	}
	c.mu.Lock()
	c.serverVersion = resp.Header.Get(api.VersionHeader)
	c.mu.Unlock()
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

func (c *Client) unreachable(err error) error {
	return &api.Error{Code: api.CodeUnavailable,
		Message: fmt.Sprintf("cannot reach sandboxd at %s: %v (is it running, and may you use its socket?)", c.socket, unwrapURLError(err))}
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

// unwrapURLError digs the network error out of the *url.Error that
// http.Client returns, whose text repeats the request.
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

// escapePath escapes each element of a slash-separated path.
func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, part := range parts {
		parts[i] = url.PathEscape(part)
	}
	return strings.Join(parts, "/")
}

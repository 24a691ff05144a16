package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/sandboxd/sandboxd/daemon/api"
)

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
	resp, err := c.send(hreq)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		// The type first: a result's "error" is a cell's exception (an
		// object), an error event's is a message.
		var typed struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(sc.Bytes(), &typed); err != nil {
			return nil, fmt.Errorf("decode event: %w", err)
		}
		if typed.Type == api.EventResult {
			var res api.ExecuteResult
			if err := json.Unmarshal(sc.Bytes(), &res); err != nil {
				return nil, fmt.Errorf("decode result: %w", err)
			}
			return &res, nil
		}
		var ev api.StreamEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("decode event: %w", err)
		}
		switch ev.Type {
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

// Health checks that the daemon can run sandboxes; when it cannot (its
// containerd does not answer, its state directory is unusable), the
// daemon answers 503 and Health returns an *api.Error.
func (c *Client) Health(ctx context.Context) (*api.Health, error) {
	var res api.Health
	return &res, c.do(ctx, http.MethodGet, "/v1/health", nil, &res)
}

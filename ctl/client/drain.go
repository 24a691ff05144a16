package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// DrainDefault, as Drain's timeout, lets the daemon wait as long as its
// longest execution may run (limits.max_timeout).
const DrainDefault time.Duration = -1

// Drain makes the daemon take no new executions or sessions, and waits up
// to timeout (0: not at all; DrainDefault: the daemon's default) for those
// under way. Sessions stay. It is for root.
func (c *Client) Drain(ctx context.Context, timeout time.Duration) (*api.DrainResult, error) {
	path := "/v1/drain"
	if timeout >= 0 {
		path += "?timeout=" + url.QueryEscape(timeout.String())
	}
	var res api.DrainResult
	return &res, c.do(ctx, http.MethodPost, path, nil, &res)
}

// HealthStatus asks GET /v1/health, with ready the readiness (?ready=1),
// and returns the daemon's answer whether healthy (ok) or not (503, with
// why in its fields). An error means the daemon gave neither.
func (c *Client) HealthStatus(ctx context.Context, ready bool) (h *api.Health, ok bool, err error) {
	path := "/v1/health"
	if ready {
		path += "?ready=1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://sandboxd"+path, nil)
	if err != nil {
		return nil, false, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, false, c.unreachable(err)
	}
	defer resp.Body.Close()
	c.mu.Lock()
	c.serverVersion = resp.Header.Get(api.VersionHeader)
	c.mu.Unlock()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		return nil, false, decodeError(resp)
	}
	h = &api.Health{}
	if err := json.NewDecoder(resp.Body).Decode(h); err != nil {
		return nil, false, fmt.Errorf("decode response of %s: %w", path, err)
	}
	return h, resp.StatusCode == http.StatusOK, nil
}

package client

import (
	"context"
	"encoding/json"
	"io"
	"net/http"

	"github.com/sandboxd/sandboxd/daemon/api"
)

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

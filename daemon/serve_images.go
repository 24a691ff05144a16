package daemon

import (
	"errors"
	"net/http"
	"slices"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"

	"github.com/sandboxd/sandboxd/daemon/api"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// maxImportBytes bounds an image tarball sent to POST /v1/images/import.
const maxImportBytes = 16 << 30

func (s *Server) serveListImages(w http.ResponseWriter, r *http.Request) error {
	imgs, err := s.rt.Images(r.Context())
	if err != nil {
		return s.createError(r.Context(), err)
	}
	writeJSON(w, http.StatusOK, api.ImagesResponse{Images: s.apiImages(imgs)})
	return nil
}

// serveImportImages imports the tarball of the request's body: an OCI
// layout or a docker-archive, as `docker save` and most image tools write.
func (s *Server) serveImportImages(w http.ResponseWriter, r *http.Request) error {
	if err := requireRoot(r, "importing images"); err != nil {
		return err
	}
	body := http.MaxBytesReader(w, r.Body, maxImportBytes)
	imgs, err := s.rt.ImportImages(r.Context(), body)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return invalid("the image archive is more than %d bytes", int64(maxImportBytes))
	case err != nil && errdefs.IsInvalidArgument(err):
		return invalid("%v (an OCI layout or docker-archive tarball is expected)", err)
	case err != nil:
		return s.createError(r.Context(), err)
	}
	for _, img := range imgs {
		s.log.Info("image imported", "ref", img.Ref, "digest", img.Digest, "uid", callerOf(r.Context()).UID)
		s.imageArrived(img)
	}
	writeJSON(w, http.StatusOK, api.ImagesResponse{Images: s.apiImages(imgs)})
	return nil
}

func (s *Server) servePullImage(w http.ResponseWriter, r *http.Request) error {
	if err := requireRoot(r, "pulling images"); err != nil {
		return err
	}
	var req api.PullRequest
	release, err := s.readJSON(w, r, 64<<10, &req)
	if err != nil {
		return err
	}
	defer release()
	if _, err := reference.ParseDockerRef(req.Ref); err != nil {
		return invalid("ref %q is not an image reference: %v", truncate(req.Ref, 200), err)
	}
	if !s.pullImages {
		return api.Errorf(api.CodeFailedPrecondition, "pulling is disabled (images.pull = false in the configuration); import the image with sandboxctl image import")
	}
	if err := s.rt.PullImage(r.Context(), req.Ref); err != nil {
		if errdefs.IsNotFound(err) {
			return api.Errorf(api.CodeNotFound, "%v", err)
		}
		return api.Errorf(api.CodeUnavailable, "%v", err)
	}
	imgs, err := s.rt.Images(r.Context())
	if err != nil {
		return s.createError(r.Context(), err)
	}
	imgs = slices.DeleteFunc(imgs, func(i sandbox.ImageInfo) bool { return !sameImage(i.Ref, req.Ref) })
	for _, img := range imgs {
		s.imageArrived(img)
	}
	writeJSON(w, http.StatusOK, api.ImagesResponse{Images: s.apiImages(imgs)})
	return nil
}

func (s *Server) serveRemoveImage(w http.ResponseWriter, r *http.Request) error {
	if err := requireRoot(r, "removing images"); err != nil {
		return err
	}
	ref := r.PathValue("ref")
	if err := s.rt.RemoveImage(r.Context(), ref); err != nil {
		if errdefs.IsNotFound(err) {
			return api.Errorf(api.CodeNotFound, "no image %s", truncate(ref, 200))
		}
		return s.createError(r.Context(), err)
	}
	s.log.Info("image removed", "ref", ref, "uid", callerOf(r.Context()).UID)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"

	"github.com/sandboxd/sandboxd/daemon/api"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

// maxImportBytes bounds an image tarball sent to POST /v1/images/import.
const maxImportBytes = 16 << 30

// requireRoot refuses image management to all but root: images become
// the root filesystem of everyone's sandboxes.
func requireRoot(r *http.Request, what string) error {
	if c := callerOf(r.Context()); !c.Known || c.UID != 0 {
		return api.Errorf(api.CodePermissionDenied, "%s is for root: images become the root of every user's sandboxes", what)
	}
	return nil
}

// sameImage reports whether two references name one image, the short
// (python:3.12) and the full (docker.io/library/python:3.12) forms alike.
func sameImage(a, b string) bool {
	if a == b {
		return true
	}
	na, err1 := reference.ParseDockerRef(a)
	nb, err2 := reference.ParseDockerRef(b)
	return err1 == nil && err2 == nil && na.String() == nb.String()
}

// imageLanguages returns the languages that run from an image: those that
// name it, or pin its digest.
func (s *Server) imageLanguages(img sandbox.ImageInfo) []Language {
	var langs []Language
	for _, l := range s.languages() {
		if l.Image != "" && (sameImage(l.Image, img.Ref) || strings.HasSuffix(l.Image, "@"+img.Digest)) {
			langs = append(langs, l)
		}
	}
	return langs
}

func (s *Server) apiImages(imgs []sandbox.ImageInfo) []api.Image {
	out := make([]api.Image, 0, len(imgs))
	for _, img := range imgs {
		a := api.Image{Ref: img.Ref, Digest: img.Digest, SizeBytes: img.Size}
		for _, l := range s.imageLanguages(img) {
			a.Languages = append(a.Languages, l.Name)
		}
		if !img.Created.IsZero() {
			a.Created = img.Created.UTC().Format(time.RFC3339)
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out
}

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

// imageArrived readies the languages of an image that has just come: their
// pools fill at once rather than at their next retry.
func (s *Server) imageArrived(img sandbox.ImageInfo) {
	for _, l := range s.imageLanguages(img) {
		s.pokePools(l.Image)
	}
}

// pullMissing pulls, in the background, the images of languages that are
// not in containerd yet, when pulling is allowed.
func (s *Server) pullMissing() {
	s.pmu.Lock()
	base := s.poolCtx // ends at shutdown, and so do the pulls
	s.pmu.Unlock()
	if !s.pullImages || base == nil {
		return
	}
	for _, l := range s.languages() {
		if l.Image == "" {
			continue
		}
		ref := l.Image
		if _, busy := s.pulling.LoadOrStore(ref, struct{}{}); busy {
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.pulling.Delete(ref)
			err := s.rt.ImageReady(base, ref)
			if err == nil || !errdefs.IsNotFound(err) {
				return
			}
			ctx, cancel := context.WithTimeout(base, 30*time.Minute)
			defer cancel()
			if err := s.rt.PullImage(ctx, ref); err != nil {
				s.log.Warn("pull image", "ref", ref, "err", err)
				return
			}
			s.pokePools(ref)
		}()
	}
}

// unavailable says why a language cannot run now, and how to fix it; ""
// when it can.
func (s *Server) unavailable(ctx context.Context, l Language) string {
	if l.Runtime != "" && l.Runtime != defaultOCIRuntime {
		if err := s.rt.OCIRuntimeReady(l.Runtime); err != nil {
			return fmt.Sprintf("runtime %s: %v", l.Runtime, err)
		}
	}
	if l.Image == "" {
		return ""
	}
	err := s.rt.ImageReady(ctx, l.Image)
	switch {
	case err == nil:
		return ""
	case errdefs.IsNotFound(err):
		if _, busy := s.pulling.Load(l.Image); busy {
			return fmt.Sprintf("image %s is being pulled", l.Image)
		}
		fix := "import it with `sandboxctl image import FILE.tar`"
		if s.pullImages {
			fix = "pull it with `sandboxctl image pull " + l.Image + "`, or " + fix
		}
		return fmt.Sprintf("image %s is not in containerd: %s", l.Image, fix)
	default:
		return fmt.Sprintf("image %s: %v", l.Image, err)
	}
}

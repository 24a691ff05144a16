package daemon

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"

	"github.com/sandboxd/sandboxd/daemon/api"
	"github.com/sandboxd/sandboxd/runtime/sandbox"
)

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
	if l.Runtime != "" && l.Runtime != sandbox.DefaultOCIRuntime {
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

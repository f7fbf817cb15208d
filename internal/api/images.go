package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/warrenhq/warren/dirtar"
	"github.com/warrenhq/warren/internal/image"
	"github.com/warrenhq/warren/internal/sandbox"
	"github.com/warrenhq/warren/wire"
)

func (s *Server) handleListImages(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, wire.ImageList{Images: s.images.List()})
}

func (s *Server) imageOr404(w http.ResponseWriter, name string) *image.Image {
	img, err := s.images.Get(name)
	if errors.Is(err, image.ErrUnknown) {
		writeError(w, wire.CodeNotFound, err.Error(), "")
		return nil
	}
	return img
}

func (s *Server) handleGetImage(w http.ResponseWriter, r *http.Request) {
	if img := s.imageOr404(w, r.PathValue("name")); img != nil {
		writeJSON(w, http.StatusOK, img)
	}
}

// imageErr gives an image store's error the kind the API answers with.
func imageErr(err error) error {
	var in *image.InputError
	switch {
	case errors.As(err, &in):
		return &sandbox.Error{Kind: sandbox.KindBadRequest, Field: in.Field, Message: err.Error(), Err: err}
	case errors.Is(err, image.ErrUnknown):
		return &sandbox.Error{Kind: sandbox.KindNotFound, Message: err.Error(), Err: err}
	case errors.Is(err, image.ErrBusy):
		return &sandbox.Error{Kind: sandbox.KindConflict, Message: err.Error(), Err: err}
	case errors.Is(err, syscall.ENOSPC):
		return &sandbox.Error{Kind: sandbox.KindNoSpace, Message: err.Error(), Err: err}
	}
	return err
}

// notInUse refuses to delete or replace an image a sandbox or pool uses.
func (s *Server) notInUse(r *http.Request, name, doing string) error {
	user, err := s.sandbox.ImageInUse(r.Context(), name)
	if err != nil {
		return err
	}
	if user != "" {
		return &sandbox.Error{Kind: sandbox.KindConflict, Message: fmt.Sprintf("cannot %s image %s: %s uses it", doing, name, user)}
	}
	return nil
}

// streams reports whether a client asked for NDJSON progress.
func streams(r *http.Request) bool { return strings.Contains(r.Header.Get("Accept"), wire.NDJSON) }

// progress answers a long image operation: NDJSON events then the image
// (or a failed event) when the client asked for them, else one JSON answer
// with the status the outcome calls for.
func (s *Server) progress(w http.ResponseWriter, r *http.Request, name, kind string, do func(watch func(wire.ImageEvent)) (*image.Image, error)) {
	run := func(watch func(wire.ImageEvent)) (*image.Image, error) {
		img, err := do(watch)
		s.countImage(kind, err)
		return img, err
	}
	if !streams(r) {
		img, err := run(nil)
		if err != nil {
			s.fail(w, r, imageErr(err))
			return
		}
		writeJSON(w, http.StatusCreated, img)
		return
	}
	w.Header().Set("Content-Type", wire.NDJSON)
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	emit := func(v any) {
		_ = enc.Encode(v)
		if flusher != nil {
			flusher.Flush()
		}
	}
	start := time.Now()
	img, err := run(func(ev wire.ImageEvent) { emit(ev) })
	if err != nil {
		emit(wire.ImageEvent{Image: name, Step: "failed", Error: err.Error(), Done: true})
		return
	}
	emit(wire.ImageBuildEnd{Done: true, Image: img, ElapsedMs: time.Since(start).Milliseconds()})
}

// countImage counts an image operation by its outcome.
func (s *Server) countImage(kind string, err error) {
	if s.Metrics == nil {
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = string(errorOf(imageErr(err)).Code)
	}
	s.Metrics.ImageOperation(kind, outcome)
}

// handleBuildImage builds a built-in image if it is not ready.
func (s *Server) handleBuildImage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if s.imageOr404(w, name) == nil {
		return
	}
	// Always streamed: a build of base takes minutes.
	r.Header.Set("Accept", wire.NDJSON)
	s.progress(w, r, name, "builtin", func(watch func(wire.ImageEvent)) (*image.Image, error) {
		if _, err := s.images.Ensure(r.Context(), name, watch); err != nil {
			return nil, err
		}
		return s.images.Get(name)
	})
}

// handlePullImage pulls a registry image.
func (s *Server) handlePullImage(w http.ResponseWriter, r *http.Request) {
	var req wire.ImagePullRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	switch {
	case req.Name == "":
		s.fail(w, r, &sandbox.Error{Kind: sandbox.KindBadRequest, Field: "name", Message: "name is required: the image's name in warren"})
		return
	case req.Ref == "":
		s.fail(w, r, &sandbox.Error{Kind: sandbox.KindBadRequest, Field: "ref", Message: "ref is required: what to pull, as docker pull takes it"})
		return
	}
	if err := s.notInUse(r, req.Name, "replace"); err != nil {
		s.fail(w, r, err)
		return
	}
	s.progress(w, r, req.Name, "pull", func(watch func(wire.ImageEvent)) (*image.Image, error) {
		return s.images.Pull(r.Context(), req.Name, req.Ref, req.Auth, watch)
	})
}

// handleImportImage imports an image from the uploaded file: a docker
// save tarball or an OCI layout as a tarball.
func (s *Server) handleImportImage(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if name == "" {
		s.fail(w, r, &sandbox.Error{Kind: sandbox.KindBadRequest, Field: "name", Message: "query parameter name is required"})
		return
	}
	if err := s.images.CheckName(name); err != nil {
		s.fail(w, r, imageErr(err))
		return
	}
	if err := s.notInUse(r, name, "replace"); err != nil {
		s.fail(w, r, err)
		return
	}
	f, err := s.images.TempFile()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer os.Remove(f.Name())
	_, err = io.Copy(f, r.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		s.fail(w, r, imageErr(fmt.Errorf("receive the image file: %w", err)))
		return
	}
	s.progress(w, r, name, "import", func(watch func(wire.ImageEvent)) (*image.Image, error) {
		return s.images.Import(r.Context(), name, f.Name(), watch)
	})
}

func (s *Server) handleDeleteImage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if s.imageOr404(w, name) == nil {
		return
	}
	if err := s.notInUse(r, name, "delete"); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.images.Delete(name); err != nil {
		s.fail(w, r, imageErr(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handlePruneImages(w http.ResponseWriter, r *http.Request) {
	res, err := s.images.Prune(func(name string) bool {
		user, err := s.sandbox.ImageInUse(r.Context(), name)
		return err != nil || user != ""
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// handleSnapshot makes an image from a sandbox's files.
func (s *Server) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	var req wire.SnapshotRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	img, err := s.sandbox.Snapshot(r.Context(), org(r), r.PathValue("id"), req.Name)
	s.countImage("snapshot", err)
	if err != nil {
		s.fail(w, r, imageErr(err))
		return
	}
	writeJSON(w, http.StatusCreated, img)
}

// handleDockerfileBuild builds an image from a Dockerfile; the body is the
// build context as a tar stream.
func (s *Server) handleDockerfileBuild(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name := q.Get("name")
	if name == "" {
		s.fail(w, r, &sandbox.Error{Kind: sandbox.KindBadRequest, Field: "name", Message: "query parameter name is required"})
		return
	}
	args := map[string]string{}
	for _, a := range q["arg"] {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			s.fail(w, r, &sandbox.Error{Kind: sandbox.KindBadRequest, Field: "arg", Message: fmt.Sprintf("arg %q must be NAME=VALUE", a)})
			return
		}
		args[k] = v
	}
	if err := s.notInUse(r, name, "replace"); err != nil {
		s.fail(w, r, err)
		return
	}
	dir, err := s.images.TempDir()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer os.RemoveAll(dir)
	if err := dirtar.Unpack(r.Body, dir, dirtar.Options{LocalLinks: true}); err != nil {
		s.fail(w, r, imageErr(&image.InputError{Field: "context", Err: fmt.Errorf("the build context: %w", err)}))
		return
	}
	req := sandbox.BuildRequest{Name: name, ContextDir: dir, Dockerfile: q.Get("dockerfile"), Args: args, Runtime: q.Get("runtime")}
	s.progress(w, r, name, "dockerfile", func(watch func(wire.ImageEvent)) (*image.Image, error) {
		report := func(step, msg string) {
			if watch != nil {
				watch(wire.ImageEvent{Image: name, Step: step, Message: msg})
			}
		}
		return s.sandbox.BuildDockerfile(r.Context(), org(r), req, report)
	})
}

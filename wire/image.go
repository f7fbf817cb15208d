package wire

import "time"

// States of an image.
const (
	ImageMissing  = "missing"
	ImageBuilding = "building"
	ImageReady    = "ready"
	ImageFailed   = "failed"
)

// Where an image came from, in Image.Kind.
const (
	ImageBuiltin    = "builtin"
	ImageRegistry   = "registry"
	ImageImport     = "import"
	ImageSnapshot   = "snapshot"
	ImageDockerfile = "dockerfile"
	// ImageCache is a Dockerfile step's result, kept for the next build;
	// lists leave them out and prune removes them.
	ImageCache = "cache"
)

// Image is a root filesystem sandboxes boot from.
type Image struct {
	Name  string `json:"name"`
	State string `json:"state"`
	// Kind is ImageBuiltin, ImageRegistry, ImageImport, ImageSnapshot,
	// ImageDockerfile or ImageCache.
	Kind   string `json:"kind,omitempty"`
	Source string `json:"source,omitempty"`
	// Ref and Digest: what a registry image was pulled as, and the
	// manifest digest it resolved to.
	Ref    string `json:"ref,omitempty"`
	Digest string `json:"digest,omitempty"`
	// Config is what the image says about running it; a request's own
	// values win.
	Config    *ImageConfig `json:"config,omitempty"`
	SizeBytes int64        `json:"size_bytes,omitempty"`
	BuiltAt   time.Time    `json:"built_at,omitzero"`
	BuildMs   int64        `json:"build_ms,omitempty"`
	Error     string       `json:"error,omitempty"`
	// Progress is the last step of a build under way.
	Progress string `json:"progress,omitempty"`
	Format   int    `json:"format,omitempty"`
}

// ImageConfig is the part of an OCI image's config warren honours: Env
// and WorkingDir and User apply to every exec and startup command (their
// own values win); Entrypoint and Cmd are recorded.
type ImageConfig struct {
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
}

// ImagePullRequest is the body of POST /v1/images: pull Ref from its
// registry as the image Name.
type ImagePullRequest struct {
	Name string `json:"name"`
	// Ref is a reference as docker pull takes it: "python:3.12-slim",
	// "registry.example.com/team/app@sha256:...".
	Ref string `json:"ref"`
	// Auth, if set, is used for this pull only and never kept.
	Auth *RegistryAuth `json:"auth,omitempty"`
}

// RegistryAuth is a registry credential: a user name and password (or
// token as password), or an identity/registry token.
type RegistryAuth struct {
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	Token    string `json:"token,omitempty"`
}

// ImageList is the answer to GET /v1/images.
type ImageList struct {
	Images []*Image `json:"images"`
}

// ImageEvent is one line of a build's NDJSON progress. The last line of
// POST /v1/images/{name}/build is an ImageBuildEnd instead.
type ImageEvent struct {
	Image   string `json:"image"`
	Step    string `json:"step"`
	Message string `json:"message"`
	Done    bool   `json:"done,omitempty"`
	Error   string `json:"error,omitempty"`
}

// ImageBuildEnd ends a build's progress stream with the image built.
type ImageBuildEnd struct {
	Done      bool   `json:"done"`
	Image     *Image `json:"image"`
	ElapsedMs int64  `json:"elapsed_ms"`
}

// PruneResult is the answer to POST /v1/images/prune.
type PruneResult struct {
	RemovedBlobs int `json:"removed_blobs"`
	// RemovedCaches counts Dockerfile build steps' cached results.
	RemovedCaches int   `json:"removed_caches"`
	FreedBytes    int64 `json:"freed_bytes"`
}

// SnapshotRequest is the body of POST /v1/sandboxes/{id}/snapshot: make
// the image Name from the sandbox's files as they are.
type SnapshotRequest struct {
	Name string `json:"name"`
}

package wire

import "time"

// States of an image.
const (
	ImageMissing  = "missing"
	ImageBuilding = "building"
	ImageReady    = "ready"
	ImageFailed   = "failed"
)

// Image is a root filesystem sandboxes boot from.
type Image struct {
	Name      string    `json:"name"`
	State     string    `json:"state"`
	Source    string    `json:"source,omitempty"`
	SizeBytes int64     `json:"size_bytes,omitempty"`
	BuiltAt   time.Time `json:"built_at,omitzero"`
	BuildMs   int64     `json:"build_ms,omitempty"`
	Error     string    `json:"error,omitempty"`
	// Progress is the last step of a build under way.
	Progress string `json:"progress,omitempty"`
	Format   int    `json:"format,omitempty"`
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

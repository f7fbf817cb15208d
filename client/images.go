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

	"github.com/warrenhq/warren/dirtar"
	"github.com/warrenhq/warren/wire"
)

func jsonDecode(r io.Reader, v any) error {
	if err := json.NewDecoder(r).Decode(v); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

// Images lists images and their state.
func (c *Client) Images(ctx context.Context) ([]*Image, error) {
	var out wire.ImageList
	return out.Images, c.call(ctx, http.MethodGet, "/v1/images", nil, nil, &out)
}

// Image describes one image.
func (c *Client) Image(ctx context.Context, name string) (*Image, error) {
	var img Image
	return &img, c.call(ctx, http.MethodGet, "/v1/images/"+url.PathEscape(name), nil, nil, &img)
}

// BuildImage builds a built-in image unless it is ready, calling progress
// (if not nil) with each step, and returns it ready.
func (c *Client) BuildImage(ctx context.Context, name string, progress func(ImageEvent)) (*Image, error) {
	resp, err := c.send(ctx, http.MethodPost, "/v1/images/"+url.PathEscape(name)+"/build", nil, nil, "")
	if err != nil {
		return nil, err
	}
	return readProgress(resp, "build image "+name, progress)
}

// PullImage pulls an image from an OCI registry, calling progress (if not
// nil) with each step.
func (c *Client) PullImage(ctx context.Context, req *wire.ImagePullRequest, progress func(ImageEvent)) (*Image, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	resp, err := c.sendAccept(ctx, http.MethodPost, "/v1/images", nil, bytes.NewReader(b), "application/json")
	if err != nil {
		return nil, err
	}
	return readProgress(resp, "pull "+req.Ref, progress)
}

// ImportImage imports an image from r: a docker save tarball or an OCI
// layout as a tarball.
func (c *Client) ImportImage(ctx context.Context, name string, r io.Reader, progress func(ImageEvent)) (*Image, error) {
	resp, err := c.sendAccept(ctx, http.MethodPost, "/v1/images/import", url.Values{"name": {name}}, r, wire.ArchiveContentType)
	if err != nil {
		return nil, err
	}
	return readProgress(resp, "import "+name, progress)
}

// BuildOptions shape a Dockerfile build.
type BuildOptions struct {
	// Name is the image to make (required).
	Name string
	// Dockerfile is its path in the context; default "Dockerfile".
	Dockerfile string
	// Args are build arguments.
	Args map[string]string
	// Runtime is where RUN steps run; default the server's.
	Runtime string
}

// BuildDockerfile builds an image from a Dockerfile; context is the build
// context as a tar stream. progress (if not nil) gets each step, RUN
// output line by line, and CACHED for steps that did not need to run.
func (c *Client) BuildDockerfile(ctx context.Context, opts BuildOptions, context io.Reader, progress func(ImageEvent)) (*Image, error) {
	q := url.Values{"name": {opts.Name}}
	if opts.Dockerfile != "" {
		q.Set("dockerfile", opts.Dockerfile)
	}
	if opts.Runtime != "" {
		q.Set("runtime", opts.Runtime)
	}
	for k, v := range opts.Args {
		q.Add("arg", k+"="+v)
	}
	resp, err := c.sendAccept(ctx, http.MethodPost, "/v1/images/build", q, context, wire.ArchiveContentType)
	if err != nil {
		return nil, err
	}
	return readProgress(resp, "build "+opts.Name, progress)
}

// BuildDir builds an image from the local directory dir as the context.
func (c *Client) BuildDir(ctx context.Context, opts BuildOptions, dir string, progress func(ImageEvent)) (*Image, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(dirtar.Pack(pw, dir)) }()
	defer pr.Close()
	return c.BuildDockerfile(ctx, opts, pr, progress)
}

// DeleteImage deletes an image; the server refuses (IsConflict) while a
// sandbox or pool uses it.
func (c *Client) DeleteImage(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, "/v1/images/"+url.PathEscape(name), nil, nil, nil)
}

// PruneImages removes layer blobs no image uses.
func (c *Client) PruneImages(ctx context.Context) (*wire.PruneResult, error) {
	var out wire.PruneResult
	return &out, c.call(ctx, http.MethodPost, "/v1/images/prune", nil, nil, &out)
}

// sendAccept sends a request that answers NDJSON progress.
func (c *Client) sendAccept(ctx context.Context, method, path string, q url.Values, body io.Reader, contentType string) (*http.Response, error) {
	return c.sendWith(ctx, method, path, q, body, contentType, map[string]string{"Accept": wire.NDJSON})
}

// readProgress reads NDJSON progress to its end: the image, or the error
// the last event carries.
func readProgress(resp *http.Response, what string, progress func(ImageEvent)) (*Image, error) {
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), wire.MaxFrame)
	for sc.Scan() {
		// Events name their image ("image": "py"); the end carries it
		// whole ("image": {...}).
		var end struct {
			Done  bool            `json:"done"`
			Image json.RawMessage `json:"image"`
		}
		if err := json.Unmarshal(sc.Bytes(), &end); err != nil {
			return nil, fmt.Errorf("%s: decode progress: %w", what, err)
		}
		if end.Done && len(end.Image) > 0 && end.Image[0] == '{' {
			var img Image
			if err := json.Unmarshal(end.Image, &img); err != nil {
				return nil, fmt.Errorf("%s: decode the image: %w", what, err)
			}
			return &img, nil
		}
		var ev ImageEvent
		_ = json.Unmarshal(sc.Bytes(), &ev)
		if ev.Error != "" {
			return nil, fmt.Errorf("%s: %s", what, ev.Error)
		}
		if progress != nil {
			progress(ev)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return nil, fmt.Errorf("%s: the server ended the stream early", what)
}

package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

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

// BuildImage builds an image unless it is ready, calling progress (if not
// nil) with each step, and returns it ready.
func (c *Client) BuildImage(ctx context.Context, name string, progress func(ImageEvent)) (*Image, error) {
	resp, err := c.send(ctx, http.MethodPost, "/v1/images/"+url.PathEscape(name)+"/build", nil, nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), wire.MaxFrame)
	for sc.Scan() {
		var end wire.ImageBuildEnd
		if err := json.Unmarshal(sc.Bytes(), &end); err != nil {
			return nil, fmt.Errorf("decode build progress: %w", err)
		}
		if end.Done && end.Image != nil {
			return end.Image, nil
		}
		var ev ImageEvent
		_ = json.Unmarshal(sc.Bytes(), &ev)
		if ev.Error != "" {
			return nil, fmt.Errorf("build image %s: %s", name, ev.Error)
		}
		if progress != nil {
			progress(ev)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("build image %s: %w", name, err)
	}
	return nil, fmt.Errorf("build image %s: the server ended the stream early", name)
}

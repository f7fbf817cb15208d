package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/warrenhq/warren/dirtar"
	"github.com/warrenhq/warren/wire"
)

// ReadFile streams a file out of a sandbox. The caller closes it.
func (c *Client) ReadFile(ctx context.Context, id, path string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, http.MethodGet, sandboxPath(id, "/files"), url.Values{"path": {path}}, nil, "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// ReadFileBytes reads a whole file, refusing one larger than max bytes
// (0: no bound).
func (c *Client) ReadFileBytes(ctx context.Context, id, path string, max int64) ([]byte, error) {
	rc, err := c.ReadFile(ctx, id, path)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if max <= 0 {
		return io.ReadAll(rc)
	}
	b, err := io.ReadAll(io.LimitReader(rc, max+1))
	if err == nil && int64(len(b)) > max {
		return nil, fmt.Errorf("read %s: the file is larger than %d bytes", path, max)
	}
	return b, err
}

// WriteOptions shape WriteFile.
type WriteOptions struct {
	// Mode is the file's permission in octal ("0755"); default 0644.
	Mode string
}

// WriteFile streams r into a file, creating parent directories. Readers
// in the sandbox never see it half-written.
func (c *Client) WriteFile(ctx context.Context, id, path string, r io.Reader, opts ...WriteOptions) (*FileInfo, error) {
	q := url.Values{"path": {path}}
	for _, o := range opts {
		if o.Mode != "" {
			q.Set("mode", o.Mode)
		}
	}
	resp, err := c.send(ctx, http.MethodPut, sandboxPath(id, "/files"), q, r, "application/octet-stream")
	if err != nil {
		return nil, err
	}
	return decodeInfo(resp)
}

func decodeInfo(resp *http.Response) (*FileInfo, error) {
	defer resp.Body.Close()
	var fi FileInfo
	if err := jsonDecode(resp.Body, &fi); err != nil {
		return nil, err
	}
	return &fi, nil
}

// ListFiles lists a directory, sorted by name.
func (c *Client) ListFiles(ctx context.Context, id, path string) ([]FileInfo, error) {
	var out wire.FileList
	return out.Entries, c.call(ctx, http.MethodGet, sandboxPath(id, "/files/list"), url.Values{"path": {path}}, nil, &out)
}

// StatFile describes a path (a symbolic link itself, not its target).
func (c *Client) StatFile(ctx context.Context, id, path string) (*FileInfo, error) {
	var fi FileInfo
	return &fi, c.call(ctx, http.MethodGet, sandboxPath(id, "/files/stat"), url.Values{"path": {path}}, nil, &fi)
}

// Mkdir creates a directory and its parents.
func (c *Client) Mkdir(ctx context.Context, id, path string) (*FileInfo, error) {
	var fi FileInfo
	return &fi, c.call(ctx, http.MethodPost, sandboxPath(id, "/files/mkdir"), url.Values{"path": {path}}, nil, &fi)
}

// RemoveFile removes a path; a non-empty directory only when recursive.
func (c *Client) RemoveFile(ctx context.Context, id, path string, recursive bool) error {
	q := url.Values{"path": {path}, "recursive": {strconv.FormatBool(recursive)}}
	return c.call(ctx, http.MethodDelete, sandboxPath(id, "/files"), q, nil, nil)
}

// ReadArchive streams a directory of a sandbox as tar. The caller closes
// it.
func (c *Client) ReadArchive(ctx context.Context, id, path string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, http.MethodGet, sandboxPath(id, "/files/archive"), url.Values{"path": {path}}, nil, "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// WriteArchive unpacks the tar stream r into a directory of a sandbox,
// creating it.
func (c *Client) WriteArchive(ctx context.Context, id, path string, r io.Reader) (*FileInfo, error) {
	resp, err := c.send(ctx, http.MethodPut, sandboxPath(id, "/files/archive"), url.Values{"path": {path}}, r, wire.ArchiveContentType)
	if err != nil {
		return nil, err
	}
	return decodeInfo(resp)
}

// UploadDir copies the local directory localDir into the sandbox at dir.
func (c *Client) UploadDir(ctx context.Context, id, localDir, dir string) (*FileInfo, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(dirtar.Pack(pw, localDir)) }()
	defer pr.Close()
	return c.WriteArchive(ctx, id, dir, pr)
}

// DownloadOptions bound DownloadDir.
type DownloadOptions struct {
	// MaxBytes bounds the total size of the files written; 0: no bound.
	MaxBytes int64
}

// DownloadDir copies the sandbox's directory dir into localDir. What a
// sandbox sends is not trusted: nothing is written outside localDir, and a
// symbolic link that points outside it is refused.
func (c *Client) DownloadDir(ctx context.Context, id, dir, localDir string, opts ...DownloadOptions) error {
	rc, err := c.ReadArchive(ctx, id, dir)
	if err != nil {
		return err
	}
	defer rc.Close()
	o := dirtar.Options{LocalLinks: true}
	for _, d := range opts {
		o.MaxBytes = d.MaxBytes
	}
	if err := dirtar.Unpack(rc, localDir, o); err != nil {
		return fmt.Errorf("download %s: %w", dir, err)
	}
	return nil
}

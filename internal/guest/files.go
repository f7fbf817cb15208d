package guest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"

	"github.com/warrenhq/warren/dirtar"
	"github.com/warrenhq/warren/wire"
)

// cleanPath validates a path from a request: absolute, cleaned.
func cleanPath(r *http.Request) (string, error) {
	p := r.URL.Query().Get("path")
	if p == "" {
		return "", fmt.Errorf("%w: path is required", errBadRequest)
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%w: path %q must be absolute", errBadRequest, p)
	}
	return filepath.Clean(p), nil
}

func fileInfo(path string, fi fs.FileInfo) wire.FileInfo {
	kind := wire.FileTypeOther
	switch {
	case fi.Mode().IsRegular():
		kind = wire.FileTypeFile
	case fi.IsDir():
		kind = wire.FileTypeDir
	case fi.Mode()&fs.ModeSymlink != 0:
		kind = wire.FileTypeSymlink
	}
	return wire.FileInfo{
		Name:    fi.Name(),
		Path:    path,
		Type:    kind,
		Size:    fi.Size(),
		Mode:    fmt.Sprintf("%04o", fi.Mode().Perm()),
		ModTime: fi.ModTime().UTC(),
	}
}

// fsError answers a filesystem error with the matching status.
func fsError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, errBadRequest):
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
	case errors.Is(err, fs.ErrNotExist):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, syscall.ENOTEMPTY):
		writeError(w, http.StatusConflict, "conflict", err.Error())
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR):
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
	case errors.Is(err, fs.ErrPermission):
		writeError(w, http.StatusForbidden, "forbidden", err.Error())
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		writeError(w, http.StatusInsufficientStorage, "no_space", err.Error())
	default:
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
	}
}

func (a *Agent) handleReadFile(w http.ResponseWriter, r *http.Request) {
	p, err := cleanPath(r)
	if err != nil {
		fsError(w, err)
		return
	}
	f, err := os.Open(p)
	if err != nil {
		fsError(w, err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		fsError(w, err)
		return
	}
	if fi.IsDir() {
		fsError(w, fmt.Errorf("%w: %s is a directory", errBadRequest, p))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if fi.Mode().IsRegular() {
		w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
	}
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, f)
}

// writeFile streams the body into a temporary file beside the target and
// renames it into place, so readers never see a half-written file.
func writeFile(p string, r *http.Request) (any, error) {
	mode := os.FileMode(0o644)
	if m := r.URL.Query().Get("mode"); m != "" {
		v, err := strconv.ParseUint(m, 8, 32)
		if err != nil || v > 0o7777 {
			return nil, fmt.Errorf("%w: mode %q is not an octal permission", errBadRequest, m)
		}
		mode = os.FileMode(v)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+tempMarker+"*")
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(tmp, r.Body)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return nil, err
	}
	return statPath(p)
}

// pathHandler serves a request about one path: fn answers a JSON value
// (nil for 204 No Content) or an error mapped to its status.
func pathHandler(fn func(p string, r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := cleanPath(r)
		if err == nil {
			var v any
			if v, err = fn(p, r); err == nil {
				if v == nil {
					w.WriteHeader(http.StatusNoContent)
				} else {
					writeJSON(w, http.StatusOK, v)
				}
				return
			}
		}
		fsError(w, err)
	}
}

func statPath(p string) (any, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return nil, err
	}
	return fileInfo(p, fi), nil
}

func listDir(p string, _ *http.Request) (any, error) {
	d, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	// At most MaxListEntries, so the answer stays within what the host
	// reads; the rest is cut and the listing marked truncated.
	entries, err := d.ReadDir(MaxListEntries + 1)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	truncated := len(entries) > MaxListEntries
	if truncated {
		entries = entries[:MaxListEntries]
	}
	out := make([]wire.FileInfo, 0, len(entries))
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			continue // removed while listing
		}
		out = append(out, fileInfo(filepath.Join(p, e.Name()), fi))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return wire.FileList{Path: p, Entries: out, Truncated: truncated}, nil
}

// handleReadArchive streams the tree under a directory as tar.
func (a *Agent) handleReadArchive(w http.ResponseWriter, r *http.Request) {
	p, err := cleanPath(r)
	if err == nil {
		var fi os.FileInfo
		if fi, err = os.Stat(p); err == nil && !fi.IsDir() {
			err = fmt.Errorf("%w: %s is not a directory", errBadRequest, p)
		}
	}
	if err != nil {
		fsError(w, err)
		return
	}
	w.Header().Set("Content-Type", wire.ArchiveContentType)
	w.WriteHeader(http.StatusOK)
	// Once the answer has begun, a failure can only cut the stream
	// short, which the reader sees as a truncated tar.
	_ = dirtar.Pack(w, p)
}

// writeArchive unpacks a tar stream into a directory, creating it.
func writeArchive(p string, r *http.Request) (any, error) {
	if err := dirtar.Unpack(r.Body, p, dirtar.Options{Owners: true, SpecialBits: true}); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadRequest, err)
	}
	return statPath(p)
}

func mkdir(p string, _ *http.Request) (any, error) {
	if err := os.MkdirAll(p, 0o755); err != nil {
		return nil, err
	}
	return statPath(p)
}

// move renames a file or directory to the absolute path in "to",
// creating the destination's parents; it answers the moved entry.
func move(p string, r *http.Request) (any, error) {
	to := r.URL.Query().Get("to")
	if !filepath.IsAbs(to) {
		return nil, fmt.Errorf("%w: destination %q must be absolute", errBadRequest, to)
	}
	to = filepath.Clean(to)
	if p == "/" || to == "/" {
		return nil, fmt.Errorf("%w: refusing to move /", errBadRequest)
	}
	if _, err := os.Lstat(p); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return nil, err
	}
	if err := os.Rename(p, to); err != nil {
		return nil, err
	}
	return statPath(to)
}

func remove(p string, r *http.Request) (any, error) {
	if p == "/" {
		return nil, fmt.Errorf("%w: refusing to remove /", errBadRequest)
	}
	if _, err := os.Lstat(p); err != nil {
		return nil, err
	}
	if r.URL.Query().Get("recursive") == "true" {
		return nil, os.RemoveAll(p)
	}
	return nil, os.Remove(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": Error{Code: code, Message: msg}})
}

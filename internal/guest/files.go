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

func fileInfo(path string, fi fs.FileInfo) FileInfo {
	kind := "other"
	switch {
	case fi.Mode().IsRegular():
		kind = "file"
	case fi.IsDir():
		kind = "dir"
	case fi.Mode()&fs.ModeSymlink != 0:
		kind = "symlink"
	}
	return FileInfo{
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

// handleWriteFile streams the body into a temporary file beside the target
// and renames it into place, so readers never see a half-written file.
func (a *Agent) handleWriteFile(w http.ResponseWriter, r *http.Request) {
	p, err := cleanPath(r)
	if err != nil {
		fsError(w, err)
		return
	}
	mode := os.FileMode(0o644)
	if m := r.URL.Query().Get("mode"); m != "" {
		v, err := strconv.ParseUint(m, 8, 32)
		if err != nil || v > 0o7777 {
			fsError(w, fmt.Errorf("%w: mode %q is not an octal permission", errBadRequest, m))
			return
		}
		mode = os.FileMode(v)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		fsError(w, err)
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".warren-*")
	if err != nil {
		fsError(w, err)
		return
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
		fsError(w, err)
		return
	}
	fi, err := os.Stat(p)
	if err != nil {
		fsError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, fileInfo(p, fi))
}

func (a *Agent) handleList(w http.ResponseWriter, r *http.Request) {
	p, err := cleanPath(r)
	if err != nil {
		fsError(w, err)
		return
	}
	entries, err := os.ReadDir(p)
	if err != nil {
		fsError(w, err)
		return
	}
	out := make([]FileInfo, 0, len(entries))
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			continue // removed while listing
		}
		out = append(out, fileInfo(filepath.Join(p, e.Name()), fi))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSON(w, http.StatusOK, map[string]any{"path": p, "entries": out})
}

func (a *Agent) handleStat(w http.ResponseWriter, r *http.Request) {
	p, err := cleanPath(r)
	if err != nil {
		fsError(w, err)
		return
	}
	fi, err := os.Lstat(p)
	if err != nil {
		fsError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, fileInfo(p, fi))
}

func (a *Agent) handleMkdir(w http.ResponseWriter, r *http.Request) {
	p, err := cleanPath(r)
	if err != nil {
		fsError(w, err)
		return
	}
	if err := os.MkdirAll(p, 0o755); err != nil {
		fsError(w, err)
		return
	}
	fi, err := os.Stat(p)
	if err != nil {
		fsError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, fileInfo(p, fi))
}

func (a *Agent) handleRemove(w http.ResponseWriter, r *http.Request) {
	p, err := cleanPath(r)
	if err != nil {
		fsError(w, err)
		return
	}
	if p == "/" {
		fsError(w, fmt.Errorf("%w: refusing to remove /", errBadRequest))
		return
	}
	if _, err := os.Lstat(p); err != nil {
		fsError(w, err)
		return
	}
	if r.URL.Query().Get("recursive") == "true" {
		err = os.RemoveAll(p)
	} else {
		err = os.Remove(p)
	}
	if err != nil {
		fsError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": Error{Code: code, Message: msg}})
}

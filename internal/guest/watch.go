package guest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/fsnotify/fsnotify"
	"github.com/warrenhq/warren/wire"
)

// Directory watches report what changes under a directory: a stream for
// as long as the caller listens (GET /files/watch), or a watcher that
// keeps its events until asked for them (POST /watchers). They back the
// E2B-compatible filesystem service's WatchDir and watcher calls.

// Event types of a watch.
const (
	WatchStarted = "start"
	WatchCreate  = "create"
	WatchWrite   = "write"
	WatchRemove  = "remove"
	WatchRename  = "rename"
	WatchChmod   = "chmod"
	// WatchFailed ends a stream whose watch broke (a watched tree grew
	// past the limits, the kernel's queue overflowed).
	WatchFailed = "error"
)

// WatchEvent is one NDJSON line of a watch. Name is the changed path
// relative to the watched directory.
type WatchEvent struct {
	Type  string         `json:"type"`
	Name  string         `json:"name,omitempty"`
	Entry *wire.FileInfo `json:"entry,omitempty"`
	Error string         `json:"error,omitempty"`
	// Code, with WatchFailed, is WatchLimitCode when a limit broke it.
	Code string `json:"code,omitempty"`
}

// WatchLimitCode marks a watch that a limit ended.
const WatchLimitCode = "too_many_requests"

// WatchRequest is the body of POST /watchers (and the query of GET
// /files/watch).
type WatchRequest struct {
	Path      string `json:"path"`
	Recursive bool   `json:"recursive,omitempty"`
	// Entry asks for each event's entry as it is after the change.
	Entry bool `json:"entry,omitempty"`
}

// WatcherID is the answer to POST /watchers.
type WatcherID struct {
	ID string `json:"id"`
}

// WatcherEvents is the answer to GET /watchers/{id}/events.
type WatcherEvents struct {
	Events []WatchEvent `json:"events"`
}

const (
	// maxWatches bounds the watches (streams and watchers) open at once.
	maxWatches = 64
	// maxWatchedDirs bounds the directories one recursive watch follows.
	maxWatchedDirs = 8192
	// maxHeldEvents bounds what a watcher keeps between two reads.
	maxHeldEvents = 10000
)

var errWatchLimit = errors.New("too many watches")

// dirWatch follows one directory, and its subdirectories when
// recursive.
type dirWatch struct {
	root      string
	recursive bool
	entry     bool
	w         *fsnotify.Watcher
	dirs      int
}

func newDirWatch(req WatchRequest) (*dirWatch, error) {
	if req.Path == "" || !filepath.IsAbs(req.Path) {
		return nil, fmt.Errorf("%w: path %q must be absolute", errBadRequest, req.Path)
	}
	root := filepath.Clean(req.Path)
	fi, err := os.Stat(root)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory", errBadRequest, root)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", root, err)
	}
	d := &dirWatch{root: root, recursive: req.Recursive, entry: req.Entry, w: w}
	if err := d.add(root); err != nil {
		w.Close()
		return nil, err
	}
	return d, nil
}

// add watches dir, and everything below it when recursive.
func (d *dirWatch) add(dir string) error {
	if !d.recursive {
		d.dirs++
		return d.w.Add(dir)
	}
	return filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if p == dir {
				return err
			}
			return nil // gone or unreadable below the top: not followed
		}
		if !e.IsDir() {
			return nil
		}
		if d.dirs >= maxWatchedDirs {
			return fmt.Errorf("%w: more than %d directories under %s", errWatchLimit, maxWatchedDirs, d.root)
		}
		if err := d.w.Add(p); err != nil {
			if p == dir {
				return err
			}
			return nil
		}
		d.dirs++
		return nil
	})
}

// next waits for the next change; a change that fsnotify reports as
// several operations at once becomes several events.
func (d *dirWatch) next(ctx context.Context) ([]WatchEvent, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err, ok := <-d.w.Errors:
			if !ok {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("watch %s: %w", d.root, err)
		case ev, ok := <-d.w.Events:
			if !ok {
				return nil, io.EOF
			}
			name, err := filepath.Rel(d.root, ev.Name)
			if err != nil || name == "." || isAgentTemp(filepath.Base(name)) {
				continue // the watched directory itself, or a write in flight
			}
			var out []WatchEvent
			for _, k := range []struct {
				op   fsnotify.Op
				kind string
			}{{fsnotify.Create, WatchCreate}, {fsnotify.Write, WatchWrite}, {fsnotify.Remove, WatchRemove},
				{fsnotify.Rename, WatchRename}, {fsnotify.Chmod, WatchChmod}} {
				if ev.Has(k.op) {
					out = append(out, WatchEvent{Type: k.kind, Name: name})
				}
			}
			if len(out) == 0 {
				continue
			}
			var fi os.FileInfo
			if d.entry || d.recursive && ev.Has(fsnotify.Create) {
				fi, _ = os.Lstat(ev.Name)
			}
			if d.recursive && ev.Has(fsnotify.Create) && fi != nil && fi.IsDir() {
				if err := d.add(ev.Name); err != nil {
					return nil, err
				}
			}
			if d.entry && fi != nil {
				info := fileInfo(ev.Name, fi)
				for i := range out {
					if out[i].Type != WatchRemove && out[i].Type != WatchRename {
						out[i].Entry = &info
					}
				}
			}
			return out, nil
		}
	}
}

func (d *dirWatch) close() { d.w.Close() }

// tempMarker names the temporary file a write goes to before it is
// renamed into place: ".<name>.warren-<digits>".
const tempMarker = ".warren-"

// isAgentTemp says whether a name is one of the agent's own temporary
// files, whose changes a watch leaves out: the caller wrote a file, and
// sees it created under its own name.
func isAgentTemp(base string) bool {
	i := strings.LastIndex(base, tempMarker)
	if !strings.HasPrefix(base, ".") || i < 1 {
		return false
	}
	digits := base[i+len(tempMarker):]
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
	}
	return digits != ""
}

// watches counts and keeps the agent's watches.
type watches struct {
	mu       sync.Mutex
	open     int
	next     int
	watchers map[string]*watcher
}

func (ws *watches) reserve() error {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.open >= maxWatches {
		return fmt.Errorf("%w: %d directory watches are open; stop some first", errWatchLimit, ws.open)
	}
	ws.open++
	return nil
}

func (ws *watches) release() {
	ws.mu.Lock()
	ws.open--
	ws.mu.Unlock()
}

// watcher holds a watch's events until they are read.
type watcher struct {
	d      *dirWatch
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	events []WatchEvent
	err    error
}

func (a *Agent) watchState() *watches {
	a.watchOnce.Do(func() { a.watches = &watches{watchers: map[string]*watcher{}} })
	return a.watches
}

func watchError(w http.ResponseWriter, err error) {
	if errors.Is(err, errWatchLimit) {
		writeError(w, http.StatusTooManyRequests, WatchLimitCode, err.Error())
		return
	}
	fsError(w, err)
}

// handleWatch streams a directory's changes until the caller leaves.
func (a *Agent) handleWatch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := WatchRequest{Path: q.Get("path"), Recursive: q.Get("recursive") == "1", Entry: q.Get("entry") == "1"}
	ws := a.watchState()
	if err := ws.reserve(); err != nil {
		watchError(w, err)
		return
	}
	defer ws.release()
	d, err := newDirWatch(req)
	if err != nil {
		watchError(w, err)
		return
	}
	defer d.close()
	w.Header().Set("Content-Type", NDJSON)
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	send := func(ev WatchEvent) bool {
		if enc.Encode(ev) != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	if !send(WatchEvent{Type: WatchStarted}) {
		return
	}
	for {
		evs, err := d.next(r.Context())
		if err != nil {
			if r.Context().Err() == nil {
				ev := WatchEvent{Type: WatchFailed, Error: err.Error()}
				if errors.Is(err, errWatchLimit) {
					ev.Code = WatchLimitCode
				}
				send(ev)
			}
			return
		}
		for _, ev := range evs {
			if !send(ev) {
				return
			}
		}
	}
}

// handleCreateWatcher starts a watcher that keeps events until read.
func (a *Agent) handleCreateWatcher(w http.ResponseWriter, r *http.Request) {
	var req WatchRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, MaxAnswer)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "decode watcher request: "+err.Error())
		return
	}
	ws := a.watchState()
	if err := ws.reserve(); err != nil {
		watchError(w, err)
		return
	}
	d, err := newDirWatch(req)
	if err != nil {
		ws.release()
		watchError(w, err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	wt := &watcher{d: d, cancel: cancel, done: make(chan struct{})}
	ws.mu.Lock()
	ws.next++
	id := "w" + strconv.Itoa(ws.next)
	ws.watchers[id] = wt
	ws.mu.Unlock()
	go func() {
		defer close(wt.done)
		defer d.close()
		for {
			evs, err := d.next(ctx)
			wt.mu.Lock()
			switch {
			case err != nil:
				if ctx.Err() == nil {
					wt.err = err
				}
			case len(wt.events)+len(evs) > maxHeldEvents:
				// Told, not silently dropped: the reader learns that
				// it missed changes.
				err = fmt.Errorf("%w: more than %d changes were not read; remove this watcher and create another", errWatchLimit, maxHeldEvents)
				wt.err, wt.events = err, nil
			default:
				wt.events = append(wt.events, evs...)
			}
			wt.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	writeJSON(w, http.StatusOK, WatcherID{ID: id})
}

func (ws *watches) get(id string) (*watcher, error) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	wt := ws.watchers[id]
	if wt == nil {
		return nil, fmt.Errorf("watcher %q: %w", id, os.ErrNotExist)
	}
	return wt, nil
}

// handleWatcherEvents answers the events since the last read.
func (a *Agent) handleWatcherEvents(w http.ResponseWriter, r *http.Request) {
	wt, err := a.watchState().get(r.PathValue("id"))
	if err != nil {
		fsError(w, err)
		return
	}
	wt.mu.Lock()
	evs, werr := wt.events, wt.err
	wt.events = nil
	wt.mu.Unlock()
	if werr != nil && len(evs) == 0 {
		watchError(w, werr)
		return
	}
	if evs == nil {
		evs = []WatchEvent{}
	}
	writeJSON(w, http.StatusOK, WatcherEvents{Events: evs})
}

// handleRemoveWatcher stops a watcher and forgets it.
func (a *Agent) handleRemoveWatcher(w http.ResponseWriter, r *http.Request) {
	ws := a.watchState()
	id := r.PathValue("id")
	ws.mu.Lock()
	wt := ws.watchers[id]
	delete(ws.watchers, id)
	ws.mu.Unlock()
	if wt == nil {
		fsError(w, fmt.Errorf("watcher %q: %w", id, os.ErrNotExist))
		return
	}
	wt.cancel()
	<-wt.done
	ws.release()
	w.WriteHeader(http.StatusNoContent)
}

package agenthost

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Run records a running `warren start`, so `warren stop` and a detaching
// parent can find it. It holds tokens: the file is 0600.
type Run struct {
	RunID     string    `json:"run_id"`
	PID       int       `json:"pid"`
	Workspace string    `json:"workspace"`
	LogPath   string    `json:"log_path,omitempty"`
	StartedAt time.Time `json:"started_at"`
	Pairing   *Pairing  `json:"pairing"`
}

func runsDir(dataDir string) string { return filepath.Join(dataDir, "runs") }

func runPath(dataDir, runID string) string { return filepath.Join(runsDir(dataDir), runID+".json") }

// WriteRun records a run (atomically: a reader sees all of it or none).
func WriteRun(dataDir string, r *Run) error {
	if err := os.MkdirAll(runsDir(dataDir), 0o700); err != nil {
		return err
	}
	return writeFileAtomic(runPath(dataDir, r.RunID), r)
}

// RemoveRun forgets a run.
func RemoveRun(dataDir, runID string) error {
	err := os.Remove(runPath(dataDir, runID))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// ReadRun returns one recorded run, or nil when there is none.
func ReadRun(dataDir, runID string) (*Run, error) {
	b, err := os.ReadFile(runPath(dataDir, runID))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r Run
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("parse run %s: %w", runID, err)
	}
	return &r, nil
}

// Runs lists the recorded runs whose process is alive; records of dead
// ones (a crash) are removed.
func Runs(dataDir string) ([]*Run, error) {
	entries, err := os.ReadDir(runsDir(dataDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Run
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		r, err := ReadRun(dataDir, id)
		if err != nil || r == nil {
			continue
		}
		if !Alive(r.PID) {
			_ = RemoveRun(dataDir, id)
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// Alive reports whether a process exists.
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

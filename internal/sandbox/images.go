package sandbox

import (
	"context"
	"fmt"

	"github.com/warrenhq/warren/internal/store"
)

// ImageInUse says what stops an image from being deleted or replaced: a
// sandbox that is not yet gone (a paused one resumes on it), or a warm
// pool. It names one; "" means nothing does.
func (m *Manager) ImageInUse(ctx context.Context, image string) (string, error) {
	m.mu.Lock()
	for _, p := range m.pools {
		if p.spec.Image == image {
			m.mu.Unlock()
			return "the warm pool of " + image, nil
		}
	}
	m.mu.Unlock()
	rows, err := m.cfg.Store.ListSandboxes(ctx, store.Filter{States: []string{StateCreating, StateRunning, StatePausing,
		StatePaused, StateResuming, StateForking, StateDeleting, StatePooled}, Node: m.cfg.Node})
	if err != nil {
		return "", fmt.Errorf("list sandboxes: %w", err)
	}
	for _, r := range rows {
		if r.Image == image {
			return "sandbox " + r.ID + " (" + r.State + ")", nil
		}
	}
	return "", nil
}

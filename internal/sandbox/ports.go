package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"time"

	"github.com/warrenhq/warren/wire"
)

func validPort(port int) error {
	if port < 1 || port > 65535 {
		return badRequest("port", "port must be between 1 and 65535, got %d", port)
	}
	return nil
}

// updateSpec applies change to a running sandbox's stored spec.
func (m *Manager) updateSpec(ctx context.Context, org, id string, change func(*spec) error) (*wire.Sandbox, error) {
	if _, err := m.agentFor(ctx, org, id); err != nil {
		return nil, err
	}
	row, err := m.cfg.Store.GetSandbox(ctx, org, id)
	if err != nil {
		return nil, err
	}
	var sp spec
	_ = json.Unmarshal(row.Spec, &sp)
	if err := change(&sp); err != nil {
		return nil, err
	}
	b, _ := json.Marshal(sp)
	if err := m.cfg.Store.UpdateSpec(ctx, id, b); err != nil {
		return nil, err
	}
	row.Spec = b
	return m.view(row), nil
}

// ExposePort makes a port of a running sandbox reachable through the
// preview proxy.
func (m *Manager) ExposePort(ctx context.Context, org, id string, port int) (*wire.Port, error) {
	if err := validPort(port); err != nil {
		return nil, err
	}
	if m.cfg.Network == nil || m.cfg.Network.Get(id) == nil {
		if _, err := m.agentFor(ctx, org, id); err != nil {
			return nil, err
		}
		return nil, conflict("sandbox %s has no network to expose a port on", id)
	}
	if _, err := m.updateSpec(ctx, org, id, func(sp *spec) error {
		if !slices.Contains(sp.Ports, port) {
			sp.Ports = append(sp.Ports, port)
			slices.Sort(sp.Ports)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	p := m.port(id, port)
	return &p, nil
}

// UnexposePort stops previewing a port.
func (m *Manager) UnexposePort(ctx context.Context, org, id string, port int) error {
	if err := validPort(port); err != nil {
		return err
	}
	_, err := m.updateSpec(ctx, org, id, func(sp *spec) error {
		i := slices.Index(sp.Ports, port)
		if i < 0 {
			return &Error{Kind: KindNotFound, Message: "port is not exposed"}
		}
		sp.Ports = slices.Delete(sp.Ports, i, i+1)
		// Exposing it again does not bring old links back.
		notBefore(sp, port)
		return nil
	})
	return err
}

func notBefore(sp *spec, port int) {
	if sp.PreviewNotBefore == nil {
		sp.PreviewNotBefore = map[int]int64{}
	}
	sp.PreviewNotBefore[port] = time.Now().UnixMilli() + 1
}

// RevokePreviewTokens revokes one preview token of a port (by its id,
// until it expires), or every token issued so far when tokenID is "".
func (m *Manager) RevokePreviewTokens(ctx context.Context, org, id string, port int, tokenID string, expires time.Time) error {
	if err := validPort(port); err != nil {
		return err
	}
	if _, err := m.row(ctx, org, id); err != nil {
		return err
	}
	if tokenID != "" {
		return m.cfg.Store.RevokeToken(ctx, tokenID, id, expires)
	}
	row, err := m.cfg.Store.GetSandbox(ctx, org, id)
	if err != nil {
		return err
	}
	var sp spec
	_ = json.Unmarshal(row.Spec, &sp)
	notBefore(&sp, port)
	b, _ := json.Marshal(sp)
	return m.cfg.Store.UpdateSpec(ctx, id, b)
}

// TokenRevoked says whether a preview token was revoked: by id, or by
// a revoke-all or unexpose after it was issued.
func (m *Manager) TokenRevoked(ctx context.Context, id string, port int, tokenID string, issued time.Time) bool {
	row, err := m.cfg.Store.GetSandbox(ctx, "", id)
	if err != nil {
		return true
	}
	var sp spec
	_ = json.Unmarshal(row.Spec, &sp)
	if nb := sp.PreviewNotBefore[port]; nb != 0 && issued.UnixMilli() < nb {
		return true
	}
	revoked, err := m.cfg.Store.TokenRevoked(ctx, tokenID)
	return err != nil || revoked
}

// ErrNoPreview is returned for any preview the caller may not see: an
// unknown sandbox, a port not exposed, a sandbox not running, another
// org's sandbox. One error for all, so the proxy tells nothing apart.
var ErrNoPreview = errors.New("no such preview")

// PreviewTarget returns where to send a preview request for a sandbox's
// port. org "" skips the owner check (a signed token already bound it).
func (m *Manager) PreviewTarget(ctx context.Context, org, id string, port int) (netip.AddrPort, error) {
	return m.portTarget(ctx, org, id, port, true)
}

// PortTarget returns where any port of a sandbox is served, exposed or
// not, for a caller that authorized the request itself (the E2B layer's
// public ports). Like a preview, a visit wakes a paused sandbox.
func (m *Manager) PortTarget(ctx context.Context, org, id string, port int) (netip.AddrPort, error) {
	if err := validPort(port); err != nil {
		return netip.AddrPort{}, err
	}
	return m.portTarget(ctx, org, id, port, false)
}

func (m *Manager) portTarget(ctx context.Context, org, id string, port int, exposed bool) (netip.AddrPort, error) {
	row, err := m.cfg.Store.GetSandbox(ctx, org, id)
	if err == nil && row.State == StatePaused {
		// A visit wakes a paused sandbox, as any other use does.
		if _, rerr := m.Resume(ctx, org, id); rerr == nil {
			row, err = m.cfg.Store.GetSandbox(ctx, org, id)
		}
	}
	if err != nil || row.State != StateRunning {
		return netip.AddrPort{}, ErrNoPreview
	}
	var sp spec
	_ = json.Unmarshal(row.Spec, &sp)
	if exposed && !slices.Contains(sp.Ports, port) || m.cfg.Network == nil {
		return netip.AddrPort{}, ErrNoPreview
	}
	info := m.cfg.Network.Get(id)
	if info == nil {
		return netip.AddrPort{}, ErrNoPreview
	}
	m.mu.Lock()
	if l := m.live[id]; l != nil {
		l.touch()
	}
	m.mu.Unlock()
	return netip.AddrPortFrom(info.Address, uint16(port)), nil
}

// HoldPreview marks a long preview connection (a WebSocket) as use, so the
// idle timeout leaves the sandbox alone while it is open.
func (m *Manager) HoldPreview(id string) func() {
	m.mu.Lock()
	l := m.live[id]
	m.mu.Unlock()
	if l == nil {
		return func() {}
	}
	return l.hold()
}

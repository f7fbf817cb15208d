package api

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/warrenhq/warren/internal/apikey"
	"github.com/warrenhq/warren/internal/secrets"
	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/wire"
)

// Orgs, API keys, quotas, secrets, volumes and usage. A key acts in its
// own org: another org's key, secret or volume is a 404, never a 403.
// Admin keys of the default org administer the node (every org); admin
// keys of another org administer only theirs.

func (s *Server) tenancyRoutes() []route {
	return []route{
		{"POST /v1/orgs", s.handleCreateOrg, admin},
		{"GET /v1/orgs", s.handleListOrgs, admin},
		{"GET /v1/orgs/{id}", s.handleGetOrg, anyKey},
		{"DELETE /v1/orgs/{id}", s.handleDeleteOrg, admin},
		{"GET /v1/orgs/{id}/quotas", s.handleGetQuotas, anyKey},
		{"PUT /v1/orgs/{id}/quotas", s.handleSetQuotas, admin},
		{"POST /v1/api-keys", s.handleCreateKey, admin},
		{"GET /v1/api-keys", s.handleListKeys, admin},
		{"DELETE /v1/api-keys/{id}", s.handleDeleteKey, admin},
		{"POST /v1/secrets", s.handleCreateSecret, []string{wire.ScopeSecretsWrite}},
		{"GET /v1/secrets", s.handleListSecrets, []string{wire.ScopeSecretsRead}},
		{"GET /v1/secrets/{name}", s.handleGetSecret, []string{wire.ScopeSecretsRead}},
		{"DELETE /v1/secrets/{name}", s.handleDeleteSecret, []string{wire.ScopeSecretsWrite}},
		{"POST /v1/volumes", s.handleCreateVolume, []string{wire.ScopeVolumesWrite}},
		{"GET /v1/volumes", s.handleListVolumes, []string{wire.ScopeVolumesRead}},
		{"GET /v1/volumes/{name}", s.handleGetVolume, []string{wire.ScopeVolumesRead}},
		{"DELETE /v1/volumes/{name}", s.handleDeleteVolume, []string{wire.ScopeVolumesWrite}},
		{"GET /v1/usage", s.handleUsage, []string{wire.ScopeUsageRead}},
	}
}

var idEnc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID is prefix and 20 random base32 letters, as sandbox ids are.
func newID(prefix string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return prefix + idEnc.EncodeToString(b)[:20]
}

// tenancyError answers the store's and the vault's errors.
func (s *Server) tenancyError(w http.ResponseWriter, r *http.Request, what string, err error) {
	var fe *secrets.FieldError
	var qe *store.QuotaError
	switch {
	case errors.As(err, &fe):
		writeError(w, wire.CodeBadRequest, fe.Message, fe.Field)
	case errors.As(err, &qe):
		if s.Metrics != nil {
			s.Metrics.QuotaRefusal(qe.Field)
		}
		writeError(w, wire.CodeQuotaExceeded, qe.Message, qe.Field)
	case errors.Is(err, store.ErrNotFound):
		writeError(w, wire.CodeNotFound, what+" not found", "")
	case errors.Is(err, store.ErrExists):
		writeError(w, wire.CodeConflict, what+" already exists", "name")
	case errors.Is(err, store.ErrInUse):
		writeError(w, wire.CodeConflict, err.Error(), "")
	default:
		s.fail(w, r, err)
	}
}

// orgFor is the org a request about orgID may see: any for a node
// admin, only its own for everyone else (another is not found).
func orgVisible(c Caller, orgID string) bool {
	return c.NodeAdmin() || c.Org == orgID
}

func orgView(o *store.Org) *wire.Org {
	return &wire.Org{ID: o.ID, Name: o.Name, Quotas: o.Quotas, CreatedAt: o.CreatedAt}
}

func (s *Server) handleCreateOrg(w http.ResponseWriter, r *http.Request) {
	if !callerFrom(r.Context()).NodeAdmin() {
		writeError(w, wire.CodeForbidden, "only admin keys of the default org create orgs", "")
		return
	}
	var req wire.OrgRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if !secrets.ValidName(req.Name) {
		writeError(w, wire.CodeBadRequest, fmt.Sprintf("org name %q must be 1 to 64 letters, digits, '_', '.' or '-'", req.Name), "name")
		return
	}
	o := store.Org{ID: newID("org_"), Name: req.Name, CreatedAt: time.Now().UTC()}
	if err := s.store.InsertOrg(r.Context(), o); err != nil {
		s.tenancyError(w, r, "org "+req.Name, err)
		return
	}
	writeJSON(w, http.StatusCreated, orgView(&o))
}

func (s *Server) handleListOrgs(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	all, err := s.store.ListOrgs(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := wire.OrgList{Orgs: []*wire.Org{}}
	for _, o := range all {
		if orgVisible(c, o.ID) {
			out.Orgs = append(out.Orgs, orgView(o))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// visibleOrg reads the org a path names, if the caller may see it.
func (s *Server) visibleOrg(w http.ResponseWriter, r *http.Request) (*store.Org, bool) {
	id := r.PathValue("id")
	o, err := s.store.GetOrg(r.Context(), id)
	if err == nil && !orgVisible(callerFrom(r.Context()), id) {
		err = store.ErrNotFound
	}
	if err != nil {
		s.tenancyError(w, r, "org "+id, err)
		return nil, false
	}
	return o, true
}

func (s *Server) handleGetOrg(w http.ResponseWriter, r *http.Request) {
	if o, ok := s.visibleOrg(w, r); ok {
		writeJSON(w, http.StatusOK, orgView(o))
	}
}

func (s *Server) handleDeleteOrg(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	o, ok := s.visibleOrg(w, r)
	if !ok {
		return
	}
	switch {
	case !c.NodeAdmin():
		writeError(w, wire.CodeForbidden, "only admin keys of the default org delete orgs", "")
		return
	case o.ID == wire.DefaultOrgID:
		writeError(w, wire.CodeConflict, "the default org cannot be deleted", "")
		return
	}
	if err := s.store.DeleteOrg(r.Context(), o.ID); err != nil {
		s.tenancyError(w, r, "org "+o.ID, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) quotas(ctx context.Context, o *store.Org) (*wire.OrgQuotas, error) {
	u, err := s.store.Use(ctx, o.ID)
	if err != nil {
		return nil, err
	}
	return &wire.OrgQuotas{Quotas: o.Quotas, Use: u}, nil
}

func (s *Server) handleGetQuotas(w http.ResponseWriter, r *http.Request) {
	o, ok := s.visibleOrg(w, r)
	if !ok {
		return
	}
	q, err := s.quotas(r.Context(), o)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, q)
}

func (s *Server) handleSetQuotas(w http.ResponseWriter, r *http.Request) {
	o, ok := s.visibleOrg(w, r)
	if !ok {
		return
	}
	if !callerFrom(r.Context()).NodeAdmin() {
		writeError(w, wire.CodeForbidden, "only admin keys of the default org set quotas", "")
		return
	}
	var q wire.Quotas
	if err := decode(r, &q); err != nil {
		s.fail(w, r, err)
		return
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"max_sandboxes", float64(q.MaxSandboxes)}, {"max_cpu", q.MaxCPU}, {"max_memory_mb", float64(q.MaxMemoryMB)}, {"max_disk_mb", float64(q.MaxDiskMB)},
		{"max_volumes", float64(q.MaxVolumes)}, {"max_volume_mb", float64(q.MaxVolumeMB)}, {"max_lifetime_seconds", float64(q.MaxLifetimeSeconds)},
		{"creates_per_minute", float64(q.CreatesPerMinute)}} {
		if f.v < 0 {
			writeError(w, wire.CodeBadRequest, f.name+" must be 0 (unlimited) or positive", f.name)
			return
		}
	}
	if err := s.store.SetQuotas(r.Context(), o.ID, q); err != nil {
		s.tenancyError(w, r, "org "+o.ID, err)
		return
	}
	o.Quotas = q
	out, err := s.quotas(r.Context(), o)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func keyView(k *store.APIKey) *wire.APIKey {
	out := &wire.APIKey{ID: k.ID, Name: k.Name, OrgID: k.Org, Scopes: k.Scopes, Prefix: k.Prefix, CreatedAt: k.CreatedAt}
	if !k.ExpiresAt.IsZero() {
		t := k.ExpiresAt
		out.ExpiresAt = &t
	}
	return out
}

func (s *Server) handleCreateKey(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	var req wire.APIKeyRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Name == "" || len(req.Name) > 128 {
		writeError(w, wire.CodeBadRequest, "name must be 1 to 128 characters", "name")
		return
	}
	org := c.Org
	if req.OrgID != "" {
		if !orgVisible(c, req.OrgID) {
			writeError(w, wire.CodeNotFound, "org "+req.OrgID+" not found", "org_id")
			return
		}
		org = req.OrgID
	}
	if len(req.Scopes) == 0 {
		writeError(w, wire.CodeBadRequest, "scopes is required: one or more of "+strings.Join(wire.Scopes, ", "), "scopes")
		return
	}
	for i, sc := range req.Scopes {
		if !slices.Contains(wire.Scopes, sc) {
			writeError(w, wire.CodeBadRequest, fmt.Sprintf("unknown scope %q; scopes are %s", sc, strings.Join(wire.Scopes, ", ")), fmt.Sprintf("scopes[%d]", i))
			return
		}
		// Node metrics name every org's sandboxes.
		if sc == wire.ScopeMetricsRead && (!c.NodeAdmin() || org != wire.DefaultOrgID) {
			writeError(w, wire.CodeForbidden, "only admin keys of the default org grant metrics:read, and only to keys of the default org", fmt.Sprintf("scopes[%d]", i))
			return
		}
	}
	if req.ExpiresInSeconds < 0 {
		writeError(w, wire.CodeBadRequest, "expires_in_seconds must be 0 (never) or positive", "expires_in_seconds")
		return
	}
	var key string
	switch req.Format {
	case "", wire.KeyFormatWarren:
		key, _ = apikey.New()
	case wire.KeyFormatE2B:
		key = apikey.NewE2B()
	default:
		writeError(w, wire.CodeBadRequest, fmt.Sprintf("format must be %s or %s", wire.KeyFormatWarren, wire.KeyFormatE2B), "format")
		return
	}
	k := store.APIKey{ID: apikey.ID(key), Org: org, Name: req.Name, Hash: apikey.Hash(key), Prefix: apikey.VisiblePrefix(key),
		Scopes: req.Scopes, CreatedAt: time.Now().UTC().Truncate(time.Millisecond)}
	if req.ExpiresInSeconds > 0 {
		k.ExpiresAt = k.CreatedAt.Add(time.Duration(req.ExpiresInSeconds) * time.Second)
	}
	if err := s.store.InsertAPIKey(r.Context(), k); err != nil {
		s.tenancyError(w, r, "org "+org, err)
		return
	}
	writeJSON(w, http.StatusCreated, wire.APIKeyCreated{APIKey: *keyView(&k), Key: key})
}

func (s *Server) handleListKeys(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	org := c.Org
	if q := r.URL.Query().Get("org_id"); q != "" || c.NodeAdmin() {
		if q != "" && !orgVisible(c, q) {
			writeError(w, wire.CodeNotFound, "org "+q+" not found", "org_id")
			return
		}
		org = q // "" lists every org's, for a node admin
	}
	keys, err := s.store.ListAPIKeys(r.Context(), org)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := wire.APIKeyList{Keys: []*wire.APIKey{}}
	for _, k := range keys {
		out.Keys = append(out.Keys, keyView(k))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleDeleteKey(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	org := c.Org
	if c.NodeAdmin() {
		org = ""
	}
	if err := s.store.DeleteAPIKey(r.Context(), org, r.PathValue("id")); err != nil {
		s.tenancyError(w, r, "API key "+r.PathValue("id"), err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) vault(w http.ResponseWriter) bool {
	if s.Secrets == nil {
		writeError(w, wire.CodeNotFound, "this server keeps no secrets", "")
		return false
	}
	return true
}

func (s *Server) handleCreateSecret(w http.ResponseWriter, r *http.Request) {
	if !s.vault(w) {
		return
	}
	var req wire.SecretRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	sc, err := s.Secrets.Create(r.Context(), org(r), req)
	if err != nil {
		s.tenancyError(w, r, "secret "+req.Name, err)
		return
	}
	writeJSON(w, http.StatusCreated, sc)
}

func (s *Server) handleListSecrets(w http.ResponseWriter, r *http.Request) {
	all, err := s.store.ListSecrets(r.Context(), org(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := wire.SecretList{Secrets: []*wire.Secret{}}
	for _, sc := range all {
		out.Secrets = append(out.Secrets, secrets.View(sc))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetSecret(w http.ResponseWriter, r *http.Request) {
	sc, err := s.store.GetSecret(r.Context(), org(r), r.PathValue("name"))
	if err != nil {
		s.tenancyError(w, r, "secret "+r.PathValue("name"), err)
		return
	}
	writeJSON(w, http.StatusOK, secrets.View(sc))
}

func (s *Server) handleDeleteSecret(w http.ResponseWriter, r *http.Request) {
	sc, err := s.store.GetSecret(r.Context(), org(r), r.PathValue("name"))
	if err == nil {
		err = s.store.DeleteSecret(r.Context(), org(r), sc.ID)
	}
	if err != nil {
		s.tenancyError(w, r, "secret "+r.PathValue("name"), err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Volume sizes, in MB.
const (
	minVolumeMB = 16
	maxVolumeMB = 1 << 20
)

func volumeView(v *store.Volume) *wire.Volume {
	out := &wire.Volume{ID: v.ID, Name: v.Name, SizeMB: v.SizeMB, CreatedAt: v.CreatedAt, MountedBy: []string{}}
	for _, m := range v.MountedBy {
		out.MountedBy = append(out.MountedBy, m.SandboxID)
	}
	return out
}

func (s *Server) volumes(w http.ResponseWriter) bool {
	if s.Volumes == nil {
		writeError(w, wire.CodeNotFound, "this server keeps no volumes", "")
		return false
	}
	return true
}

func (s *Server) handleCreateVolume(w http.ResponseWriter, r *http.Request) {
	if !s.volumes(w) {
		return
	}
	var req wire.VolumeRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if !secrets.ValidName(req.Name) {
		writeError(w, wire.CodeBadRequest, fmt.Sprintf("volume name %q must be 1 to 64 letters, digits, '_', '.' or '-'", req.Name), "name")
		return
	}
	if req.SizeMB < minVolumeMB || req.SizeMB > maxVolumeMB {
		writeError(w, wire.CodeBadRequest, fmt.Sprintf("size_mb must be between %d and %d", minVolumeMB, maxVolumeMB), "size_mb")
		return
	}
	v := store.Volume{ID: newID("vol_"), Org: org(r), Name: req.Name, SizeMB: req.SizeMB, CreatedAt: time.Now().UTC(), Node: s.sandbox.Node()}
	// The row first: it holds the name and the quota. If the disk image
	// cannot be made, the row goes again.
	if err := s.store.InsertVolume(r.Context(), v); err != nil {
		s.tenancyError(w, r, "volume "+req.Name, err)
		return
	}
	if err := s.Volumes.Create(r.Context(), v.ID, v.SizeMB); err != nil {
		_ = s.store.DeleteVolume(context.WithoutCancel(r.Context()), v.Org, v.ID)
		s.fail(w, r, fmt.Errorf("make volume %s: %w", req.Name, err))
		return
	}
	v.MountedBy = []store.Mounter{}
	writeJSON(w, http.StatusCreated, volumeView(&v))
}

func (s *Server) handleListVolumes(w http.ResponseWriter, r *http.Request) {
	all, err := s.store.ListVolumes(r.Context(), org(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := wire.VolumeList{Volumes: []*wire.Volume{}}
	for _, v := range all {
		out.Volumes = append(out.Volumes, volumeView(v))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetVolume(w http.ResponseWriter, r *http.Request) {
	v, err := s.store.GetVolume(r.Context(), org(r), r.PathValue("name"))
	if err != nil {
		s.tenancyError(w, r, "volume "+r.PathValue("name"), err)
		return
	}
	writeJSON(w, http.StatusOK, volumeView(v))
}

func (s *Server) handleDeleteVolume(w http.ResponseWriter, r *http.Request) {
	if !s.volumes(w) {
		return
	}
	v, err := s.store.GetVolume(r.Context(), org(r), r.PathValue("name"))
	if err == nil {
		err = s.store.DeleteVolume(r.Context(), org(r), v.ID)
	}
	if err != nil {
		s.tenancyError(w, r, "volume "+r.PathValue("name"), err)
		return
	}
	if err := s.Volumes.Remove(v.ID); err != nil {
		s.log.Error("remove a deleted volume's data", "volume.id", v.ID, "err", err)
	}
	w.WriteHeader(http.StatusNoContent)
}

// maxUsageWindow bounds one usage query.
const maxUsageWindow = 366 * 24 * time.Hour

func (s *Server) handleUsage(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	q := r.URL.Query()
	for k := range q {
		if k != "from" && k != "to" && k != "group_by" && k != "org_id" {
			writeError(w, wire.CodeBadRequest, "unknown query parameter "+fmt.Sprintf("%q", k), k)
			return
		}
	}
	now := time.Now().UTC()
	to, from := now, now.Add(-24*time.Hour)
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"from", &from}, {"to", &to}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				writeError(w, wire.CodeBadRequest, p.name+" must be an RFC 3339 time (2026-01-02T15:04:05Z)", p.name)
				return
			}
			*p.t = t.UTC()
		}
	}
	if !to.After(from) || to.Sub(from) > maxUsageWindow {
		writeError(w, wire.CodeBadRequest, "to must be after from, and at most 366 days later", "to")
		return
	}
	group := q.Get("group_by")
	if group == "" {
		group = "sandbox"
	}
	if group != "sandbox" && group != "day" {
		writeError(w, wire.CodeBadRequest, "group_by must be sandbox or day", "group_by")
		return
	}
	org := c.Org
	if id := q.Get("org_id"); id != "" {
		if !orgVisible(c, id) {
			writeError(w, wire.CodeNotFound, "org "+id+" not found", "org_id")
			return
		}
		org = id
	}
	periods, err := s.store.Periods(r.Context(), org, from, to)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, tally(periods, from, to, now, group))
}

// tally adds up usage periods within [from, to) (an open period runs to
// now), grouped by sandbox or by UTC day.
func tally(periods []store.Period, from, to, now time.Time, group string) *wire.Usage {
	rows := map[string]*wire.UsageRow{}
	out := &wire.Usage{From: from, To: to, Rows: []wire.UsageRow{}}
	add := func(key string, p store.Period, start, end time.Time) {
		if !end.After(start) {
			return
		}
		row := rows[key]
		if row == nil {
			row = &wire.UsageRow{}
			if group == "day" {
				row.Day = key
			} else {
				row.SandboxID = key
			}
			rows[key] = row
		}
		secs := end.Sub(start).Seconds()
		for _, r := range []*wire.UsageRow{row, &out.Total} {
			r.SandboxSeconds += secs
			r.CPUSeconds += secs * p.CPU
			r.MemoryGiBSeconds += secs * float64(p.MemoryMB) / 1024
			r.DiskGiBSeconds += secs * float64(p.DiskMB) / 1024
		}
	}
	for _, p := range periods {
		end := p.End
		if end.IsZero() {
			end = now
		}
		start := maxTime(p.Start, from)
		end = minTime(end, to)
		if group != "day" {
			add(p.SandboxID, p, start, end)
			continue
		}
		for day := start.Truncate(24 * time.Hour); day.Before(end); day = day.Add(24 * time.Hour) {
			add(day.Format("2006-01-02"), p, maxTime(start, day), minTime(end, day.Add(24*time.Hour)))
		}
	}
	keys := make([]string, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out.Rows = append(out.Rows, *rows[k])
	}
	return out
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

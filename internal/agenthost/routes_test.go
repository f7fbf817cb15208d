package agenthost

import (
	"net/http/httptest"
	"testing"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		method, path string
		upgrade      bool
		want         routeKind
	}{
		{"GET", "/session", false, routeRead},
		{"GET", "/event", false, routeRead},
		{"GET", "/pty", false, routeRead},
		{"GET", "/pty/abc/connect", true, routeDirect},
		{"GET", "/pty/abc/connect", false, routeDirect},
		{"GET", "/api/pty/abc/connect", true, routeDirect},
		{"GET", "/anything", true, routeAdmin},
		{"POST", "/pty", false, routeDirect},
		{"PUT", "/pty/abc", false, routeDirect},
		{"POST", "/session/ses_1/shell", false, routeDirect},
		{"POST", "/session/ses_1/command", false, routeDirect},
		{"POST", "/vcs/apply", false, routeDirect},
		{"POST", "/session", false, routeAgent},
		{"POST", "/session/ses_1/message", false, routeAgent},
		{"POST", "/session/ses_1/prompt_async", false, routeAgent},
		{"POST", "/api/session/ses_1/prompt", false, routeAgent},
		{"PATCH", "/config", false, routeAdmin},
		{"PATCH", "/global/config", false, routeAdmin},
		{"PUT", "/auth/openai", false, routeAdmin},
		{"POST", "/mcp", false, routeAdmin},
		{"POST", "/global/upgrade", false, routeAdmin},
		{"POST", "/some/future/route", false, routeAdmin},
		{"POST", "/permission/per_1/reply", false, routePermission},
		{"POST", "/session/ses_1/permissions/per_1", false, routePermission},
	}
	for _, c := range cases {
		r := httptest.NewRequest(c.method, "/w/x/opencode"+c.path, nil)
		if c.upgrade {
			r.Header.Set("Upgrade", "websocket")
		}
		if got := classify(r, c.path); got != c.want {
			t.Errorf("%s %s (upgrade %v): got %d, want %d", c.method, c.path, c.upgrade, got, c.want)
		}
	}
}

func TestMayProxy(t *testing.T) {
	manual := &Host{cfg: Config{Approval: "manual"}}
	auto := &Host{cfg: Config{Approval: "auto"}}
	type verdict struct{ allow, hold bool }
	cases := []struct {
		h    *Host
		role string
		kind routeKind
		want verdict
	}{
		{manual, ScopeViewer, routeRead, verdict{true, false}},
		{manual, ScopeViewer, routeAgent, verdict{false, false}},
		{manual, ScopeViewer, routeDirect, verdict{false, false}},
		{manual, ScopeCollaborator, routeAgent, verdict{true, false}},
		{manual, ScopeCollaborator, routeDirect, verdict{false, true}},
		{auto, ScopeCollaborator, routeDirect, verdict{true, false}},
		{auto, ScopeCollaborator, routeAdmin, verdict{false, false}},
		{auto, ScopeCollaborator, routePermission, verdict{false, false}},
		{manual, ScopeOwner, routeDirect, verdict{true, false}},
		{manual, ScopeOwner, routeAdmin, verdict{true, false}},
		{manual, roleHost, routePermission, verdict{true, false}},
	}
	for _, c := range cases {
		allow, hold, _ := c.h.mayProxy(c.role, c.kind)
		if (verdict{allow, hold}) != c.want {
			t.Errorf("%s mode %s %d: got allow=%v hold=%v", c.h.cfg.Approval, c.role, c.kind, allow, hold)
		}
	}
}

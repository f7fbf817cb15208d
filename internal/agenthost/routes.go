package agenthost

import (
	"net/http"
	"strings"
)

// routeKind is what a request to OpenCode does, for deciding who may
// make it through the proxy.
type routeKind int

const (
	// routeRead changes nothing: a GET or HEAD that is not a WebSocket.
	routeRead routeKind = iota
	// routeAgent drives the agent (sessions, prompts, answers to its
	// questions); its tool calls meet OpenCode's own permission requests.
	routeAgent
	// routeDirect runs commands or changes files with no permission
	// request: shell and slash commands, terminals, git, patches, the
	// attached TUI. In manual mode a collaborator's waits for the host.
	routeDirect
	// routeAdmin changes OpenCode itself or its credentials: config
	// (including its permission rules), providers, MCP servers, upgrades.
	// Owners and the host only.
	routeAdmin
	// routePermission answers a permission request. Owners and the host
	// only, like approvals themselves.
	routePermission
)

// agentRoutes are the changes a collaborator may make: what a chat
// client needs. Anything else that changes something is direct or admin.
var agentRoutes = []struct{ method, pattern string }{
	{"POST", "session"},
	{"DELETE", "session/*"},
	{"PATCH", "session/*"},
	{"POST", "session/*/abort"},
	{"POST", "session/*/fork"},
	{"POST", "session/*/init"},
	{"POST", "session/*/message"},
	{"POST", "session/*/prompt_async"},
	{"POST", "session/*/revert"},
	{"POST", "session/*/unrevert"},
	{"POST", "session/*/share"},
	{"DELETE", "session/*/share"},
	{"POST", "session/*/summarize"},
	{"DELETE", "session/*/message/*"},
	{"DELETE", "session/*/message/*/part/*"},
	{"PATCH", "session/*/message/*/part/*"},
	{"POST", "question/*/reply"},
	{"POST", "question/*/reject"},
	{"POST", "log"},
	// The newer API under /api.
	{"POST", "api/session"},
	{"POST", "api/session/*/prompt"},
	{"POST", "api/session/*/interrupt"},
	{"POST", "api/session/*/compact"},
	{"POST", "api/session/*/agent"},
	{"POST", "api/session/*/model"},
	{"POST", "api/session/*/wait"},
	{"POST", "api/session/*/revert/*"},
	{"POST", "api/session/*/question/*/reply"},
	{"POST", "api/session/*/question/*/reject"},
}

// directRoutes run commands or write files without asking.
var directRoutes = []struct{ method, pattern string }{
	{"POST", "session/*/shell"},
	{"POST", "session/*/command"},
	{"*", "pty"},
	{"*", "pty/*"},
	{"*", "pty/*/*"},
	{"*", "api/pty"},
	{"*", "api/pty/*"},
	{"*", "api/pty/*/*"},
	{"POST", "project/git/init"},
	{"POST", "vcs/apply"},
	{"*", "experimental/worktree"},
	{"*", "experimental/worktree/*"},
	{"*", "experimental/project/*/copy"},
	{"*", "experimental/project/*/copy/*"},
	{"POST", "tui/*"},
	{"POST", "tui/*/*"},
	{"POST", "sync/*"},
}

// classify says what a request to OpenCode's path does.
func classify(r *http.Request, path string) routeKind {
	method := r.Method
	upgrade := r.Header.Get("Upgrade") != ""
	if answersPermission(method, path) {
		return routePermission
	}
	p := strings.Trim(path, "/")
	direct := false
	for _, d := range directRoutes {
		if (d.method == "*" || d.method == method) && matchRoute(d.pattern, p) {
			direct = true
			break
		}
	}
	// Listing terminals and shells reads; connecting to one does not.
	if (method == http.MethodGet || method == http.MethodHead) && !upgrade {
		if !direct || !strings.HasSuffix(p, "/connect") {
			return routeRead
		}
	}
	if direct {
		return routeDirect
	}
	for _, a := range agentRoutes {
		if a.method == method && matchRoute(a.pattern, p) {
			return routeAgent
		}
	}
	return routeAdmin
}

// matchRoute matches a path against a pattern where * is one segment.
func matchRoute(pattern, path string) bool {
	pp, sp := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(pp) != len(sp) {
		return false
	}
	for i := range pp {
		if pp[i] != "*" && pp[i] != sp[i] {
			return false
		}
		if sp[i] == "" {
			return false
		}
	}
	return true
}

// mayProxy decides a request by the caller's role and the approval mode:
// allowed, refused (with why), or held for the host's approval.
func (h *Host) mayProxy(role string, kind routeKind) (allow, hold bool, why string) {
	switch {
	case rank[role] >= rank[ScopeOwner]:
		return true, false, ""
	case kind == routeRead:
		return true, false, ""
	case role == ScopeViewer:
		return false, false, "a viewer token is read-only"
	case kind == routeAgent:
		return true, false, ""
	case kind == routeDirect && h.cfg.Approval == "manual":
		return false, true, ""
	case kind == routeDirect:
		return true, false, ""
	case kind == routePermission:
		return false, false, "only an owner or the host may answer permission requests"
	}
	return false, false, "only an owner or the host may change OpenCode's configuration, credentials or servers"
}

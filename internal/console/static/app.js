// warren's console: plain DOM, no framework. Every string a sandbox or the
// API gives is put on the page as text (textContent, text nodes), never as
// HTML. The API key lives in this tab's session storage and travels only
// in headers (a WebSocket subprotocol for the terminal).

const view = document.getElementById("view");
// "api" on warren's API; "agenthost" on the workspace server of
// warren start, whose page is the agent host's and whose key is the host
// token.
const mode = document.querySelector('meta[name="warren-mode"]')?.content || "api";
const home = mode === "agenthost" ? "#/agent" : "#/sandboxes";
const probe = mode === "agenthost" ? "/approvals" : "/v1/info";
const enc = new TextEncoder();
let key = sessionStorage.getItem("warren.key") || "";
let info = null;
let timers = [];
let cleanups = [];

// h builds an element: h("a", {href: "#/x", onclick: f}, "text", child).
function h(tag, props = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of kids.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function field(labelText, input, opts = {}) {
  if (!input.id) input.id = "f-" + labelText.toLowerCase().replace(/[^a-z0-9]+/g, "-");
  return h("div", { class: opts.wide ? "wide" : null }, h("label", { for: input.id }, labelText), input,
    opts.hint ? h("div", { class: "muted" }, opts.hint) : null);
}

class ApiError extends Error {
  constructor(status, message, field) { super(message); this.status = status; this.field = field; }
}

async function api(method, path, { body, raw, headers = {} } = {}) {
  const auth = mode === "agenthost" ? { "X-OpenWork-Host-Token": key } : { Authorization: "Bearer " + key };
  const init = { method, headers: { ...auth, ...headers } };
  if (body !== undefined) {
    if (body instanceof Blob || body instanceof ArrayBuffer || body instanceof Uint8Array) init.body = body;
    else { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  }
  const r = await fetch(path, init);
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`, f;
    try { const e = await r.json(); if (e.error) { msg = e.error.message; f = e.error.field; } } catch { /* not JSON */ }
    if (r.status === 401 && path !== probe) { signOut("Your key was refused: " + msg); }
    throw new ApiError(r.status, f ? `${msg} (${f})` : msg, f);
  }
  if (raw) return r;
  if (r.status === 204) return null;
  const ct = r.headers.get("content-type") || "";
  return ct.includes("json") ? r.json() : r.text();
}

// lines reads an NDJSON answer, calling each(obj) per line as it arrives.
async function lines(resp, each) {
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (line) each(JSON.parse(line));
    }
  }
  if (buf.trim()) each(JSON.parse(buf));
}

function alertBox() { return h("div", { role: "alert", "aria-live": "assertive" }); }
function say(box, err) { box.textContent = err ? String(err.message || err) : ""; }
function enc1(s) { return encodeURIComponent(s); }
function sbPath(id, rest = "") { return "/v1/sandboxes/" + enc1(id) + rest; }
function ago(t) {
  if (!t) return "";
  const s = Math.max(0, (Date.now() - new Date(t).getTime()) / 1000);
  if (s < 90) return Math.round(s) + "s";
  if (s < 5400) return Math.round(s / 60) + "m";
  if (s < 172800) return Math.round(s / 3600) + "h";
  return Math.round(s / 86400) + "d";
}
function size(n) {
  if (n == null) return "";
  if (n < 1024) return n + " B";
  if (n < 1 << 20) return (n / 1024).toFixed(1) + " KB";
  if (n < 1 << 30) return (n / (1 << 20)).toFixed(1) + " MB";
  return (n / (1 << 30)).toFixed(2) + " GB";
}
function pairs(text) {
  const out = {};
  for (const line of text.split(/\n|,/)) {
    const t = line.trim();
    if (!t) continue;
    const i = t.indexOf("=");
    if (i <= 0) throw new Error(`"${t}" is not KEY=VALUE`);
    out[t.slice(0, i).trim()] = t.slice(i + 1);
  }
  return out;
}
// redraw replaces el's children with build()'s only when what they show
// changed: a refresh must not swap a button out from under the pointer.
function redraw(el, data, build) {
  const sig = JSON.stringify(data);
  if (el.dataset.sig === sig) return false;
  el.dataset.sig = sig;
  el.replaceChildren(...build());
  return true;
}
function stateCell(st) { return h("td", { class: "state state-" + st }, st); }
function every(ms, f) { f(); timers.push(setInterval(f, ms)); }

// --- sign in -------------------------------------------------------------

function signOut(message) {
  key = "";
  sessionStorage.removeItem("warren.key");
  location.hash = "#/signin";
  route(message);
}

function signIn(message) {
  document.getElementById("nav").hidden = true;
  const input = h("input", { id: "key", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const err = alertBox();
  if (message) err.textContent = message;
  const form = h("form", {
    class: "signin", onsubmit: async (e) => {
      e.preventDefault();
      say(err);
      key = input.value.trim();
      try {
        info = await signedIn();
        sessionStorage.setItem("warren.key", key);
        location.hash = home;
        route();
      } catch (e2) {
        key = "";
        say(err, e2.status === 401 ? "Sign-in refused: " + e2.message : e2);
      }
    },
  },
  h("h1", {}, mode === "agenthost" ? "Sign in to the agent host" : "Sign in to warren"),
  h("p", { class: "muted" }, (mode === "agenthost" ? "Paste the host token warren start printed (also in its state file)." : "Paste an API key.") +
    " It stays in this browser tab only, and is sent in request headers, never in a URL."),
  field(mode === "agenthost" ? "Host token" : "API key", input), h("p"), h("button", { class: "primary", type: "submit" }, "Sign in"), err);
  view.replaceChildren(form);
  input.focus();
}

// signedIn checks the key and returns what the header shows.
async function signedIn() {
  if (mode === "agenthost") {
    await api("GET", probe);
    const st = await api("GET", "/status");
    return { org: "host", version: st.version, status: st };
  }
  return api("GET", "/v1/info");
}

// --- sandboxes -----------------------------------------------------------

async function sandboxes() {
  const err = alertBox();
  const state = h("select", { id: "filter-state" }, ["", "running", "paused", "creating", "failed", "deleted", "lost"].map((s) => h("option", { value: s }, s || "any but deleted")));
  const meta = h("input", { id: "filter-metadata", placeholder: "team=search" });
  const body = h("tbody");
  const table = h("div", { class: "table", tabindex: "0" }, h("table", {},
    h("caption", {}, "Sandboxes"),
    h("thead", {}, h("tr", {}, ["ID", "State", "Runtime", "Image", "Node", "Age", "CPU", "Memory", "Boot", "Create ms"].map((c) => h("th", { scope: "col" }, c)))),
    body));
  const createBox = h("div");
  const load = async () => {
    const q = new URLSearchParams();
    if (state.value) q.set("state", state.value);
    try {
      for (const [k, v] of Object.entries(pairs(meta.value))) q.set("metadata." + k, v);
      const list = await api("GET", "/v1/sandboxes?" + q);
      say(err);
      const rows = list.sandboxes || [];
      if (!redraw(body, rows, () => rows.map((sb) => h("tr", { "data-id": sb.id },
        h("td", {}, h("a", { href: "#/sandboxes/" + enc1(sb.id) }, sb.id)), stateCell(sb.state), h("td", {}, sb.runtime),
        h("td", {}, sb.image), h("td", {}, sb.node || ""), h("td", { class: "age" }, ago(sb.created_at)), h("td", {}, sb.resources?.cpu ?? ""),
        h("td", {}, sb.resources?.memory_mb ? sb.resources.memory_mb + " MB" : ""), h("td", {}, sb.boot_path || ""),
        h("td", {}, sb.timings?.total_ms ?? ""))))) {
        // Only the ages moved on.
        for (const sb of rows) { const c = body.querySelector(`tr[data-id="${CSS.escape(sb.id)}"] td.age`); if (c) c.textContent = ago(sb.created_at); }
      }
      if (!rows.length) redraw(body, "none", () => [h("tr", {}, h("td", { colspan: 10, class: "muted" }, "No sandboxes."))]);
    } catch (e) { say(err, e); }
  };
  state.addEventListener("change", load);
  meta.addEventListener("change", load);
  const newButton = h("button", { class: "primary", type: "button", "aria-expanded": "false", onclick: () => {
    const open = newButton.getAttribute("aria-expanded") === "true";
    newButton.setAttribute("aria-expanded", String(!open));
    if (open) createBox.replaceChildren(); else createForm(createBox, load);
  } }, "New sandbox");
  view.replaceChildren(h("h1", {}, "Sandboxes"),
    h("div", { class: "row" }, field("State", state), field("Metadata", meta), newButton), createBox, err, table);
  every(3000, load);
}

async function createForm(box, reload) {
  const images = await api("GET", "/v1/images").catch(() => ({ images: [] }));
  const image = h("select", { id: "c-image" }, (images.images || []).map((i) => h("option", { value: i.name, selected: i.name === "base" }, `${i.name} (${i.state})`)));
  const runtime = h("select", { id: "c-runtime" }, h("option", { value: "" }, `default (${info.default_runtime})`), info.runtimes.map((r) => h("option", { value: r }, r)));
  const cpu = h("input", { id: "c-cpu", type: "number", step: "0.1", min: "0.01", placeholder: "1" });
  const mem = h("input", { id: "c-memory", type: "number", min: "32", placeholder: "1024" });
  const disk = h("input", { id: "c-disk", type: "number", min: "64", placeholder: "10240" });
  const timeout = h("input", { id: "c-timeout", type: "number", min: "0", placeholder: "0 (none)" });
  const idle = h("input", { id: "c-idle", type: "number", min: "0", placeholder: "0 (never)" });
  const env = h("textarea", { id: "c-env", placeholder: "LANG=C.UTF-8" });
  const md = h("textarea", { id: "c-metadata", placeholder: "team=search" });
  const egress = h("select", { id: "c-egress" }, ["default", "none", "allowlist"].map((v) => h("option", { value: v }, v)));
  const allow = h("input", { id: "c-allow", placeholder: "example.com, 203.0.113.0/24" });
  const startup = h("textarea", { id: "c-startup", placeholder: "one command per line; & at the end runs it in the background" });
  const ports = h("input", { id: "c-ports", placeholder: "8000, 3000" });
  const err = alertBox();
  const result = h("div", { "aria-live": "polite" });
  const submit = h("button", { class: "primary", type: "submit" }, "Create");
  const form = h("form", {
    class: "form", onsubmit: async (e) => {
      e.preventDefault();
      say(err);
      result.replaceChildren();
      try {
        const req = { image: image.value };
        if (runtime.value) req.runtime = runtime.value;
        const res = {};
        if (cpu.value) res.cpu = Number(cpu.value);
        if (mem.value) res.memory_mb = Number(mem.value);
        if (disk.value) res.disk_mb = Number(disk.value);
        if (Object.keys(res).length) req.resources = res;
        if (timeout.value) req.timeout_seconds = Number(timeout.value);
        if (idle.value) req.idle_timeout_seconds = Number(idle.value);
        if (env.value.trim()) req.env = pairs(env.value);
        if (md.value.trim()) req.metadata = pairs(md.value);
        if (egress.value !== "default" || allow.value.trim()) {
          req.network = { egress: egress.value, allow: allow.value.split(",").map((s) => s.trim()).filter(Boolean) };
        }
        const cmds = startup.value.split("\n").map((s) => s.trim()).filter(Boolean);
        const ps = ports.value.split(",").map((s) => s.trim()).filter(Boolean).map(Number);
        if (cmds.length || ps.length) {
          req.startup = { commands: cmds.map((c, i) => c.endsWith("&") ? { name: "cmd" + (i + 1), run: c.slice(0, -1).trim(), background: true } : { name: "cmd" + (i + 1), run: c }) };
          if (ps.length) req.startup.ports = ps;
        }
        submit.disabled = true;
        submit.textContent = "Creating…";
        const sb = await api("POST", "/v1/sandboxes", { body: req });
        const t = sb.timings || {};
        result.replaceChildren(h("div", { class: "note", id: "created", "data-id": sb.id },
          h("p", {}, "Created ", h("a", { href: "#/sandboxes/" + enc1(sb.id) }, sb.id), ` (${sb.state}, ${sb.boot_path || ""}) in ${t.total_ms ?? "?"} ms`),
          h("dl", { class: "facts" }, Object.entries(t).sort().map(([k, v]) => [h("dt", {}, k), h("dd", {}, v + " ms")]))));
        reload();
      } catch (e2) { say(err, e2); } finally { submit.disabled = false; submit.textContent = "Create"; }
    },
  },
  field("Image", image), field("Runtime", runtime), field("CPUs", cpu), field("Memory (MB)", mem), field("Disk (MB)", disk),
  field("Timeout (s)", timeout), field("Idle timeout (s)", idle), field("Egress", egress), field("Allow", allow),
  field("Ports to expose", ports), field("Environment", env, { wide: true }), field("Metadata", md, { wide: true }),
  field("Startup commands", startup, { wide: true }), h("div", { class: "wide" }, submit), h("div", { class: "wide" }, err, result));
  box.replaceChildren(form);
  image.focus();
}

// --- one sandbox ------------------------------------------------------------

async function sandbox(id) {
  const err = alertBox();
  const facts = h("dl", { class: "facts", id: "facts" });
  const actions = h("div", { class: "row", id: "actions" });
  const panel = h("div", { id: "panel" });
  let sb = null;
  let tab = null;
  const refresh = async () => {
    try {
      const was = sb?.state;
      sb = await api("GET", sbPath(id));
      say(err);
      // A pause ends the terminal's shell; a resume brings a new one.
      if (tab === "Terminal" && was && was !== sb.state && (was === "running" || sb.state === "running")) show("Terminal");
      const r = sb.resources || {};
      const rows = [["State", h("span", { class: "state state-" + sb.state, id: "state" }, sb.state)], ["Runtime", sb.runtime], ["Image", sb.image],
        ["Node", sb.node], ["Address", sb.address], ["Resources", `${r.cpu} CPU, ${r.memory_mb} MB, ${r.pids} processes, ${r.disk_mb || "—"} MB disk`],
        ["Memory used", sb.memory ? `${sb.memory.used_mb.toFixed(1)} MB of ${sb.memory.limit_mb}` : null],
        ["Boot", sb.boot_path ? `${sb.boot_path}, ${Object.entries(sb.timings || {}).map(([k, v]) => `${k} ${v}`).join(", ")}` : null],
        ["Created", sb.created_at && new Date(sb.created_at).toLocaleString()], ["Expires", sb.expires_at && new Date(sb.expires_at).toLocaleString()],
        ["Network", sb.network ? `${sb.network.egress}${sb.network.allow?.length ? " allow " + sb.network.allow.join(", ") : ""}` : "default"],
        ["Metadata", Object.entries(sb.metadata || {}).map(([k, v]) => `${k}=${v}`).join(", ")], ["Reason", sb.reason]];
      facts.replaceChildren(...rows.filter(([, v]) => v != null && v !== "").map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]).flat());
      drawActions();
    } catch (e) { say(err, e); }
  };
  const act = (label, method, path, cls, after, body) => h("button", { type: "button", class: cls, onclick: async (e) => {
    const b = e.currentTarget;
    b.disabled = true;
    try { const out = await api(method, sbPath(id, path), { body }); if (after) after(out); else await refresh(); } catch (e2) { say(err, e2); } finally { b.disabled = false; }
  } }, label);
  let confirming = false;
  function drawActions() {
    const st = sb.state;
    const del = h("button", { type: "button", class: "danger", onclick: async () => {
      if (!confirming) { confirming = true; drawActions(); return; }
      try { await api("DELETE", sbPath(id)); location.hash = "#/sandboxes"; } catch (e) { say(err, e); }
    } }, confirming ? "Confirm delete" : "Delete");
    redraw(actions, [st, confirming], () => [
      st === "running" ? act("Pause", "POST", "/pause") : null,
      st === "paused" ? act("Resume", "POST", "/resume") : null,
      st === "running" ? act("Fork", "POST", "/fork", null, (out) => { location.hash = "#/sandboxes/" + enc1(out.sandboxes[0].id); }, { count: 1 }) : null,
      st !== "deleted" ? del : null].filter(Boolean));
  }
  const tabs = ["Terminal", "Files", "Commands", "Ports", "Network"];
  const tabBar = h("div", { class: "tabs", role: "tablist" });
  const show = (name) => {
    tab = name;
    for (const f of cleanups.splice(0)) f();
    for (const b of tabBar.children) b.setAttribute("aria-selected", String(b.textContent === name));
    ({ Terminal: terminal, Files: filesTab, Commands: commands, Ports: ports, Network: network })[name](id, panel, () => sb, refresh);
  };
  tabBar.append(...tabs.map((t) => h("button", { type: "button", role: "tab", "aria-selected": "false", onclick: () => show(t) }, t)));
  view.replaceChildren(h("p", {}, h("a", { href: "#/sandboxes" }, "← Sandboxes")), h("h1", {}, id), err, actions, facts, tabBar, panel);
  await refresh();
  every(4000, refresh);
  if (sb) show(sb.state === "running" ? "Terminal" : "Files");
}

async function terminal(id, panel, get) {
  const note = h("div", { role: "status" });
  const box = h("div", { id: "terminal" });
  panel.replaceChildren(note);
  if (get()?.state !== "running") {
    note.textContent = get()?.state === "paused" ? "The sandbox is paused; the terminal comes back when it resumes." : "The terminal needs a running sandbox.";
    return;
  }
  panel.append(box);
  let Terminal, FitAddon;
  try {
    ({ Terminal } = await import("/console/vendor/xterm.mjs"));
    ({ FitAddon } = await import("/console/vendor/addon-fit.mjs"));
    if (!document.getElementById("xterm-css")) document.head.append(h("link", { id: "xterm-css", rel: "stylesheet", href: "/console/vendor/xterm.css" }));
  } catch {
    note.textContent = "This warren was built without the terminal (xterm.js). Build it with make build (which runs make console), or run make console and go build again.";
    return;
  }
  const term = new Terminal({ cursorBlink: true, scrollback: 5000, fontSize: 14, theme: { background: "#0d1117", foreground: "#e6edf3" } });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}${sbPath(id, "/pty")}?cols=${term.cols}&rows=${term.rows}`, ["warren.v1", "warren.key." + key]);
  ws.binaryType = "arraybuffer";
  ws.onmessage = (m) => {
    if (typeof m.data === "string") {
      const f = JSON.parse(m.data);
      if (f.type === "exit") term.write(`\r\n[the shell exited with ${f.exit_code}]\r\n`);
      if (f.type === "error") term.write(`\r\n[${f.error?.message ?? f.message ?? "error"}]\r\n`);
      return;
    }
    term.write(new Uint8Array(m.data));
  };
  ws.onclose = () => { note.textContent = "Disconnected."; };
  ws.onopen = () => { note.textContent = "Connected: " + term.cols + "×" + term.rows; term.focus(); };
  term.onData((d) => { if (ws.readyState === 1) ws.send(enc.encode(d)); });
  term.onResize(({ cols, rows }) => {
    note.textContent = "Connected: " + cols + "×" + rows;
    if (ws.readyState === 1) ws.send(JSON.stringify({ type: "resize", cols, rows }));
  });
  const ro = new ResizeObserver(() => fit.fit());
  ro.observe(box);
  window.__term = term;
  cleanups.push(() => { ro.disconnect(); ws.close(); term.dispose(); });
}

async function filesTab(id, panel) {
  let cwd = "/";
  const err = alertBox();
  const pathIn = h("input", { id: "path", value: cwd, size: 40 });
  const body = h("tbody", { id: "files" });
  const preview = h("div", { id: "preview" });
  const upload = h("input", { id: "upload", type: "file", multiple: true });
  const folder = h("input", { id: "folder", placeholder: "new-folder" });
  const drop = h("div", { class: "drop", id: "drop" }, "Drop files here to upload them into the folder shown.");
  const join = (name) => (cwd.endsWith("/") ? cwd : cwd + "/") + name;
  const list = async (dir) => {
    try {
      const out = await api("GET", sbPath(id, "/files/list?path=" + enc1(dir)));
      cwd = out.path || dir;
      pathIn.value = cwd;
      say(err);
      const entries = (out.entries || []).sort((a, b) => (b.type === "dir") - (a.type === "dir") || a.name.localeCompare(b.name));
      body.replaceChildren(...entries.map((f) => h("tr", { "data-name": f.name },
        h("td", { class: "wrap" }, f.type === "dir" ? h("button", { type: "button", onclick: () => list(f.path) }, f.name + "/") :
          h("button", { type: "button", onclick: () => show(f) }, f.name)),
        h("td", {}, f.type), h("td", {}, f.type === "file" ? size(f.size) : ""), h("td", {}, f.mode), h("td", {}, f.mtime && new Date(f.mtime).toLocaleString()),
        h("td", {}, f.type === "file" ? h("button", { type: "button", "aria-label": "Download " + f.name, onclick: () => download(f) }, "Download") : null, " ",
          h("button", { type: "button", class: "danger", "aria-label": "Delete " + f.name, onclick: () => remove(f) }, "Delete")))));
      if (!entries.length) body.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "Empty.")));
      body.dataset.path = cwd;
    } catch (e) { say(err, e); }
  };
  const show = async (f) => {
    try {
      const r = await api("GET", sbPath(id, "/files?path=" + enc1(f.path)), { raw: true });
      const buf = new Uint8Array(await r.arrayBuffer());
      const text = new TextDecoder("utf-8", { fatal: false }).decode(buf.slice(0, 256 << 10));
      preview.replaceChildren(h("h2", {}, f.name), h("pre", {}, text), buf.length > 256 << 10 ? h("p", { class: "muted" }, "The first 256 KB.") : null);
    } catch (e) { say(err, e); }
  };
  const download = async (f) => {
    try {
      const r = await api("GET", sbPath(id, "/files?path=" + enc1(f.path)), { raw: true });
      const url = URL.createObjectURL(await r.blob());
      const a = h("a", { href: url, download: f.name });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) { say(err, e); }
  };
  const remove = async (f) => {
    try { await api("DELETE", sbPath(id, "/files?path=" + enc1(f.path) + "&recursive=true")); await list(cwd); } catch (e) { say(err, e); }
  };
  const send = async (fileList) => {
    try {
      for (const f of fileList) await api("PUT", sbPath(id, "/files?path=" + enc1(join(f.name))), { body: new Uint8Array(await f.arrayBuffer()) });
      await list(cwd);
    } catch (e) { say(err, e); }
  };
  upload.addEventListener("change", () => send(upload.files));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); send(e.dataTransfer.files); });
  panel.replaceChildren(
    h("form", { class: "row", onsubmit: (e) => { e.preventDefault(); list(pathIn.value); } }, field("Folder", pathIn), h("button", { type: "submit" }, "Open"),
      h("button", { type: "button", onclick: () => list(cwd.replace(/\/[^/]*\/?$/, "") || "/") }, "Up")),
    h("div", { class: "row" }, field("Upload files", upload),
      h("form", { class: "row", onsubmit: async (e) => {
        e.preventDefault();
        if (!folder.value.trim()) return;
        try { await api("POST", sbPath(id, "/files/mkdir?path=" + enc1(join(folder.value.trim())))); folder.value = ""; await list(cwd); } catch (e2) { say(err, e2); }
      } }, field("New folder", folder), h("button", { type: "submit" }, "Create folder"))),
    drop, err,
    h("div", { class: "table", tabindex: "0" }, h("table", {}, h("caption", {}, "Files"),
      h("thead", {}, h("tr", {}, ["Name", "Type", "Size", "Mode", "Modified", ""].map((c) => h("th", { scope: "col" }, c)))), body)),
    preview);
  await list(cwd);
}

async function commands(id, panel) {
  const err = alertBox();
  const cmd = h("input", { id: "command", size: 50, placeholder: "ls -la /" });
  const bg = h("input", { id: "background", type: "checkbox" });
  const name = h("input", { id: "command-name", placeholder: "web", size: 12 });
  const out = h("pre", { id: "output", "aria-live": "polite" });
  const body = h("tbody");
  const logs = h("div");
  const listCmds = async () => {
    try {
      const l = await api("GET", sbPath(id, "/commands"));
      redraw(body, l.commands || [], () => (l.commands || []).map((c) => h("tr", {}, h("td", {}, c.name), h("td", { class: "wrap" }, c.cmd), h("td", {}, c.state),
        h("td", {}, c.exit_code ?? ""), h("td", {}, h("button", { type: "button", onclick: async () => {
          try { logs.replaceChildren(h("h2", {}, "Logs of " + c.name), h("pre", {}, await api("GET", sbPath(id, "/commands/" + enc1(c.name) + "/logs")))); } catch (e) { say(err, e); }
        } }, "Logs")))));
    } catch (e) { say(err, e); }
  };
  const run = async (e) => {
    e.preventDefault();
    say(err);
    try {
      if (bg.checked) {
        await api("POST", sbPath(id, "/commands"), { body: { name: name.value.trim() || "cmd" + Date.now(), cmd: cmd.value } });
        await listCmds();
        return;
      }
      out.textContent = "";
      const r = await api("POST", sbPath(id, "/exec/stream"), { body: { cmd: cmd.value }, raw: true });
      await lines(r, (f) => {
        if (f.type === "stdout" || f.type === "stderr") out.append(f.data);
        if (f.type === "exit") out.append(`\n[exit ${f.exit_code}]\n`);
        if (f.type === "error") out.append(`\n[${f.error?.message ?? f.message ?? "error"}]\n`);
      });
    } catch (e2) { say(err, e2); }
  };
  panel.replaceChildren(
    h("form", { class: "row", onsubmit: run }, field("Command", cmd), h("div", {}, h("label", { for: "background" }, "In the background"), bg),
      field("Name (background)", name), h("button", { class: "primary", type: "submit" }, "Run")),
    err, out,
    h("div", { class: "table", tabindex: "0" }, h("table", {}, h("caption", {}, "Background commands"),
      h("thead", {}, h("tr", {}, ["Name", "Command", "State", "Exit", ""].map((c) => h("th", { scope: "col" }, c)))), body)), logs);
  await listCmds();
  timers.push(setInterval(listCmds, 4000));
}

async function ports(id, panel, get, refresh) {
  const err = alertBox();
  const port = h("input", { id: "port", type: "number", min: "1", max: "65535", placeholder: "8000" });
  const body = h("tbody", { id: "ports" });
  const draw = () => {
    body.replaceChildren(...(get()?.ports || []).map((p) => {
      const link = h("span");
      return h("tr", { "data-port": p.port }, h("td", {}, p.port), h("td", { class: "wrap" }, p.url), h("td", {},
        h("button", { type: "button", onclick: async () => {
          try {
            const t = await api("POST", sbPath(id, "/ports/" + p.port + "/token"), { body: { ttl_seconds: 3600 } });
            link.replaceChildren(h("a", { href: t.url, target: "_blank", rel: "noopener noreferrer", class: "preview-link" }, "Open preview (an hour)"));
          } catch (e) { say(err, e); }
        } }, "Make a link"), " ", link, " ",
        h("button", { type: "button", class: "danger", onclick: async () => {
          try { await api("DELETE", sbPath(id, "/ports/" + p.port)); await refresh(); draw(); } catch (e) { say(err, e); }
        } }, "Unexpose")));
    }));
  };
  panel.replaceChildren(
    h("form", { class: "row", onsubmit: async (e) => {
      e.preventDefault();
      try { await api("POST", sbPath(id, "/ports/" + Number(port.value))); port.value = ""; await refresh(); draw(); } catch (e2) { say(err, e2); }
    } }, field("Port", port), h("button", { class: "primary", type: "submit" }, "Expose")),
    err, h("div", { class: "table", tabindex: "0" }, h("table", {}, h("caption", {}, "Exposed ports"),
      h("thead", {}, h("tr", {}, ["Port", "URL (with an API key)", ""].map((c) => h("th", { scope: "col" }, c)))), body)));
  draw();
}

async function network(id, panel, get, refresh) {
  const n = get()?.network || { egress: "default" };
  const err = alertBox();
  const egress = h("select", { id: "n-egress" }, ["default", "none", "allowlist"].map((v) => h("option", { value: v, selected: v === n.egress }, v)));
  const allow = h("input", { id: "n-allow", size: 50, value: (n.allow || []).join(", ") });
  const deny = h("input", { id: "n-deny", size: 50, value: (n.deny || []).join(", ") });
  const split = (s) => s.split(",").map((x) => x.trim()).filter(Boolean);
  panel.replaceChildren(h("form", { class: "form", onsubmit: async (e) => {
    e.preventDefault();
    try { await api("PUT", sbPath(id, "/network"), { body: { egress: egress.value, allow: split(allow.value), deny: split(deny.value) } }); say(err); await refresh(); } catch (e2) { say(err, e2); }
  } }, field("Egress", egress), field("Allow", allow, { hint: "CIDRs, addresses, domains, *.wildcards" }), field("Deny", deny),
  h("div", { class: "wide" }, h("button", { class: "primary", type: "submit" }, "Save policy")), h("div", { class: "wide" }, err)));
}

// --- images, usage, nodes ------------------------------------------------------

async function images() {
  const err = alertBox();
  const body = h("tbody");
  const name = h("input", { id: "i-name", placeholder: "python" });
  const ref = h("input", { id: "i-ref", placeholder: "registry.example.com/python:3.12", size: 40 });
  const progress = h("pre", { id: "image-progress", "aria-live": "polite", hidden: true });
  const stream = async (method, path, payload) => {
    progress.hidden = false;
    progress.textContent = "";
    const r = await api(method, path, { body: payload, raw: true, headers: { Accept: "application/x-ndjson" } });
    await lines(r, (ev) => {
      if (ev.error) progress.append("error: " + ev.error + "\n");
      else if (ev.done) progress.append(`done in ${ev.elapsed_ms} ms\n`);
      else progress.append([ev.step, ev.message].filter(Boolean).join(": ") + "\n");
    });
  };
  const load = async () => {
    try {
      const l = await api("GET", "/v1/images");
      body.replaceChildren(...(l.images || []).map((i) => h("tr", {}, h("td", {}, i.name), stateCell(i.state), h("td", {}, i.kind || ""),
        h("td", { class: "wrap" }, i.ref || i.source || ""), h("td", {}, size(i.size_bytes)), h("td", {}, i.built_at ? ago(i.built_at) + " ago" : ""),
        h("td", {}, i.state === "missing" ? h("button", { type: "button", onclick: async () => {
          try { await stream("POST", "/v1/images/" + enc1(i.name) + "/build"); await load(); } catch (e) { say(err, e); }
        } }, "Build") : null, " ", i.kind !== "builtin" ? h("button", { type: "button", class: "danger", onclick: async () => {
          try { await api("DELETE", "/v1/images/" + enc1(i.name)); await load(); } catch (e) { say(err, e); }
        } }, "Delete") : null))));
    } catch (e) { say(err, e); }
  };
  view.replaceChildren(h("h1", {}, "Images"),
    h("form", { class: "row", onsubmit: async (e) => {
      e.preventDefault();
      say(err);
      try { await stream("POST", "/v1/images", { name: name.value.trim(), ref: ref.value.trim() }); await load(); } catch (e2) { say(err, e2); }
    } }, field("Name", name), field("Registry reference", ref), h("button", { class: "primary", type: "submit" }, "Pull")),
    err, progress,
    h("div", { class: "table", tabindex: "0" }, h("table", {}, h("caption", {}, "Images on this node"),
      h("thead", {}, h("tr", {}, ["Name", "State", "Kind", "From", "Size", "Built", ""].map((c) => h("th", { scope: "col" }, c)))), body)));
  await load();
}

async function usage() {
  const err = alertBox();
  const chart = h("div");
  const bars = h("div", { class: "bars" });
  view.replaceChildren(h("h1", {}, "Usage"), err, h("h2", {}, "vCPU-seconds a day, the last 30 days"), chart, h("h2", {}, "Quotas of " + info.org), bars);
  try {
    const from = new Date(Date.now() - 30 * 86400e3).toISOString();
    const u = await api("GET", "/v1/usage?group_by=day&from=" + enc1(from));
    // One slot a day for the last 30 days, oldest first.
    const byDay = new Map((u.rows || []).map((r) => [r.day, r]));
    const days = [...Array(30).keys()].map((i) => new Date(Date.now() - (29 - i) * 86400e3).toISOString().slice(0, 10));
    const rows = days.map((d) => byDay.get(d) || { day: d, cpu_seconds: 0 });
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "chart");
    svg.setAttribute("viewBox", "0 0 600 200");
    svg.setAttribute("role", "img");
    const top = Math.max(1, ...rows.map((r) => r.cpu_seconds));
    svg.setAttribute("aria-label", "vCPU-seconds per day: " + rows.filter((r) => r.cpu_seconds).map((r) => `${r.day} ${Math.round(r.cpu_seconds)}`).join(", ") || "none");
    const w = 600 / rows.length;
    rows.forEach((r, i) => {
      const bh = (r.cpu_seconds / top) * 170;
      const rect = document.createElementNS(ns, "rect");
      for (const [k, v] of Object.entries({ x: i * w + 1, y: 180 - bh, width: w - 2, height: bh })) rect.setAttribute(k, v);
      const title = document.createElementNS(ns, "title");
      title.textContent = `${r.day}: ${Math.round(r.cpu_seconds)} vCPU-s`;
      rect.append(title);
      svg.append(rect);
      if (i % 5 === 4) {
        const label = document.createElementNS(ns, "text");
        label.setAttribute("x", i * w);
        label.setAttribute("y", 195);
        label.textContent = r.day.slice(5);
        svg.append(label);
      }
    });
    chart.replaceChildren(svg, h("p", { class: "muted" }, `In all: ${Math.round(u.total.sandbox_seconds)} sandbox-s, ${Math.round(u.total.cpu_seconds)} vCPU-s, ${u.total.memory_gib_seconds.toFixed(1)} GiB-s of memory.`));
  } catch (e) { say(err, e); }
  try {
    const q = await api("GET", "/v1/orgs/" + enc1(info.org) + "/quotas");
    const items = [["Sandboxes", q.use.sandboxes, q.quotas.max_sandboxes], ["CPUs", q.use.cpu, q.quotas.max_cpu], ["Memory (MB)", q.use.memory_mb, q.quotas.max_memory_mb],
      ["Disk (MB)", q.use.disk_mb, q.quotas.max_disk_mb], ["Volumes", q.use.volumes, q.quotas.max_volumes], ["Creates in the last minute", q.use.creates_last_minute, q.quotas.creates_per_minute]];
    bars.replaceChildren(...items.map(([label, use, max], i) => max ?
      h("div", {}, h("label", { for: "q" + i }, `${label}: ${use} of ${max}`), h("meter", { id: "q" + i, min: 0, max, value: use, low: max * 0.7, high: max * 0.9 })) :
      h("div", {}, h("strong", {}, label + ": "), `${use} (no limit)`)));
  } catch (e) { say(err, e); }
}

async function nodes() {
  const err = alertBox();
  const body = h("tbody");
  view.replaceChildren(h("h1", {}, "Nodes"), err, h("div", { class: "table", tabindex: "0" }, h("table", {}, h("caption", {}, "Nodes sharing this warren's store"),
    h("thead", {}, h("tr", {}, ["ID", "State", "Sandboxes", "CPU asked / offered", "Memory asked / offered", "Heartbeat", "URL", ""].map((c) => h("th", { scope: "col" }, c)))), body)));
  const load = async () => {
    try {
      const l = await api("GET", "/v1/nodes");
      if (!l.nodes.length) { body.replaceChildren(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "This warren is one node with a store of its own."))); return; }
      body.replaceChildren(...l.nodes.map((n) => h("tr", {}, h("td", {}, n.id), stateCell(n.state), h("td", {}, n.allocated.sandboxes),
        h("td", {}, `${n.allocated.cpu} / ${n.capacity.cpu || "∞"}`), h("td", {}, `${n.allocated.memory_mb} / ${n.capacity.memory_mb || "∞"} MB`),
        h("td", {}, ago(n.heartbeat_at) + " ago"), h("td", { class: "wrap" }, n.url),
        h("td", {}, h("button", { type: "button", onclick: async () => {
          try { await api(n.state === "draining" ? "DELETE" : "POST", "/v1/nodes/" + enc1(n.id) + "/drain"); await load(); } catch (e) { say(err, e); }
        } }, n.state === "draining" ? "Undrain" : "Drain")))));
    } catch (e) { say(err, e.status === 403 ? "Nodes are shown to admin keys." : e); }
  };
  every(5000, load);
}

// --- the agent host (warren start's workspace server) ------------------------------

async function agentHost() {
  const err = alertBox();
  const status = h("dl", { class: "facts", id: "host-status" });
  const wsBody = h("tbody", { id: "workspaces" });
  const apBody = h("tbody", { id: "approvals" });
  const tkBody = h("tbody", { id: "tokens" });
  const minted = h("div", { "aria-live": "polite" });
  const scope = h("select", { id: "t-scope" }, ["viewer", "collaborator", "owner"].map((v) => h("option", { value: v }, v)));
  const label = h("input", { id: "t-label", placeholder: "laptop" });
  const brState = h("p", { id: "bridge-state" });
  const brBody = h("tbody", { id: "chats" });
  const brCode = h("div", { "aria-live": "polite" });
  const brRole = h("select", { id: "pair-role" }, ["host", "collaborator"].map((v) => h("option", { value: v }, v)));
  const table = (caption, heads, body) => h("div", { class: "table", tabindex: "0" }, h("table", {}, h("caption", {}, caption),
    h("thead", {}, h("tr", {}, heads.map((c) => h("th", { scope: "col" }, c)))), body));
  const load = async () => {
    try {
      const [st, ws, ap, tk, br] = await Promise.all([api("GET", "/status"), api("GET", "/workspaces"), api("GET", "/approvals"), api("GET", "/tokens"), api("GET", "/bridge")]);
      say(err);
      const b = br.bridge;
      brState.textContent = b.enabled ? `${b.platforms.join(" and ")}: ${b.state}${b.pid ? ", pid " + b.pid : ""}, ${b.restarts} restarts${b.lastError ? " (last exit: " + b.lastError + ")" : ""}` :
        "No chat bridge: start with --telegram-token, or --slack-bot-token and --slack-app-token.";
      const chats = (br.chats || []).filter((c) => c.role);
      redraw(brBody, chats, () => chats.map((c) => h("tr", { "data-key": c.key }, h("td", {}, c.key), h("td", {}, c.title || ""), h("td", {}, c.role),
        h("td", {}, c.pairedBy || ""), h("td", {}, ago(c.pairedAt) + " ago"), h("td", {}, h("button", { type: "button", class: "danger", "aria-label": "Unpair " + c.key, onclick: async () => {
          try { await api("DELETE", "/bridge/chats/" + enc1(c.key)); await load(); } catch (e) { say(err, e); }
        } }, "Unpair")))));
      if (!chats.length) redraw(brBody, "none", () => [h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No chat is paired."))]);
      status.replaceChildren(...[["Version", st.version], ["Run", st.runId], ["Approvals", `${st.approval.mode}, denied after ${Math.round(st.approval.timeoutMs / 1000)} s`],
        ["Up", ago(Date.now() - st.uptimeMs)]].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]).flat());
      const health = new Map((st.services || []).map((x) => [x.workspaceId, x]));
      wsBody.replaceChildren(...(ws.items || []).map((w) => h("tr", {}, h("td", {}, w.name), h("td", { class: "wrap" }, w.path),
        h("td", {}, health.get(w.id)?.healthy ? "healthy" : "not answering"), h("td", {}, health.get(w.id)?.sandbox || ""))));
      redraw(apBody, ap.items || [], () => (ap.items || []).map((a) => h("tr", { "data-id": a.id }, h("td", {}, a.permission), h("td", { class: "wrap" }, (a.patterns || []).join(" ")),
        h("td", {}, ago(a.createdAt) + " ago"), h("td", {},
          h("button", { type: "button", class: "primary", onclick: () => reply(a.id, "allow") }, "Allow"), " ",
          h("button", { type: "button", class: "danger", onclick: () => reply(a.id, "deny") }, "Deny")))));
      if (!ap.items?.length) redraw(apBody, "none", () => [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "Nothing waits for you."))]);
      redraw(tkBody, tk.items || [], () => (tk.items || []).map((t) => h("tr", { "data-id": t.id }, h("td", {}, t.label || ""), h("td", {}, t.scope), h("td", {}, t.id),
        h("td", {}, ago(t.createdAt) + " ago"), h("td", {}, h("button", { type: "button", class: "danger", "aria-label": "Revoke " + t.id, onclick: async () => {
          try { await api("DELETE", "/tokens/" + enc1(t.id)); await load(); } catch (e) { say(err, e); }
        } }, "Revoke")))));
      if (!tk.items?.length) redraw(tkBody, "none", () => [h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No tokens minted."))]);
    } catch (e) { say(err, e); }
  };
  const reply = async (id, answer) => {
    try { await api("POST", "/approvals/" + enc1(id), { body: { reply: answer } }); await load(); } catch (e) { say(err, e); }
  };
  view.replaceChildren(h("h1", {}, "Agent host"), err, status,
    h("h2", {}, "Waiting for approval"), table("Approvals", ["Permission", "What", "Asked", ""], apBody),
    h("h2", {}, "Workspaces"), table("Workspaces", ["Name", "Path", "OpenCode", "Sandbox"], wsBody),
    h("h2", {}, "Client tokens"),
    h("form", { class: "row", onsubmit: async (e) => {
      e.preventDefault();
      try {
        const t = await api("POST", "/tokens", { body: { scope: scope.value, label: label.value.trim() } });
        minted.replaceChildren(h("div", { class: "note" }, "A new ", t.scope, " token (shown once): ", h("code", { id: "minted" }, t.token)));
        label.value = "";
        await load();
      } catch (e2) { say(err, e2); }
    } }, field("Scope", scope), field("Label", label), h("button", { class: "primary", type: "submit" }, "Mint a token")),
    minted, table("Tokens", ["Label", "Scope", "ID", "Minted", ""], tkBody),
    h("h2", {}, "Chat bridge"), brState,
    h("form", { class: "row", onsubmit: async (e) => {
      e.preventDefault();
      try {
        const c = await api("POST", "/bridge/codes", { body: { role: brRole.value } });
        brCode.replaceChildren(h("div", { class: "note" }, `Send this in the chat to pair it as a ${c.role} chat (until ${new Date(c.expiresAt).toLocaleTimeString()}): `,
          h("code", { id: "pair-code" }, "/pair " + c.code)));
      } catch (e2) { say(err, e2); }
    } }, field("Role", brRole), h("button", { class: "primary", type: "submit" }, "Make a pairing code")),
    brCode, table("Paired chats", ["Chat", "Name", "Role", "Paired by", "Paired", ""], brBody));
  every(2000, load);
}

// --- routing -------------------------------------------------------------------

async function route(message) {
  for (const t of timers.splice(0)) clearInterval(t);
  for (const f of cleanups.splice(0)) f();
  const hash = location.hash || home;
  for (const a of document.querySelectorAll("nav a")) a.hidden = a.dataset.mode !== mode;
  if (!key || hash === "#/signin") return signIn(message);
  if (!info) {
    try { info = await signedIn(); } catch { return signIn("Sign in again."); }
  }
  document.getElementById("nav").hidden = false;
  document.getElementById("who").textContent = mode === "agenthost" ? `agent host · warren ${info.version}` : `org ${info.org} · warren ${info.version}`;
  for (const a of document.querySelectorAll("nav a")) a.toggleAttribute("aria-current", hash.startsWith(a.getAttribute("href")));
  for (const a of document.querySelectorAll("nav a[aria-current]")) a.setAttribute("aria-current", "page");
  const parts = hash.slice(2).split("/");
  try {
    if (mode === "agenthost") await agentHost();
    else if (parts[0] === "sandboxes" && parts[1]) await sandbox(decodeURIComponent(parts[1]));
    else if (parts[0] === "images") await images();
    else if (parts[0] === "usage") await usage();
    else if (parts[0] === "nodes") await nodes();
    else await sandboxes();
  } catch (e) { view.replaceChildren(h("div", { role: "alert" }, String(e.message || e))); }
  view.focus({ preventScroll: true });
}

document.getElementById("signout").addEventListener("click", () => { info = null; signOut(); });
window.addEventListener("hashchange", () => route());
fetch(mode === "agenthost" ? "/health" : "/healthz").then((r) => r.json()).then((hz) => {
  document.getElementById("health").textContent = `warren ${hz.version}, up ${Math.round((hz.uptime_ms ?? hz.uptimeMs) / 60000)} min`;
}).catch(() => {});
route();

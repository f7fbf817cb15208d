import { WarrenError } from "./errors.js";
import { type Body, type CallOptions, lines, type Request, Transport } from "./transport.js";
import type {
  Command, CreateRequest, ExecResult, FileInfo, Frame, Image, ImageEvent, Info, NetworkPolicy, Port, PortToken,
  SandboxInfo, State,
} from "./types.js";
import { defaultWebSocket, ExecSession, open, Pty, type WebSocketConstructor } from "./ws.js";

export interface WarrenOptions {
  /** The server; default `WARREN_URL` (Node) or http://127.0.0.1:7070. */
  url?: string;
  /** Default `WARREN_API_KEY` (Node). */
  apiKey?: string;
  /** Tries again after a dropped connection or a 502/503/504, for calls
   * that change nothing. Default 2. */
  retries?: number;
  fetch?: typeof fetch;
  /** The WebSocket class; default the global one, else the `ws` package. */
  WebSocket?: WebSocketConstructor;
}

/** Options of long image calls: onProgress gets each step as it comes
 * (RUN output line by line, CACHED, layers). */
export interface ProgressOptions extends CallOptions {
  onProgress?: (ev: ImageEvent) => void;
}

export interface ListOptions extends CallOptions {
  state?: State | State[];
  metadata?: Record<string, string>;
  limit?: number;
}

export interface ExecOptions extends CallOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** A user of the sandbox (name or uid[:gid]); default the image's. */
  user?: string;
  stdin?: string;
  /** Kills the command (and all it started) after this long. */
  timeoutSeconds?: number;
  /** With either handler the output streams to it as it comes, and the
   * result carries no stdout or stderr. */
  onStdout?: (data: string) => void;
  onStderr?: (data: string) => void;
}

const env = (name: string): string | undefined =>
  (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.[name];

const enc = encodeURIComponent;

/** A client for one warren server. */
export class Warren {
  /** @internal */
  readonly t: Transport;
  private readonly WS?: WebSocketConstructor;

  constructor(opts: WarrenOptions = {}) {
    const url = (opts.url ?? env("WARREN_URL") ?? "http://127.0.0.1:7070").replace(/\/+$/, "");
    this.t = new Transport(url, opts.apiKey ?? env("WARREN_API_KEY"), opts.retries ?? 2, opts.fetch ?? globalThis.fetch.bind(globalThis));
    this.WS = opts.WebSocket;
  }

  /** @internal */
  async ws(path: string, query: Record<string, string> | undefined, signal?: AbortSignal) {
    const href = this.t.href(path, query).replace(/^http/, "ws");
    return open(this.WS ?? (await defaultWebSocket()), href, this.t.apiKey, signal);
  }

  /** Version, runtimes, warm pools and isolation warnings. */
  info(opts: CallOptions = {}): Promise<Info> {
    return this.t.json({ method: "GET", path: "/v1/info", signal: opts.signal });
  }

  /** Creates a sandbox and returns it running, its startup done. */
  async createSandbox(req: CreateRequest = {}, opts: CallOptions = {}): Promise<Sandbox> {
    return new Sandbox(this, await this.t.json({ method: "POST", path: "/v1/sandboxes", json: req, signal: opts.signal }));
  }

  /** Creates a sandbox, runs `fn` with it and deletes it however `fn` ends. */
  async withSandbox<T>(req: CreateRequest, fn: (sb: Sandbox) => Promise<T>, opts: CallOptions = {}): Promise<T> {
    const sb = await this.createSandbox(req, opts);
    try {
      return await fn(sb);
    } finally {
      await sb.delete().catch((e) => {
        if (!(e instanceof WarrenError && e.code === "not_found")) throw e;
      });
    }
  }

  async getSandbox(id: string, opts: CallOptions = {}): Promise<Sandbox> {
    return new Sandbox(this, await this.t.json({ method: "GET", path: `/v1/sandboxes/${enc(id)}`, signal: opts.signal }));
  }

  /** The organization's sandboxes, newest first. */
  async listSandboxes(opts: ListOptions = {}): Promise<Sandbox[]> {
    const query: Record<string, string | undefined> = {
      state: Array.isArray(opts.state) ? opts.state.join(",") : opts.state,
      limit: opts.limit ? String(opts.limit) : undefined,
    };
    for (const [k, v] of Object.entries(opts.metadata ?? {})) query["metadata." + k] = v;
    const out = await this.t.json<{ sandboxes: SandboxInfo[] }>({ method: "GET", path: "/v1/sandboxes", query, signal: opts.signal });
    return (out.sandboxes ?? []).map((d) => new Sandbox(this, d));
  }

  async images(opts: CallOptions = {}): Promise<Image[]> {
    return (await this.t.json<{ images: Image[] }>({ method: "GET", path: "/v1/images", signal: opts.signal })).images ?? [];
  }

  image(name: string, opts: CallOptions = {}): Promise<Image> {
    return this.t.json({ method: "GET", path: `/v1/images/${enc(name)}`, signal: opts.signal });
  }

  /** Pulls `ref` from its registry as the image `name`; `auth` is for
   * this pull only. */
  pullImage(name: string, ref: string, opts: ProgressOptions & { auth?: { username?: string; password?: string; token?: string } } = {}): Promise<Image> {
    return this.progress({ method: "POST", path: "/v1/images", json: { name, ref, auth: opts.auth }, signal: opts.signal }, `pull ${ref}`, opts.onProgress);
  }

  /** Imports a `docker save` or OCI layout tarball as the image `name`. */
  importImage(name: string, tar: Body, opts: ProgressOptions = {}): Promise<Image> {
    return this.progress({ method: "POST", path: "/v1/images/import", query: { name }, body: tar, contentType: "application/x-tar", signal: opts.signal }, `import ${name}`, opts.onProgress);
  }

  /** Builds the image `name` from a Dockerfile; `context` is the build
   * context as a tar stream. */
  buildDockerfile(name: string, context: Body, opts: ProgressOptions & { dockerfile?: string; args?: Record<string, string>; runtime?: string } = {}): Promise<Image> {
    const query: Record<string, string | undefined> = { name, dockerfile: opts.dockerfile, runtime: opts.runtime };
    const path = "/v1/images/build" + Object.entries(opts.args ?? {}).map(([k, v], i) => (i ? "&" : "?") + "arg=" + enc(k + "=" + v)).join("");
    return this.progress({ method: "POST", path, query, body: context, contentType: "application/x-tar", signal: opts.signal }, `build ${name}`, opts.onProgress);
  }

  /** Runs a long image call: one JSON answer, or with onProgress the
   * NDJSON events as they come. */
  private async progress(req: Request, what: string, onProgress?: (ev: ImageEvent) => void): Promise<Image> {
    if (!onProgress) return this.t.json(req);
    const resp = await this.t.send({ ...req, accept: "application/x-ndjson" });
    for await (const line of lines(resp)) {
      const d = JSON.parse(line);
      if (d.done && d.image && typeof d.image === "object") return d.image as Image;
      if (d.error) throw new WarrenError(`${what}: ${d.error}`, "internal");
      onProgress(d as ImageEvent);
    }
    throw new WarrenError(`${what}: the server ended the stream early`, "internal");
  }

  /** Deletes an image (refused while a sandbox or pool uses it). */
  deleteImage(name: string, opts: CallOptions = {}): Promise<void> {
    return this.t.none({ method: "DELETE", path: `/v1/images/${enc(name)}`, signal: opts.signal });
  }

  /** Removes build caches and layer blobs no image uses. */
  pruneImages(opts: CallOptions = {}): Promise<{ removed_blobs: number; removed_caches: number; freed_bytes: number }> {
    return this.t.json({ method: "POST", path: "/v1/images/prune", signal: opts.signal });
  }

  /** Builds an image unless it is ready, reporting each step. */
  async buildImage(name: string, opts: CallOptions & { onProgress?: (ev: ImageEvent) => void } = {}): Promise<Image> {
    const resp = await this.t.send({ method: "POST", path: `/v1/images/${enc(name)}/build`, signal: opts.signal });
    for await (const line of lines(resp)) {
      const d = JSON.parse(line);
      if (d.done && d.image && typeof d.image === "object") return d.image as Image;
      if (d.error) throw new WarrenError(`build image ${name}: ${d.error}`, "internal");
      opts.onProgress?.(d as ImageEvent);
    }
    throw new WarrenError(`build image ${name}: the server ended the stream early`, "internal");
  }
}

const disposeSymbol: symbol = (Symbol as { asyncDispose?: symbol }).asyncDispose ?? Symbol.for("Symbol.asyncDispose");

/** A sandbox: its `id`, `info` as last fetched, and what to do in it.
 * `await using sb = await warren.createSandbox()` deletes it at scope end. */
export class Sandbox {
  info: SandboxInfo;

  constructor(private readonly w: Warren, info: SandboxInfo) {
    this.info = info;
  }

  get id(): string {
    return this.info.id;
  }

  get state(): State {
    return this.info.state;
  }

  private path(rest = ""): string {
    return `/v1/sandboxes/${enc(this.id)}${rest}`;
  }

  private async set(method: string, rest: string, signal?: AbortSignal, json?: unknown): Promise<this> {
    this.info = await this.w.t.json({ method, path: this.path(rest), signal, json });
    return this;
  }

  refresh(opts: CallOptions = {}) { return this.set("GET", "", opts.signal); }
  /** Ends the sandbox and removes everything it left on the host. */
  delete(opts: CallOptions = {}) { return this.set("DELETE", "", opts.signal); }
  pause(opts: CallOptions = {}) { return this.set("POST", "/pause", opts.signal); }
  resume(opts: CallOptions = {}) { return this.set("POST", "/resume", opts.signal); }
  setNetwork(policy: NetworkPolicy, opts: CallOptions = {}) { return this.set("PUT", "/network", opts.signal, policy); }

  async [disposeSymbol](): Promise<void> {
    await this.delete().catch((e) => {
      if (!(e instanceof WarrenError && e.code === "not_found")) throw e;
    });
  }

  /** Makes the image `name` from this sandbox's files as they are. */
  snapshot(name: string, opts: CallOptions = {}): Promise<Image> {
    return this.w.t.json({ method: "POST", path: this.path("/snapshot"), json: { name }, signal: opts.signal });
  }

  /** Copies the sandbox, memory and files, into `count` new ones. */
  async fork(count = 1, opts: CallOptions = {}): Promise<Sandbox[]> {
    const out = await this.w.t.json<{ sandboxes: SandboxInfo[] }>({ method: "POST", path: this.path("/fork"), json: { count }, signal: opts.signal });
    return out.sandboxes.map((d) => new Sandbox(this.w, d));
  }

  /** Runs a command to completion: a string under /bin/sh -c, an array as
   * the argv. */
  async exec(cmd: string | string[], opts: ExecOptions = {}): Promise<ExecResult> {
    if (!opts.onStdout && !opts.onStderr) {
      return this.w.t.json({ method: "POST", path: this.path("/exec"), json: execBody(cmd, opts), signal: opts.signal });
    }
    for await (const f of this.execStream(cmd, opts)) {
      if (f.type === "stdout") opts.onStdout?.(f.data ?? "");
      else if (f.type === "stderr") opts.onStderr?.(f.data ?? "");
      else if (f.type === "exit") {
        return { exit_code: f.exit_code ?? -1, stdout: "", stderr: "", timed_out: f.timed_out, oom_killed: f.oom_killed,
          truncated: f.truncated, duration_ms: f.duration_ms ?? 0 };
      }
    }
    throw new WarrenError("the exec stream ended without an exit", "internal");
  }

  /** Runs a command, yielding its frames as they come: stdout and stderr,
   * then one exit. */
  async *execStream(cmd: string | string[], opts: ExecOptions = {}): AsyncGenerator<Frame> {
    const resp = await this.w.t.send({ method: "POST", path: this.path("/exec/stream"), json: execBody(cmd, opts), signal: opts.signal });
    for await (const line of lines(resp)) {
      const f = JSON.parse(line) as Frame;
      if (f.type === "error") throw new WarrenError(f.message ?? "exec failed", "internal");
      yield f;
      if (f.type === "exit") return;
    }
    throw new WarrenError("the exec stream ended without an exit", "internal");
  }

  /** Starts a command whose stdin you write as it runs. */
  async execInteractive(cmd: string | string[], opts: Omit<ExecOptions, "stdin" | "onStdout" | "onStderr"> = {}): Promise<ExecSession> {
    const ch = await this.w.ws(this.path("/exec/ws"), undefined, opts.signal);
    ch.ws.send(JSON.stringify(execBody(cmd, opts)));
    return new ExecSession(ch);
  }

  /** Starts a named background command that outlives the call. */
  startCommand(name: string, cmd: string, opts: CallOptions & { env?: Record<string, string>; cwd?: string } = {}): Promise<Command> {
    return this.w.t.json({ method: "POST", path: this.path("/commands"), json: { name, cmd, env: opts.env, cwd: opts.cwd }, signal: opts.signal });
  }

  async commands(opts: CallOptions = {}): Promise<Command[]> {
    return (await this.w.t.json<{ commands: Command[] }>({ method: "GET", path: this.path("/commands"), signal: opts.signal })).commands ?? [];
  }

  /** A background command's output from its start; with `follow`, until
   * it exits. */
  async *commandLogs(name: string, opts: CallOptions & { follow?: boolean } = {}): AsyncGenerator<Uint8Array> {
    const resp = await this.w.t.send({ method: "GET", path: this.path(`/commands/${enc(name)}/logs`), query: { follow: String(!!opts.follow) }, signal: opts.signal });
    if (!resp.body) return;
    const reader = resp.body.getReader();
    try {
      for (let r = await reader.read(); !r.done; r = await reader.read()) yield r.value;
    } finally {
      reader.releaseLock();
      await resp.body.cancel().catch(() => {});
    }
  }

  readFile(path: string, opts: CallOptions = {}): Promise<Uint8Array> {
    return this.w.t.bytes({ method: "GET", path: this.path("/files"), query: { path }, signal: opts.signal });
  }

  async readFileText(path: string, opts: CallOptions = {}): Promise<string> {
    return new TextDecoder().decode(await this.readFile(path, opts));
  }

  /** A file's bytes as a stream, for large files. */
  async readFileStream(path: string, opts: CallOptions = {}): Promise<ReadableStream<Uint8Array>> {
    const resp = await this.w.t.send({ method: "GET", path: this.path("/files"), query: { path }, signal: opts.signal });
    return resp.body ?? new ReadableStream({ start: (c) => c.close() });
  }

  /** Writes bytes, text, a Blob or a stream; parents are created. */
  writeFile(path: string, data: Body, opts: CallOptions & { mode?: string } = {}): Promise<FileInfo> {
    return this.w.t.json({ method: "PUT", path: this.path("/files"), query: { path, mode: opts.mode }, body: data, signal: opts.signal });
  }

  async listFiles(path: string, opts: CallOptions = {}): Promise<FileInfo[]> {
    return (await this.w.t.json<{ entries: FileInfo[] }>({ method: "GET", path: this.path("/files/list"), query: { path }, signal: opts.signal })).entries ?? [];
  }

  statFile(path: string, opts: CallOptions = {}): Promise<FileInfo> {
    return this.w.t.json({ method: "GET", path: this.path("/files/stat"), query: { path }, signal: opts.signal });
  }

  mkdir(path: string, opts: CallOptions = {}): Promise<FileInfo> {
    return this.w.t.json({ method: "POST", path: this.path("/files/mkdir"), query: { path }, signal: opts.signal });
  }

  removeFile(path: string, opts: CallOptions & { recursive?: boolean } = {}): Promise<void> {
    return this.w.t.none({ method: "DELETE", path: this.path("/files"), query: { path, recursive: String(!!opts.recursive) }, signal: opts.signal });
  }

  /** A directory as a tar stream (untrusted input: unpack it with care). */
  readArchive(path: string, opts: CallOptions = {}): Promise<Uint8Array> {
    return this.w.t.bytes({ method: "GET", path: this.path("/files/archive"), query: { path }, signal: opts.signal });
  }

  /** Unpacks a tar stream into a directory (created). */
  writeArchive(path: string, tar: Body, opts: CallOptions = {}): Promise<FileInfo> {
    return this.w.t.json({ method: "PUT", path: this.path("/files/archive"), query: { path }, body: tar, contentType: "application/x-tar", signal: opts.signal });
  }

  /** A login shell on a terminal. */
  async pty(opts: CallOptions & { cols?: number; rows?: number } = {}): Promise<Pty> {
    const ch = await this.w.ws(this.path("/pty"), { cols: String(opts.cols ?? 80), rows: String(opts.rows ?? 24) }, opts.signal);
    return new Pty(ch);
  }

  exposePort(port: number, opts: CallOptions = {}): Promise<Port> {
    return this.w.t.json({ method: "POST", path: this.path(`/ports/${port}`), signal: opts.signal });
  }

  unexposePort(port: number, opts: CallOptions = {}): Promise<void> {
    return this.w.t.none({ method: "DELETE", path: this.path(`/ports/${port}`), signal: opts.signal });
  }

  /** A signed link to an exposed port, valid for `ttlSeconds` (default an hour). */
  previewToken(port: number, opts: CallOptions & { ttlSeconds?: number } = {}): Promise<PortToken> {
    return this.w.t.json({ method: "POST", path: this.path(`/ports/${port}/token`), json: { ttl_seconds: opts.ttlSeconds ?? 3600 }, signal: opts.signal });
  }

  /** Revokes one preview token of a port (by its token_id), or all. */
  revokePreviewTokens(port: number, tokenId?: string, opts: CallOptions = {}): Promise<void> {
    const rest = `/ports/${port}/tokens` + (tokenId ? `/${enc(tokenId)}` : "");
    return this.w.t.none({ method: "DELETE", path: this.path(rest), signal: opts.signal });
  }
}

function execBody(cmd: string | string[], o: ExecOptions) {
  return {
    ...(typeof cmd === "string" ? { cmd } : { argv: cmd }),
    env: o.env,
    cwd: o.cwd,
    user: o.user,
    stdin: o.stdin,
    timeout_seconds: o.timeoutSeconds,
  };
}

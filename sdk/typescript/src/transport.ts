import { errorFrom, WarrenError } from "./errors.js";

/** Options every call takes. */
export interface CallOptions {
  /** Abandons the call (and ends a stream or session it opened). */
  signal?: AbortSignal;
}

export type Body = Uint8Array | ArrayBuffer | string | Blob | ReadableStream<Uint8Array>;

export interface Request {
  method: string;
  path: string;
  query?: Record<string, string | undefined>;
  json?: unknown;
  body?: Body;
  contentType?: string;
  accept?: string;
  signal?: AbortSignal;
}

const retryStatuses = new Set([502, 503, 504]);

/** Sends requests to one server: auth, retries of what changes nothing,
 * error answers turned into WarrenErrors. */
export class Transport {
  constructor(
    readonly url: string,
    readonly apiKey: string | undefined,
    readonly retries: number,
    private readonly fetchImpl: typeof fetch,
  ) {}

  href(path: string, query?: Record<string, string | undefined>): string {
    const u = new URL(this.url + path);
    for (const [k, v] of Object.entries(query ?? {})) {
      if (v !== undefined) u.searchParams.set(k, v);
    }
    return u.toString();
  }

  async send(req: Request): Promise<Response> {
    const headers: Record<string, string> = {};
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    if (req.accept) headers.Accept = req.accept;
    let body: BodyInit | undefined;
    if (req.json !== undefined) {
      body = JSON.stringify(req.json);
      headers["Content-Type"] = "application/json";
    } else if (req.body !== undefined) {
      body = req.body as BodyInit;
      headers["Content-Type"] = req.contentType ?? "application/octet-stream";
    }
    const safe = (req.method === "GET" || req.method === "HEAD") && body === undefined;
    const tries = 1 + (safe ? Math.max(this.retries, 0) : 0);
    for (let attempt = 1; ; attempt++) {
      let resp: Response;
      try {
        const init: RequestInit & { duplex?: string } = { method: req.method, headers, body, signal: req.signal };
        if (body instanceof ReadableStream) init.duplex = "half"; // a streamed upload
        resp = await this.fetchImpl(this.href(req.path, req.query), init);
      } catch (e) {
        if (req.signal?.aborted) throw e;
        if (attempt < tries) {
          await sleep(200 * attempt, req.signal);
          continue;
        }
        throw new WarrenError(`${req.method} ${req.path}: ${(e as Error).message}`, "unavailable");
      }
      if (retryStatuses.has(resp.status) && attempt < tries) {
        await resp.body?.cancel();
        await sleep(200 * attempt, req.signal);
        continue;
      }
      if (resp.status >= 300) {
        const text = await resp.text();
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // not the API's body
        }
        throw errorFrom(parsed, resp.status);
      }
      return resp;
    }
  }

  async json<T>(req: Request): Promise<T> {
    const resp = await this.send(req);
    return (await resp.json()) as T;
  }

  async none(req: Request): Promise<void> {
    const resp = await this.send(req);
    await resp.body?.cancel();
  }

  async bytes(req: Request): Promise<Uint8Array> {
    const resp = await this.send(req);
    return new Uint8Array(await resp.arrayBuffer());
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });
}

/** Yields the lines of a streamed answer as they arrive. */
export async function* lines(resp: Response): AsyncGenerator<string> {
  if (!resp.body) return;
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) yield line;
      }
    }
    buf += decoder.decode();
    if (buf.trim()) yield buf;
  } finally {
    reader.releaseLock();
    await resp.body.cancel().catch(() => {});
  }
}

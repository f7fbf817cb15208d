import { errorFrom, WarrenError } from "./errors.js";
import type { Frame } from "./types.js";

/** The WebSocket interface the SDK uses: the browser's, Node 22's, or the
 * `ws` package's (which Node 18 and 20 need). */
export interface WebSocketLike {
  binaryType: string;
  readyState: number;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: string, listener: (ev: any) => void, options?: { once?: boolean }): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string[]) => WebSocketLike;

/** The key travels as a subprotocol: browsers cannot set headers on a
 * WebSocket, and a URL would leak it into logs. */
export function protocols(apiKey?: string): string[] {
  return apiKey ? ["warren.v1", "warren.key." + apiKey] : ["warren.v1"];
}

let nodeWS: Promise<WebSocketConstructor> | undefined;

export function defaultWebSocket(): Promise<WebSocketConstructor> {
  const g = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (g) return Promise.resolve(g);
  nodeWS ??= import("ws").then((m: any) => (m.default ?? m.WebSocket ?? m) as WebSocketConstructor);
  return nodeWS;
}

type Message = { text: string } | { binary: Uint8Array } | { closed: WarrenError | null };

/** A WebSocket as a queue of messages one can await. */
export class Channel {
  private queue: Message[] = [];
  private waiting: ((m: Message) => void) | undefined;
  private ended = false;

  constructor(readonly ws: WebSocketLike) {
    ws.binaryType = "arraybuffer";
    ws.addEventListener("message", (ev: { data: unknown }) => {
      const d = ev.data;
      if (typeof d === "string") this.push({ text: d });
      else if (d instanceof ArrayBuffer) this.push({ binary: new Uint8Array(d) });
      else if (ArrayBuffer.isView(d)) this.push({ binary: new Uint8Array(d.buffer, d.byteOffset, d.byteLength) });
      else this.push({ text: String(d) });
    });
    ws.addEventListener("close", () => this.push({ closed: null }));
    ws.addEventListener("error", () => this.push({ closed: new WarrenError("the WebSocket failed", "unavailable") }));
  }

  private push(m: Message) {
    if (this.ended) return;
    if ("closed" in m) this.ended = true;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = undefined;
      w(m);
    } else {
      this.queue.push(m);
    }
  }

  next(): Promise<Message> {
    const m = this.queue.shift();
    if (m) return Promise.resolve(m);
    if (this.ended) return Promise.resolve({ closed: null });
    return new Promise((resolve) => (this.waiting = resolve));
  }
}

/** Opens a WebSocket; a refused upgrade becomes the matching error. */
export async function open(WS: WebSocketConstructor, url: string, apiKey: string | undefined, signal?: AbortSignal): Promise<Channel> {
  const ws = new WS(url, protocols(apiKey));
  await new Promise<void>((resolve, reject) => {
    const fail = (ev: any) => {
      // ws reports the refused answer's status; a browser only says it failed.
      const m = /Unexpected server response: (\d+)/.exec(String(ev?.message ?? ev?.error?.message ?? ""));
      reject(m ? errorFrom(null, Number(m[1])) : new WarrenError(`open ${url}: the WebSocket failed`, "unavailable"));
    };
    ws.addEventListener("open", () => resolve(), { once: true });
    ws.addEventListener("error", fail, { once: true });
    signal?.addEventListener("abort", () => {
      ws.close();
      reject(signal.reason ?? new Error("aborted"));
    }, { once: true });
  });
  signal?.addEventListener("abort", () => ws.close(), { once: true });
  return new Channel(ws);
}

/** Reads a text message: a frame, or the server's error. */
export function control(text: string): Frame {
  const d = JSON.parse(text);
  if (d && typeof d.error === "object") throw errorFrom(d);
  if (d?.type === "error") throw new WarrenError(d.message ?? "session failed", "internal");
  return d as Frame;
}

/** A shell on a terminal. Iterate it (or call `read`) for output bytes;
 * `write` sends keystrokes; `exitCode` is set once the shell exits. */
export class Pty implements AsyncIterable<Uint8Array> {
  exitCode: number | undefined;
  constructor(private readonly ch: Channel) {}

  /** The next output, or undefined once the shell has exited. */
  async read(): Promise<Uint8Array | undefined> {
    for (;;) {
      const m = await this.ch.next();
      if ("binary" in m) return m.binary;
      if ("closed" in m) {
        if (m.closed) throw m.closed;
        return undefined;
      }
      const f = control(m.text);
      if (f.type === "exit") this.exitCode = f.exit_code;
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    for (let b = await this.read(); b; b = await this.read()) yield b;
  }

  write(data: string | Uint8Array): void {
    this.ch.ws.send(typeof data === "string" ? new TextEncoder().encode(data) : data);
  }

  resize(cols: number, rows: number): void {
    this.ch.ws.send(JSON.stringify({ type: "resize", cols, rows }));
  }

  close(): void {
    this.ch.ws.close();
  }
}

/** A command with stdin over a WebSocket. `recv` returns frames until the
 * exit frame; iterate it for the same. */
export class ExecSession implements AsyncIterable<Frame> {
  constructor(private readonly ch: Channel) {}

  sendStdin(data: string | Uint8Array): void {
    const text = typeof data === "string" ? data : new TextDecoder().decode(data);
    this.ch.ws.send(JSON.stringify({ type: "stdin", data: text }));
  }

  closeStdin(): void {
    this.ch.ws.send(JSON.stringify({ type: "stdin_close" }));
  }

  kill(): void {
    this.ch.ws.send(JSON.stringify({ type: "kill" }));
  }

  async recv(): Promise<Frame> {
    const m = await this.ch.next();
    if ("closed" in m) throw m.closed ?? new WarrenError("the exec session closed before its exit", "internal");
    return control("text" in m ? m.text : new TextDecoder().decode(m.binary));
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Frame> {
    for (;;) {
      const f = await this.recv();
      yield f;
      if (f.type === "exit") return;
    }
  }

  close(): void {
    this.ch.ws.close();
  }
}

/**
 * warren: self-hosted sandboxes for AI agents.
 *
 * ```ts
 * import { Warren } from "@warrenhq/warren";
 * const warren = new Warren(); // WARREN_URL, WARREN_API_KEY
 * await warren.withSandbox({ image: "base" }, async (sb) => {
 *   console.log((await sb.exec("echo hello from $(hostname)")).stdout);
 * });
 * ```
 */
export { Warren, Sandbox } from "./client.js";
export type { WarrenOptions, ListOptions, ExecOptions, ProgressOptions } from "./client.js";
export type { CallOptions, Body } from "./transport.js";
export { Pty, ExecSession } from "./ws.js";
export type { WebSocketLike, WebSocketConstructor } from "./ws.js";
export * from "./errors.js";
export type * from "./types.js";

// The API's shapes (the wire contract, docs/API.md), with the API's own
// snake_case field names: what you send is what the server reads.

/** Where a sandbox is in its life; `deleted` and `failed` are final. */
export type State =
  | "creating" | "running" | "pausing" | "paused" | "resuming" | "forking" | "deleting" | "deleted" | "failed"
  // shown for a sandbox whose cluster node stopped renewing its lease
  | "lost";

export interface Resources {
  cpu?: number;
  memory_mb?: number;
  pids?: number;
  disk_mb?: number;
}

export interface NetworkPolicy {
  /** default (the internet, not the host or private ranges), none or allowlist. */
  egress: "default" | "none" | "allowlist";
  allow?: string[];
  deny?: string[];
}

export interface FileSpec {
  path: string;
  content: string;
  encoding?: "utf8" | "base64";
  mode?: string;
}

export interface ReadyCheck {
  http?: string;
  tcp?: string;
  command?: string;
  timeout_seconds?: number;
}

export interface Startup {
  git?: { url: string; ref?: string; depth?: number };
  files?: FileSpec[];
  env?: Record<string, string>;
  commands?: { name: string; run: string; background?: boolean }[];
  ports?: number[];
  ready?: ReadyCheck;
}

/** The body of a create. Every field is optional. */
export interface CreateRequest {
  image?: string;
  runtime?: "gvisor" | "runc" | "auto" | string;
  resources?: Resources;
  env?: Record<string, string>;
  metadata?: Record<string, string>;
  timeout_seconds?: number;
  idle_timeout_seconds?: number;
  idle_action?: "stop" | "pause";
  network?: NetworkPolicy;
  files?: FileSpec[];
  startup?: Startup;
  /** The org's volumes to mount; one sandbox at a time writable. */
  volumes?: VolumeMount[];
  /** Env var name → the org's secret name. */
  secrets?: Record<string, string>;
  /** /run/secrets/FILE → the org's secret name (a memory-backed file). */
  secret_files?: Record<string, string>;
  /** In a cluster: the node to make it on, or labels its node must carry. */
  placement?: { node?: string; labels?: Record<string, string> };
}

export interface VolumeMount {
  name: string;
  path: string;
  read_only?: boolean;
}

export interface Memory {
  limit_mb: number;
  used_mb: number;
  host_mb: number;
  host_peak_mb: number;
  oom_kills: number;
}

export interface Port {
  port: number;
  url: string;
  path_url?: string;
}

/** A sandbox as the API shows it. */
export interface SandboxInfo {
  id: string;
  state: State;
  runtime: string;
  image: string;
  resources: Required<Resources>;
  metadata: Record<string, string>;
  timeout_seconds: number;
  idle_timeout_seconds: number;
  idle_action?: string;
  network?: NetworkPolicy;
  /** The node it lives on, in a cluster. */
  node?: string;
  address?: string;
  ports?: Port[];
  created_at: string;
  expires_at?: string;
  ended_at?: string;
  boot_path?: string;
  timings?: Record<string, number>;
  reason?: string;
  memory?: Memory;
  /** The org's volumes and secrets it names (never values). */
  volumes?: VolumeMount[];
  secrets?: Record<string, string>;
  secret_files?: Record<string, string>;
}

/** A command's outcome. A non-zero exit is a result, not an error. */
export interface ExecResult {
  exit_code: number;
  stdout: string;
  stderr: string;
  timed_out?: boolean;
  truncated?: boolean;
  oom_killed?: boolean;
  duration_ms: number;
}

/** One message of a streaming exec: stdout, stderr, then exit. */
export interface Frame {
  type: "stdout" | "stderr" | "exit" | "error";
  data?: string;
  exit_code?: number;
  timed_out?: boolean;
  oom_killed?: boolean;
  truncated?: boolean;
  duration_ms?: number;
  message?: string;
}

export interface FileInfo {
  name: string;
  path: string;
  type: "file" | "dir" | "symlink" | "other";
  size: number;
  mode: string;
  mtime: string;
}

/** A background command's state. */
export interface Command {
  name: string;
  cmd: string;
  state: "running" | "exited";
  exit_code?: number;
  oom_killed?: boolean;
  pid: number;
  started_at: string;
  ended_at?: string;
}

/** A signed, expiring preview link. */
export interface PortToken {
  url: string;
  token: string;
  token_id: string;
  expires_at: string;
}

export interface ImageConfig {
  env?: string[];
  working_dir?: string;
  user?: string;
  entrypoint?: string[];
  cmd?: string[];
}

export interface Image {
  name: string;
  state: "missing" | "building" | "ready" | "failed";
  kind?: "builtin" | "registry" | "import" | "snapshot" | "dockerfile" | "cache";
  ref?: string;
  digest?: string;
  config?: ImageConfig;
  source?: string;
  size_bytes?: number;
  built_at?: string;
  build_ms?: number;
  error?: string;
  progress?: string;
  format?: number;
}

export interface ImageEvent {
  image: string;
  step: string;
  message: string;
  done?: boolean;
  error?: string;
}

export interface PoolStatus {
  image: string;
  runtime: string;
  size: number;
  ready: number;
}

export interface Info {
  version: string;
  runtimes: string[];
  default_runtime: string;
  pools: PoolStatus[];
  org: string;
  warnings: string[];
}

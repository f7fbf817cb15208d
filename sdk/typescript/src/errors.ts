/** The API's error codes; each has one HTTP status. */
export type ErrorCode =
  | "bad_request"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "conflict"
  | "too_large"
  | "too_many_requests"
  | "internal"
  | "unavailable"
  | "insufficient_storage";

/** An error answer from warren: branch on `code` or on the subclass. */
export class WarrenError extends Error {
  /** The HTTP status (0 for an error sent on a WebSocket). */
  readonly status: number;
  readonly code: ErrorCode;
  /** The request field, query parameter or path at fault, if named. */
  readonly field?: string;

  constructor(message: string, code: ErrorCode = "internal", status = 0, field?: string) {
    super(field ? `${message} (${code}, field ${field})` : `${message} (${code})`);
    this.name = new.target.name;
    this.code = code;
    this.status = status;
    this.field = field;
  }
}

/** 400: the request was invalid; `field` says which input. */
export class BadRequestError extends WarrenError {}
/** 401: the API key was missing or wrong. */
export class AuthenticationError extends WarrenError {}
/** 403: the key may not do this. */
export class ForbiddenError extends WarrenError {}
/** 404: no such sandbox, file, command or image. */
export class NotFoundError extends WarrenError {}
/** 409: the sandbox's state does not allow this. */
export class ConflictError extends WarrenError {}
/** 413: the request body is over its limit. */
export class TooLargeError extends WarrenError {}
/** 429: a limit on work in flight was reached; try again later. */
export class RateLimitError extends WarrenError {}
/** 503: the node cannot serve this now. */
export class UnavailableError extends WarrenError {}
/** 507: the sandbox's disk is full. */
export class StorageFullError extends WarrenError {}

const byCode: Record<string, typeof WarrenError> = {
  bad_request: BadRequestError,
  unauthorized: AuthenticationError,
  forbidden: ForbiddenError,
  not_found: NotFoundError,
  conflict: ConflictError,
  too_large: TooLargeError,
  too_many_requests: RateLimitError,
  unavailable: UnavailableError,
  insufficient_storage: StorageFullError,
};

const codeByStatus: Record<number, ErrorCode> = {
  400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict",
  413: "too_large", 429: "too_many_requests", 503: "unavailable", 507: "insufficient_storage",
};

/** Builds the error for an error body `{"error": {...}}`, or for a bare
 * status when the body is not the API's (a proxy's answer). */
export function errorFrom(body: unknown, status = 0): WarrenError {
  const err = (body as { error?: { code?: string; message?: string; field?: string } } | null)?.error;
  if (err && typeof err === "object" && err.code) {
    const Cls = byCode[err.code] ?? WarrenError;
    return new Cls(err.message ?? "", err.code as ErrorCode, status, err.field || undefined);
  }
  const code = codeByStatus[status] ?? "internal";
  const text = typeof body === "string" && body.trim() ? body.trim() : `HTTP ${status}`;
  return new (byCode[code] ?? WarrenError)(text, code, status);
}

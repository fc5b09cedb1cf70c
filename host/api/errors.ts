import type { ApiErrorCode } from "../../shared/api/schemas.js";

/** The only error type handlers throw; the error middleware renders it into the envelope. */
export class ApiError extends Error {
  override name = "ApiError";
  readonly param?: string;
  readonly headers?: Record<string, string>;

  constructor(
    readonly code: ApiErrorCode,
    message: string,
    opts: { param?: string; cause?: unknown; headers?: Record<string, string> } = {},
  ) {
    super(message, { cause: opts.cause });
    this.param = opts.param;
    this.headers = opts.headers;
  }
}

/** Code → HTTP status, in one place. `rate_limited` and `unavailable` extend the contract's table. */
export const HTTP_STATUS: Record<ApiErrorCode, number> = {
  invalid_request: 400,
  unauthenticated: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  rate_limited: 429,
  internal_error: 500,
  unavailable: 503,
};

/** Human documentation of each code (served in the OpenAPI document and the README). */
export const ERROR_DOCS: Record<ApiErrorCode, string> = {
  invalid_request: "Malformed or invalid input; error.param names the field when there is one.",
  unauthenticated: "Missing, malformed, unknown, expired or revoked Bearer token.",
  forbidden: "The token is valid but its tenant may not do this (for example, a suspended tenant).",
  not_found: "The resource does not exist, or belongs to another tenant; also unknown routes.",
  conflict: "State or idempotency conflict (Idempotency-Key reused with a different body; instance not ready).",
  rate_limited: "Extension: too many requests; Retry-After says when to try again.",
  internal_error: "Unexpected server error. Quote request_id when reporting.",
  unavailable: "Extension: the daemon is shutting down or a dependency is unavailable; retry later.",
};

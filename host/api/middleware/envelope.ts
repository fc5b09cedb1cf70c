import type { Context } from "koa";
import type { ApiErrorCode } from "../../../shared/api/schemas.js";
import { ApiError, HTTP_STATUS } from "../errors.js";
import { storageTrouble } from "../../store/storage-trouble.js";

export function respond(ctx: Context, status: number, data: unknown): void {
  ctx.status = status;
  ctx.body = { request_id: ctx.state.requestId, correlation_id: ctx.state.correlationId ?? null, data };
}

/**
 * `respond` for data already serialised to JSON (a record rendered once and served many times):
 * the same envelope, byte for byte, without serialising the data again.
 */
export function respondSerialized(ctx: Context, status: number, dataJson: string): void {
  ctx.status = status;
  // The header Koa derives from `ctx.type = "application/json"`, without its per-call MIME lookup.
  ctx.set("Content-Type", "application/json; charset=utf-8");
  ctx.body = `{"request_id":${JSON.stringify(ctx.state.requestId)},"correlation_id":${JSON.stringify(ctx.state.correlationId ?? null)},"data":${dataJson}}`;
}

function renderError(ctx: Context, code: ApiErrorCode, message: string, param?: string): void {
  ctx.status = HTTP_STATUS[code];
  const error: { code: ApiErrorCode; message: string; param?: string } = { code, message };
  if (param !== undefined) error.param = param;
  ctx.body = { request_id: ctx.state.requestId, correlation_id: ctx.state.correlationId ?? null, error };
}

/** An unmatched route or method ends here as `not_found`, in the envelope like every answer. */
export function renderUnmatched(ctx: Context): void {
  if (ctx.body === undefined && (ctx.status === 404 || ctx.status === 405 || ctx.status === 501)) {
    renderError(ctx, "not_found", `no such endpoint: ${ctx.method} ${ctx.path}`);
  }
}

/**
 * The one place where failures become HTTP: ApiError renders as itself; anything else is logged
 * with its cause and shown only as `internal_error`.
 */
export function renderFailure(ctx: Context, err: unknown): void {
  if (err instanceof ApiError) {
    if (err.headers) ctx.set(err.headers);
    renderError(ctx, err.code, err.message, err.param);
    if (err.code === "unauthenticated") ctx.set("WWW-Authenticate", 'Bearer realm="cvm"');
    return;
  }
  const storage = storageTrouble(err);
  if (storage) {
    // Not a bug of ours and not the client's: the disk is full or another process holds the
    // database's write lock past the busy timeout. Clients should come back, so 503 with
    // Retry-After; one warn line without a stack, since a full disk fails every write at once.
    ctx.state.log?.warn({ code: storage.code, err: (err as Error).message }, "storage unavailable");
    ctx.set("Retry-After", String(storage.retryAfterS));
    renderError(ctx, "unavailable", storage.message);
    return;
  }
  ctx.state.log?.error({ err }, "unhandled error");
  renderError(ctx, "internal_error", "internal error; quote request_id when reporting");
}

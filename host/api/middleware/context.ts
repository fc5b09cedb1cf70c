import { randomUUID } from "node:crypto";
import type { Context } from "koa";
import type { Logger } from "pino";

const MAX_CORRELATION_LEN = 256;

/**
 * `ctx.state` of a tenant API request. A class, so that every request's state has the same shape,
 * and so that the per-request child logger is only built when something logs: most requests
 * never do, and a pino child per request was a measurable share of the request cost.
 */
export class RequestState {
  clientAddress: string | undefined = undefined;
  /** The client address's rate-limit bucket (host/api/middleware/rate-limit.ts), once worked out. */
  addressBucket: string | undefined = undefined;
  /** Set by authentication. */
  tenant: { slug: string } | undefined = undefined;
  keyPrefix: string | undefined = undefined;
  rateLimit: unknown = undefined;
  private child: Logger | undefined = undefined;

  constructor(
    private readonly base: Logger,
    readonly requestId: string,
    readonly correlationId: string | null,
  ) {}

  /** The request's logger: every line carries `req_id`. */
  get log(): Logger {
    return (this.child ??= this.base.child({ req_id: this.requestId }));
  }
}

/**
 * Gives the request a server-generated id (a client's X-Request-ID is ignored) and carries the
 * client's X-Correlation-ID through, in `ctx.state` and in the response headers.
 */
export function startRequest(ctx: Context, logger: Logger): RequestState {
  const requestId = randomUUID().replace(/-/g, "");
  const rawCorrelation = ctx.get("X-Correlation-ID");
  // Header values are client text echoed into logs and responses: bound and strip control bytes.
  const correlationId = rawCorrelation ? rawCorrelation.slice(0, MAX_CORRELATION_LEN).replace(/[\x00-\x1f\x7f]/g, "") : null;
  const state = new RequestState(logger, requestId, correlationId);
  ctx.state = state;
  ctx.set("X-Request-ID", requestId);
  if (correlationId !== null) ctx.set("X-Correlation-ID", correlationId);
  return state;
}

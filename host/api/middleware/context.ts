import { randomUUID } from "node:crypto";
import type { Context, Next } from "koa";
import type { Logger } from "pino";

const MAX_CORRELATION_LEN = 256;

/**
 * `ctx.state` of a tenant API request. A class, so that every request's state has the same shape,
 * and so that the per-request child logger is only built when something logs: most requests
 * never do, and a pino child per request was a measurable share of the request cost.
 */
export class RequestState {
  clientAddress: string | undefined = undefined;
  /** Set by authentication. */
  tenant: { slug: string } | undefined = undefined;
  keyPrefix: string | undefined = undefined;
  rateLimit: unknown = undefined;
  /** Set when no route matched (see buildApp). */
  unrouted = false;
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
 * Gives every request a server-generated id (a client's X-Request-ID is ignored) and carries the
 * client's X-Correlation-ID through. The access line is at debug level: request counts, statuses
 * and latencies are in the metrics, and failures that matter are logged where they happen
 * (unhandled errors, the security log).
 */
export function requestContext(logger: Logger) {
  return async (ctx: Context, next: Next) => {
    const requestId = randomUUID().replace(/-/g, "");
    const rawCorrelation = ctx.get("X-Correlation-ID");
    // Header values are client text echoed into logs and responses: bound and strip control bytes.
    const correlationId = rawCorrelation ? rawCorrelation.slice(0, MAX_CORRELATION_LEN).replace(/[\x00-\x1f\x7f]/g, "") : null;
    const state = new RequestState(logger, requestId, correlationId);
    ctx.state = state;
    ctx.set("X-Request-ID", requestId);
    if (correlationId !== null) ctx.set("X-Correlation-ID", correlationId);
    if (!logger.isLevelEnabled("debug")) return next();
    const started = process.hrtime.bigint();
    try {
      await next();
    } finally {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      state.log.debug({ method: ctx.method, path: ctx.path, status: ctx.status, ms: Math.round(ms * 100) / 100, tenant: state.tenant?.slug }, "request");
    }
  };
}

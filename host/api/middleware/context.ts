import { randomUUID } from "node:crypto";
import type { Context, Next } from "koa";
import type { Logger } from "pino";

const MAX_CORRELATION_LEN = 256;

/**
 * Gives every request a server-generated id (a client's X-Request-ID is ignored), carries the
 * client's X-Correlation-ID through, and logs one line per request with a child logger.
 */
export function requestContext(logger: Logger) {
  return async (ctx: Context, next: Next) => {
    const requestId = randomUUID().replace(/-/g, "");
    const rawCorrelation = ctx.get("X-Correlation-ID");
    // Header values are client text echoed into logs and responses: bound and strip control bytes.
    const correlationId = rawCorrelation ? rawCorrelation.slice(0, MAX_CORRELATION_LEN).replace(/[\x00-\x1f\x7f]/g, "") : null;
    ctx.state.requestId = requestId;
    ctx.state.correlationId = correlationId;
    ctx.state.log = logger.child({ req_id: requestId });
    ctx.set("X-Request-ID", requestId);
    if (correlationId !== null) ctx.set("X-Correlation-ID", correlationId);
    const started = process.hrtime.bigint();
    try {
      await next();
    } finally {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      ctx.state.log.info({ method: ctx.method, path: ctx.path, status: ctx.status, ms: Math.round(ms * 100) / 100, tenant: ctx.state.tenant?.slug }, "request");
    }
  };
}

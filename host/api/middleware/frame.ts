import type { Context, Middleware, Next } from "koa";
import type { Logger } from "pino";
import { clientAddress, type TrustedProxies } from "./client-address.js";
import type { Metrics } from "../../ops/metrics.js";
import type { RateLimiter } from "./rate-limit.js";
import type { RoutedContext } from "../dispatch.js";
import { ApiError } from "../errors.js";
import { startRequest } from "./context.js";
import { renderFailure, renderUnmatched } from "./envelope.js";

export interface FrameDeps {
  logger: Logger;
  trustedProxies: TrustedProxies;
  /** True once shutdown began: new requests get 503 while in-flight ones finish. */
  draining(): boolean;
  metrics?: Metrics;
  rateLimiter?: RateLimiter;
  /** The route a request refused before routing asked for; undefined when no route matches. */
  routeOf(ctx: Context): string | RegExp | undefined;
}

/** The request failed because its client hung up (a body read cut short, the socket gone). */
function clientWentAway(ctx: Context, err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  const reset = code === "ECONNRESET" || code === "ECONNABORTED" || code === "EPIPE" || (err as Error | null)?.message === "aborted";
  return reset && (ctx.req.destroyed || ctx.req.socket.destroyed);
}

/**
 * What every tenant API request gets around its route, in this order:
 * 1. a server-generated request id and the client's correlation id (context.ts);
 * 2. the client's address (through trusted proxies only);
 * 3. the envelope: every failure becomes an error envelope, an unknown route `not_found`;
 * 4. the per-address rate limit, then the refusal of new requests while draining;
 * 5. the metrics, by route template and the status the client got, and a debug access line.
 *
 * One async frame rather than one middleware per step: each Koa middleware costs a dispatch and
 * a promise per request, and on the hot read path (an authenticated GET served from the caches)
 * those were a measurable share of cvmd's CPU (bench/api.bench.ts).
 */
export function requestFrame(deps: FrameDeps): Middleware {
  const trusted = deps.trustedProxies;
  return async (ctx: Context, next: Next) => {
    const state = startRequest(ctx, deps.logger);
    state.clientAddress = clientAddress(ctx.req.socket.remoteAddress ?? "unknown", trusted.empty ? undefined : ctx.get("X-Forwarded-For") || undefined, trusted);
    const started = performance.now();
    let routed = false;
    let gone = false;
    try {
      deps.rateLimiter?.chargeAddress(ctx);
      if (deps.draining()) {
        ctx.set("Connection", "close");
        ctx.set("Retry-After", "5");
        throw new ApiError("unavailable", "the server is restarting; retry shortly");
      }
      routed = true;
      await next();
      renderUnmatched(ctx);
    } catch (err) {
      if (clientWentAway(ctx, err)) {
        // Nobody is left to answer: not our failure, so neither an error line nor a 500.
        gone = true;
        state.log.debug({ method: ctx.method, path: ctx.path }, "client closed the connection mid-request");
      } else renderFailure(ctx, err);
    }
    const ms = performance.now() - started;
    // 499, as nginx counts it: the client closed the request before the answer.
    const status = gone ? 499 : ctx.status;
    if (deps.metrics) {
      // `dispatch` names the route before its middleware runs, so a 401 is counted under the route
      // it asked for; only a request refused before routing is looked up here.
      const route = routed ? (ctx as RoutedContext)._matchedRoute : deps.routeOf(ctx);
      deps.metrics.observeApiRequest(ctx.method, route === undefined ? "unmatched" : String(route), status, ms / 1000);
    }
    // The access line is at debug level: counts, statuses and latencies are in the metrics, and
    // failures that matter are logged where they happen (unhandled errors, the security log).
    if (deps.logger.isLevelEnabled("debug")) {
      state.log.debug({ method: ctx.method, path: ctx.path, status, ms: Math.round(ms * 100) / 100, tenant: state.tenant?.slug }, "request");
    }
  };
}

import type { Context, Middleware, Next } from "koa";
import type { Metrics } from "./metrics.js";

/**
 * Counts every tenant API request by route template (never the raw path, whose instance names
 * would make unbounded label values) and final status. Mounted outside the envelope, so errors
 * are seen with the status the client got. `routeOf` names routes whose handler never ran
 * (a 401 before routing); anything else is `unmatched`.
 */
export function httpMetrics(metrics: Metrics, routeOf: (ctx: Context) => string | undefined): Middleware {
  return async (ctx: Context, next: Next) => {
    const started = performance.now();
    try {
      await next();
    } finally {
      const matched = (ctx as Context & { _matchedRoute?: string | RegExp })._matchedRoute;
      const route = matched !== undefined ? String(matched) : (routeOf(ctx) ?? "unmatched");
      metrics.observeApiRequest(ctx.method, route, ctx.status, (performance.now() - started) / 1000);
    }
  };
}

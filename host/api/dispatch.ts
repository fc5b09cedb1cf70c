import type Router from "@koa/router";
import type { Layer } from "@koa/router";
import type { Context, Middleware, Next } from "koa";
import compose from "koa-compose";

type Routed = Context & { params: Record<string, string>; _matchedRoute?: string | RegExp };

/**
 * Runs the route of a @koa/router Router that matches the request, found with the router's own
 * matcher (`router.match`: its path syntax, its methods, HEAD for GET), with each route's
 * middleware composed once instead of for every request.
 *
 * Why not `router.routes()`: it builds a fresh middleware chain per request (a closure per matched
 * layer, the composition, the captures twice). On the cached authenticated GET, the request cvmd
 * serves most, cvmd's CPU per request (user + system from /proc under autocannon's GET load on the
 * 2-core test machine, 8 measurements in 4 cvmd processes each) was 26.1-30.6 us with `routes()`
 * and 23.0-25.3 us with this. With no router-level middleware
 * (`assertRoutesOnly`) and handlers that answer rather than fall through with `next()`, running the
 * first matching route is what `routes()` does.
 */
export function dispatch(router: Router): Middleware {
  const chains = new WeakMap<Layer, Middleware>();
  return (ctx: Context, next: Next) => {
    const path = ctx.path;
    const match = router.match(path, ctx.method);
    if (!match.route) return next();
    const layer = match.pathAndMethod[0]!;
    const routed = ctx as Routed;
    routed.params = layer.params(path, layer.captures(path));
    routed._matchedRoute = layer.path;
    let chain = chains.get(layer);
    if (chain === undefined) chains.set(layer, (chain = compose(layer.stack as Middleware[])));
    return chain(ctx, next);
  };
}

/** Refuses router-level middleware: `dispatch` runs routes only (mount middleware on each route). */
export function assertRoutesOnly(router: Router): void {
  for (const layer of router.stack) {
    if (layer.methods.length === 0) throw new Error(`router-level middleware at ${String(layer.path)}: mount it on each route instead`);
  }
}

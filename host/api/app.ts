import Koa, { type Context } from "koa";
import Router from "@koa/router";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { ModelCatalogue } from "../gateway/catalogue.js";
import type { LifecycleEngine } from "../instances/engine.js";
import type { ApiKeyStore } from "../store/api-keys.js";
import type { InstanceStore } from "../store/instances.js";
import type { TenantStore } from "../store/tenants.js";
import { ApiError } from "./errors.js";
import { authenticate } from "./middleware/auth.js";
import { requestContext } from "./middleware/context.js";
import { envelope } from "./middleware/envelope.js";
import { openApiDocument } from "./openapi.js";
import { instanceRoutes } from "./routes/instances.js";
import { attestationRoutes } from "./routes/attestation.js";
import type { AttestationService } from "../attest/index.js";
import { usageRoutes, type UsageSources } from "./routes/usage.js";
import { resolveClientAddress, TrustedProxies } from "../ops/client-address.js";
import { httpMetrics } from "../ops/http-metrics.js";
import type { Metrics } from "../ops/metrics.js";
import type { RateLimiter } from "../ops/rate-limit.js";

export interface AppDeps {
  logger: Logger;
  securityLog: Logger;
  clock: Clock;
  tenants: TenantStore;
  keys: ApiKeyStore;
  instances: InstanceStore;
  engine: LifecycleEngine;
  catalogue: ModelCatalogue;
  baseDomain: string;
  usage: Omit<UsageSources, "instances" | "clock">;
  version: string;
  /** True once shutdown began: new requests get 503 while in-flight ones finish. */
  draining(): boolean;
  metrics?: Metrics;
  rateLimiter?: RateLimiter;
  /** Peers whose X-Forwarded-For names the client (none by default). */
  trustedProxies?: TrustedProxies;
  /** Quote verification (the daemon always gives one; without it the attestation routes answer 503). */
  attestation?: AttestationService;
}

/** Builds the Koa app without listening, so tests and the daemon share it. */
export function buildApp(deps: AppDeps): { app: Koa; routes: Array<{ method: string; path: string }> } {
  const app = new Koa();
  app.proxy = false;
  app.silent = true;

  app.use(requestContext(deps.logger));
  app.use(resolveClientAddress(deps.trustedProxies ?? new TrustedProxies([])));
  if (deps.metrics) app.use(httpMetrics(deps.metrics, (ctx) => routeTemplate(ctx)));
  app.use(envelope());
  if (deps.rateLimiter) app.use(deps.rateLimiter.perAddress());
  // Pass-through middleware returns next()'s promise instead of awaiting it: one async frame
  // less per request for each.
  app.use((ctx, next) => {
    if (deps.draining()) {
      ctx.set("Connection", "close");
      ctx.set("Retry-After", "5");
      throw new ApiError("unavailable", "the server is restarting; retry shortly");
    }
    return next();
  });

  const doc = openApiDocument({ version: deps.version, models: deps.catalogue.models.map((m) => m.id) });
  const open = new Router();
  open.get("/v1/openapi.json", (ctx) => {
    ctx.body = doc;
  });

  const auth = authenticate({
    keys: deps.keys,
    tenants: deps.tenants,
    clock: deps.clock,
    onFailure: (ctx: Context, reason, prefix) => {
      deps.securityLog.warn({ event: "auth_failure", reason, key_prefix: prefix, ip: ctx.state.clientAddress ?? ctx.ip, req_id: ctx.state.requestId }, "authentication failed");
      deps.rateLimiter?.authFailed(ctx, reason);
    },
  });
  const guardedAuth = deps.rateLimiter ? deps.rateLimiter.aroundAuth(auth) : auth;
  const tenantApi = new Router();
  // Router middleware runs only when one of this router's routes matched path and method, after
  // the router has named the route: authentication is skipped for unknown paths (not_found for
  // everyone) and the path is matched once per request, not once more for the decision.
  tenantApi.use((ctx, next) => {
    // While this layer runs the router names it, not the route, as the matched route; a request
    // refused here is counted under the route it asked for (its path-matched layers, no regex).
    const matched = ctx.matched ?? [];
    for (let i = matched.length - 1; i >= 0; i--) {
      if (matched[i]!.methods.includes(ctx.method)) {
        (ctx as Context & { _matchedRoute?: string | RegExp })._matchedRoute = matched[i]!.path;
        break;
      }
    }
    return guardedAuth(ctx, next);
  });
  const instances = instanceRoutes({ engine: deps.engine, instances: deps.instances, catalogue: deps.catalogue, baseDomain: deps.baseDomain, clock: deps.clock });
  const usage = usageRoutes({ ...deps.usage, instances: deps.instances, clock: deps.clock });
  tenantApi.use(instances.routes());
  tenantApi.use(usage.routes());
  const attestation = attestationRoutes({ engine: deps.engine, instances: deps.instances, clock: deps.clock, securityLog: deps.securityLog, attestation: deps.attestation });
  tenantApi.use(attestation.routes());

  app.use(open.routes());
  app.use(tenantApi.routes());
  // Reached only when no router matched: the metrics need not match again to learn that.
  app.use((ctx, next) => {
    ctx.state.unrouted = true;
    return next();
  });

  // For requests refused before routing (draining, an address over its limit).
  const routeTemplate = (ctx: Context): string | undefined => {
    if (ctx.state.unrouted === true) return undefined;
    for (const r of [open, tenantApi]) {
      const layers = r.match(ctx.path, ctx.method).pathAndMethod;
      if (layers.length > 0) return String(layers[layers.length - 1]!.path);
    }
    return undefined;
  };

  const routes = [...open.stack, ...instances.stack, ...usage.stack, ...attestation.stack].flatMap((layer) =>
    layer.methods.filter((m) => m !== "HEAD").map((method) => ({ method, path: String(layer.path) })),
  );
  return { app, routes };
}

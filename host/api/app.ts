import Koa, { type Context } from "koa";
import Router from "@koa/router";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { ModelCatalogue } from "../gateway/catalogue.js";
import type { LifecycleEngine } from "../instances/engine.js";
import type { ApiKeyStore } from "../store/api-keys.js";
import type { InstanceStore } from "../store/instances.js";
import { dispatch, matchRoute } from "./dispatch.js";
import { authenticate } from "./middleware/auth.js";
import { requestFrame } from "./middleware/frame.js";
import { openApiDocument } from "./openapi.js";
import { instanceRoutes } from "./routes/instances.js";
import { attestationRoutes } from "./routes/attestation.js";
import type { AttestationService } from "../attest/index.js";
import { usageRoutes, type UsageSources } from "./routes/usage.js";
import { imageRoutes, type ImageManifestSource } from "./routes/images.js";
import { TrustedProxies } from "./middleware/client-address.js";
import type { Metrics } from "../ops/metrics.js";
import type { RateLimiter } from "./middleware/rate-limit.js";

export interface AppDeps {
  logger: Logger;
  securityLog: Logger;
  clock: Clock;
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
  /** Manifests of the images this server has (GET /v1/images/{id}/manifest); without it that route answers not_found. */
  images?: ImageManifestSource;
}

/** Builds the Koa app without listening, so tests and the daemon share it. */
export function buildApp(deps: AppDeps): { app: Koa; routes: Array<{ method: string; path: string }> } {
  const app = new Koa();
  app.proxy = false;
  app.silent = true;

  const doc = openApiDocument({ version: deps.version, catalogue: { models: deps.catalogue.models.map((m) => m.id), default: deps.catalogue.default } });
  // One router for every route, run by `dispatch` (see there): a request is matched once.
  const router = new Router();
  router.get("/v1/openapi.json", (ctx) => {
    ctx.body = doc;
  });

  const auth = authenticate({
    keys: deps.keys,
    clock: deps.clock,
    limiter: deps.rateLimiter,
    onFailure: (ctx: Context, reason, prefix) => {
      deps.securityLog.warn({ event: "auth_failure", reason, key_prefix: prefix, ip: ctx.state.clientAddress ?? ctx.ip, req_id: ctx.state.requestId }, "authentication failed");
      deps.rateLimiter?.authFailed(ctx, reason);
    },
  });
  const instances = instanceRoutes({ engine: deps.engine, instances: deps.instances, catalogue: deps.catalogue, baseDomain: deps.baseDomain, clock: deps.clock });
  const usage = usageRoutes({ ...deps.usage, instances: deps.instances, clock: deps.clock });
  const attestation = attestationRoutes({ engine: deps.engine, instances: deps.instances, clock: deps.clock, securityLog: deps.securityLog, attestation: deps.attestation });
  // Every tenant route is mounted with authentication in front. Authentication runs only once a
  // route matched path and method, so an unknown path is not_found for everyone, and a request it
  // refuses is counted under the route it asked for (the router names the route first).
  const images = imageRoutes({ images: deps.images });
  const tenantLayers = [...instances.stack, ...usage.stack, ...attestation.stack, ...images.stack];
  for (const layer of tenantLayers) {
    router.register(layer.path, layer.methods.filter((m) => m !== "HEAD"), [auth, ...layer.stack]);
  }

  app.use(
    requestFrame({
      logger: deps.logger,
      trustedProxies: deps.trustedProxies ?? new TrustedProxies([]),
      draining: deps.draining,
      metrics: deps.metrics,
      rateLimiter: deps.rateLimiter,
      // For requests refused before routing (draining, an address over its limit).
      routeOf: (ctx) => matchRoute(router, ctx.path, ctx.method)?.path,
    }),
  );
  app.use(dispatch(router));

  const routes = router.stack.flatMap((layer) =>
    layer.methods.filter((m) => m !== "HEAD").map((method) => ({ method, path: String(layer.path) })),
  );
  return { app, routes };
}

import { createHash } from "node:crypto";
import Router from "@koa/router";
import type { Context } from "koa";
import {
  CreateInstanceHeaders,
  createInstanceBody,
  encodeCursor,
  INSTANCE_NAME_PATTERN,
  isoSeconds,
  LIST_LIMIT_DEFAULT,
  ListInstancesQuery,
  type InstanceEventList,
} from "../../../shared/api/schemas.js";
import type { ModelCatalogue } from "../../gateway/catalogue.js";
import type { LifecycleEngine } from "../../instances/engine.js";
import { toRecord } from "../../instances/record.js";
import type { Clock } from "../../clock.js";
import type { Instance, InstanceStore } from "../../store/instances.js";
import type { Tenant } from "../../store/tenants.js";
import { readJsonBody } from "../middleware/body.js";
import { respond, respondSerialized } from "../middleware/envelope.js";
import { ApiError } from "../errors.js";
import { parseInput } from "../validate.js";

export interface InstanceRouteDeps {
  engine: LifecycleEngine;
  instances: InstanceStore;
  catalogue: ModelCatalogue;
  baseDomain: string;
  clock: Clock;
}

/** Stable JSON (sorted keys) so that key order does not make two equal bodies differ. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v);
}

/**
 * The authenticated tenant's instance named in the path; anything else (other tenant's included)
 * is not_found. `cached` (read-only handlers) serves it from the store's invalidated cache.
 */
export async function loadInstance(ctx: Context, instances: InstanceStore, cached = false): Promise<Instance> {
  const name = ctx.params.name as string;
  const tenant = ctx.state.tenant as Tenant;
  const valid = INSTANCE_NAME_PATTERN.test(name);
  const inst = !valid ? undefined : cached ? await instances.byNameCached(tenant.id, name) : await instances.byName(tenant.id, name);
  if (!inst) throw new ApiError("not_found", `instance ${name.slice(0, 64)} not found`);
  return inst;
}

export function instanceRoutes(deps: InstanceRouteDeps): Router {
  const router = new Router();
  const record = (ctx: Context, inst: Instance) => toRecord(inst, (ctx.state.tenant as Tenant).slug, deps.baseDomain);
  const load = (ctx: Context) => loadInstance(ctx, deps.instances);
  // Cached instances are shared frozen objects (InstanceStore.byNameCached), so their rendered
  // JSON can be kept beside them and dropped with them.
  const rendered = new WeakMap<Instance, { slug: string; json: string }>();
  const renderedJson = (ctx: Context, inst: Instance): string => {
    const slug = (ctx.state.tenant as Tenant).slug;
    const hit = rendered.get(inst);
    if (hit && hit.slug === slug) return hit.json;
    const json = JSON.stringify(record(ctx, inst));
    if (Object.isFrozen(inst)) rendered.set(inst, { slug, json });
    return json;
  };

  const createBody = createInstanceBody({ models: deps.catalogue.models.map((m) => m.id), default: deps.catalogue.default });

  router.post("/v1/instances", async (ctx) => {
    const tenant = ctx.state.tenant as Tenant;
    const keyHeader = parseInput(CreateInstanceHeaders, { "Idempotency-Key": ctx.get("Idempotency-Key") || undefined })["Idempotency-Key"];
    const body = await readJsonBody(ctx);
    const input = parseInput(createBody, body);
    const outcome = await deps.engine.create(
      tenant,
      { publicKey: input.public_key, agent: input.agent, inferenceMode: input.inference_mode, inferenceModel: input.inference_model },
      keyHeader
        ? {
            key: keyHeader,
            requestHash: createHash("sha256").update(canonicalJson(body)).digest("hex"),
            render: (inst) => record(ctx, inst),
          }
        : undefined,
    );
    switch (outcome.kind) {
      case "idempotency_conflict":
        throw new ApiError("conflict", "Idempotency-Key was already used with a different request body", { param: "Idempotency-Key" });
      case "replayed":
        ctx.set("Idempotent-Replayed", "true");
        return respond(ctx, outcome.statusCode, outcome.response);
      case "created":
        ctx.set("Location", `/v1/instances/${outcome.instance.name}`);
        return respond(ctx, 202, record(ctx, outcome.instance));
    }
  });

  router.get("/v1/instances", async (ctx) => {
    const tenant = ctx.state.tenant as Tenant;
    const query = parseInput(ListInstancesQuery, ctx.query);
    const limit = query.limit ?? LIST_LIMIT_DEFAULT;
    const after = query.cursor ?? null;
    const since = new Date(deps.clock.now().getTime() - deps.engine.retentionMs);
    const page = await deps.instances.pageForTenantCached(tenant.id, since, after, limit);
    const last = page.instances[page.instances.length - 1];
    const next = page.more && last ? encodeCursor({ createdAtMs: last.createdAt.getTime(), name: last.name }) : null;
    // Each record's JSON is kept beside its cached (frozen) instance, as for GET /v1/instances/{name}.
    respondSerialized(ctx, 200, `{"instances":[${page.instances.map((i) => renderedJson(ctx, i)).join(",")}],"next_cursor":${JSON.stringify(next)}}`);
  });

  // The hot read: served from memory without waiting a turn of the event loop when cached.
  router.get("/v1/instances/:name", (ctx) => {
    const cached = deps.instances.cachedByName((ctx.state.tenant as Tenant).id, ctx.params.name as string);
    if (cached) return respondSerialized(ctx, 200, renderedJson(ctx, cached));
    return loadInstance(ctx, deps.instances, true).then((inst) => respondSerialized(ctx, 200, renderedJson(ctx, inst)));
  });

  router.delete("/v1/instances/:name", async (ctx) => {
    const inst = await deps.engine.delete(await load(ctx));
    respond(ctx, 202, record(ctx, inst));
  });

  router.get("/v1/instances/:name/events", async (ctx) => {
    const inst = await load(ctx);
    const events = await deps.engine.events(inst);
    respond(ctx, 200, {
      events: events.map((e) => ({ seq: e.seq, type: e.type, from_status: e.from_status, to_status: e.to_status, message: e.message, at: isoSeconds(new Date(e.at)) })),
      next_cursor: null,
    } satisfies InstanceEventList);
  });

  return router;
}

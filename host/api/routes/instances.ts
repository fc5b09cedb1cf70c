import { createHash } from "node:crypto";
import Router from "@koa/router";
import type { Context } from "koa";
import { isoSeconds } from "../../../shared/api/types.js";
import { parsePublicKey, PublicKeyError } from "../../../shared/ssh/public-key.js";
import type { ModelCatalogue } from "../../gateway/catalogue.js";
import type { CreateInput, LifecycleEngine } from "../../instances/engine.js";
import { INSTANCE_NAME_PATTERN } from "../../instances/names.js";
import { toRecord } from "../../instances/record.js";
import type { Clock } from "../../clock.js";
import type { Instance, InstancePosition, InstanceStore } from "../../store/instances.js";
import type { Tenant } from "../../store/tenants.js";
import { readJsonBody } from "../middleware/body.js";
import { respond, respondSerialized } from "../middleware/envelope.js";
import { ApiError } from "../errors.js";

export interface InstanceRouteDeps {
  engine: LifecycleEngine;
  instances: InstanceStore;
  catalogue: ModelCatalogue;
  baseDomain: string;
  clock: Clock;
}

const CREATE_FIELDS = new Set(["public_key", "agent", "inference_mode", "inference_model"]);
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

/** Parses the create body into a typed command, or says exactly which field is wrong. */
export function parseCreateBody(body: Record<string, unknown>, catalogue: ModelCatalogue): CreateInput {
  for (const k of Object.keys(body)) {
    if (!CREATE_FIELDS.has(k)) throw new ApiError("invalid_request", `unknown field: ${k}`, { param: k });
  }
  if (body.public_key === undefined || body.public_key === null) throw new ApiError("invalid_request", "public_key is required", { param: "public_key" });
  let publicKey: string;
  try {
    publicKey = parsePublicKey(body.public_key).canonical;
  } catch (err) {
    if (!(err instanceof PublicKeyError)) throw err;
    throw new ApiError("invalid_request", `public_key must be an ed25519 or ecdsa OpenSSH public key: ${err.message}`, { param: "public_key" });
  }
  const str = (k: string, fallback: string, allowed: readonly string[], what: string): string => {
    const v = body[k];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "string" || !allowed.includes(v)) throw new ApiError("invalid_request", `${k} must be ${what}`, { param: k });
    return v;
  };
  const models = catalogue.models.map((m) => m.id);
  return {
    publicKey,
    agent: str("agent", "openclaw", ["openclaw"], '"openclaw"'),
    inferenceMode: str("inference_mode", "default_gateway", ["default_gateway"], '"default_gateway"'),
    inferenceModel: str("inference_model", catalogue.default, models, `one of: ${models.join(", ")}`),
  };
}

export const LIST_LIMIT_DEFAULT = 100;
export const LIST_LIMIT_MAX = 1000;

/**
 * The list cursor: the sort keys of the last instance of the page. Opaque to clients (base64url
 * with a version tag), so its content can change without a contract change.
 */
export function encodeCursor(p: InstancePosition): string {
  return "c1" + Buffer.from(`${p.createdAtMs}:${p.name}`).toString("base64url");
}

export function decodeCursor(cursor: string): InstancePosition | null {
  if (cursor.length > 64 || !cursor.startsWith("c1")) return null;
  const m = /^(\d{1,15}):([a-z0-9]{8})$/.exec(Buffer.from(cursor.slice(2), "base64url").toString());
  return m ? { createdAtMs: Number(m[1]), name: m[2]! } : null;
}

/** `?limit=N&cursor=C` of GET /v1/instances, or which parameter is wrong. */
export function parseListQuery(query: Record<string, string | string[] | undefined>): { limit: number; after: InstancePosition | null } {
  let limit = LIST_LIMIT_DEFAULT;
  if (query.limit !== undefined) {
    const v = query.limit;
    if (typeof v !== "string" || !/^[0-9]{1,4}$/.test(v) || Number(v) < 1 || Number(v) > LIST_LIMIT_MAX) {
      throw new ApiError("invalid_request", `limit must be an integer from 1 to ${LIST_LIMIT_MAX}`, { param: "limit" });
    }
    limit = Number(v);
  }
  let after: InstancePosition | null = null;
  if (query.cursor !== undefined) {
    const v = query.cursor;
    after = typeof v === "string" ? decodeCursor(v) : null;
    if (!after) throw new ApiError("invalid_request", "cursor is not one this API returned as next_cursor", { param: "cursor" });
  }
  return { limit, after };
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

  router.post("/v1/instances", async (ctx) => {
    const tenant = ctx.state.tenant as Tenant;
    const keyHeader = ctx.get("Idempotency-Key");
    if (keyHeader && !IDEMPOTENCY_KEY.test(keyHeader)) {
      throw new ApiError("invalid_request", "Idempotency-Key must be 1 to 255 printable ASCII characters", { param: "Idempotency-Key" });
    }
    const body = await readJsonBody(ctx);
    const input = parseCreateBody(body, deps.catalogue);
    const outcome = await deps.engine.create(
      tenant,
      input,
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
    const { limit, after } = parseListQuery(ctx.query);
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
    });
  });

  return router;
}

import Router from "@koa/router";
import { isoSeconds, type UsageRecord } from "../../../shared/api/schemas.js";
import type { Clock } from "../../clock.js";
import type { InstanceStore } from "../../store/instances.js";
import { ReadCache, UNSIGNALLED_CHANGE_MAX_AGE_MS } from "../../store/read-cache.js";
import type { Tenant } from "../../store/tenants.js";
import { billingWindow, instanceHoursFromSums } from "../../usage/billing.js";
import { respond } from "../middleware/envelope.js";

export interface UsageSources {
  instances: InstanceStore;
  clock: Clock;
  egressLimitBytes: number;
  /** Inference spend in the window as a decimal string with cents. */
  inferenceCostUsd(tenantId: number, from: Date, to: Date): Promise<string>;
  /** Egress view for the tenant's active instances (zeros until samples exist). */
  egress(tenantId: number): Promise<{ bytes: number; observedAt: Date | null; blocked: boolean; blockAppliedAt: Date | null }>;
}

export async function usageFor(tenant: Tenant, src: UsageSources): Promise<UsageRecord> {
  const now = src.clock.now();
  const window = billingWindow(tenant.createdAt, now);
  // Summed by SQLite and kept until an instance changes: a tenant with thousands of instances
  // must not cost a read of each of them per call.
  const hours = instanceHoursFromSums(await src.instances.billableCached(tenant.id, window.start, window.end), window, now);
  const egress = await src.egress(tenant.id);
  return {
    pricing: {
      period_start: isoSeconds(window.start),
      period_end: isoSeconds(window.end),
      subscription_cost_usd: tenant.subscriptionCostUsd,
      instance_hours_included: tenant.instanceHoursIncluded,
      overage_per_hour_usd: tenant.overagePerHourUsd,
    },
    usage: {
      instance_hours_used: hours,
      inference_cost_usd: await src.inferenceCostUsd(tenant.id, window.start, window.end),
      egress_bytes: egress.bytes,
      egress_limit_bytes: src.egressLimitBytes,
      egress_observed_at: egress.observedAt ? isoSeconds(egress.observedAt) : null,
      egress_blocked: egress.blocked,
      egress_block_applied_at: egress.blockAppliedAt ? isoSeconds(egress.blockAppliedAt) : null,
    },
  };
}

type EgressView = Awaited<ReturnType<UsageSources["egress"]>>;

export function usageRoutes(src: UsageSources): Router {
  const router = new Router();
  // The egress totals join every live instance of the tenant; egress samples and instance changes
  // both move the instances' generation, so the totals are kept until one of them happens.
  const egressCache = new ReadCache<number, EgressView>(10_000, UNSIGNALLED_CHANGE_MAX_AGE_MS);
  const egress = async (tenantId: number): Promise<EgressView> => {
    const generation = src.instances.generation();
    const hit = egressCache.get(tenantId, generation);
    if (hit) return hit;
    const view = await src.egress(tenantId);
    egressCache.set(tenantId, generation, view);
    return view;
  };
  const cached: UsageSources = { ...src, egress };
  router.get("/v1/usage", async (ctx) => respond(ctx, 200, await usageFor(ctx.state.tenant as Tenant, cached)));
  return router;
}

import Router from "@koa/router";
import type { Context } from "koa";
import type { Logger } from "pino";
import { AttestationQuery, VerifyQuoteBody, type InstanceAttestation } from "../../../shared/api/schemas.js";
import type { AttestationService } from "../../attest/index.js";
import type { Clock } from "../../clock.js";
import { AttestationUnavailableError } from "../../drivers/driver.js";
import type { LifecycleEngine } from "../../instances/engine.js";
import type { Instance, InstanceStore } from "../../store/instances.js";
import type { Tenant } from "../../store/tenants.js";
import { ApiError } from "../errors.js";
import { readJsonBody } from "../middleware/body.js";
import { respond } from "../middleware/envelope.js";
import { parseInput } from "../validate.js";
import { loadInstance } from "./instances.js";

export interface AttestationRouteDeps {
  engine: LifecycleEngine;
  instances: InstanceStore;
  clock: Clock;
  securityLog: Logger;
  /** Absent only where the app is built without a daemon (route listing); requests then get 503. */
  attestation?: AttestationService;
}

export function attestationRoutes(deps: AttestationRouteDeps): Router {
  const router = new Router();
  const service = (): AttestationService => {
    if (!deps.attestation) throw new ApiError("unavailable", "attestation is not available on this server");
    return deps.attestation;
  };

  const load = (ctx: Context): Promise<Instance> => loadInstance(ctx, deps.instances);

  router.get("/v1/instances/:name/attestation", async (ctx) => {
    const query = parseInput(AttestationQuery, ctx.query);
    const nonce = query.nonce;
    const allowUnchecked = query.allow_unchecked ?? [];
    const svc = service();
    const inst = await load(ctx);
    if (inst.status !== "ready") throw new ApiError("conflict", `instance ${inst.name} is ${inst.status}; attestation needs a ready instance`);

    let ev;
    try {
      ev = await deps.engine.attest(inst, nonce);
    } catch (err) {
      if (err instanceof AttestationUnavailableError) throw new ApiError("unavailable", err.message, { headers: { "Retry-After": "5" } });
      throw err;
    }
    const base = { name: inst.name, nonce: nonce.toString("hex") };
    if (!ev) {
      return respond(ctx, 200, {
        ...base,
        available: false,
        reason: `the ${deps.engine.driverName} driver's guests cannot produce TDX quotes`,
        event_log: [],
        measurements: null,
        verdict: null,
      } satisfies InstanceAttestation);
    }
    if (!ev.available) {
      return respond(ctx, 200, { ...base, available: false, reason: ev.reason, event_log: ev.eventLog, measurements: null, verdict: null } satisfies InstanceAttestation);
    }
    const { verdict, measurements } = await svc.checkInstance(ev, nonce, { allowUnchecked });
    if (!verdict.ok) {
      deps.securityLog.warn(
        { event: "attestation_rejected", instance: inst.name, tenant: (ctx.state.tenant as Tenant).slug, reason: verdict.reason, req_id: ctx.state.requestId },
        "instance attestation did not verify",
      );
    }
    respond(ctx, 200, {
      ...base,
      available: true,
      quote: ev.quote.toString("base64"),
      report_data: ev.reportData.toString("hex"),
      host_keys: ev.hostKeys,
      event_log: ev.eventLog,
      measurements,
      image_id: ev.image?.id ?? null,
      verdict,
    } satisfies InstanceAttestation);
  });

  router.post("/v1/attestation/verify", async (ctx) => {
    const body = parseInput(VerifyQuoteBody, await readJsonBody(ctx));
    const expected = body.expected_measurements ? { expected_measurements: body.expected_measurements } : undefined;
    const opts = { collateral: body.collateral ?? undefined, at: body.at ?? deps.clock.now(), reportData: body.report_data ?? undefined, expected, allowUnchecked: body.allow_unchecked ?? [] };
    respond(ctx, 200, await service().verifyQuote(body.quote, opts));
  });

  return router;
}

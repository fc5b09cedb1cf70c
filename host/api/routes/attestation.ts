import Router from "@koa/router";
import type { Context } from "koa";
import type { Logger } from "pino";
import {
  CollateralError,
  ManifestError,
  MAX_QUOTE_BYTES,
  parseCollateral,
  parseManifest,
  parseWaivers,
  type Collateral,
  type ImageManifest,
  type ManifestMeasurement,
} from "../../../shared/tdx/index.js";
import type { AttestationService } from "../../attest/index.js";
import type { Clock } from "../../clock.js";
import { AttestationUnavailableError } from "../../drivers/driver.js";
import type { LifecycleEngine } from "../../instances/engine.js";
import type { Instance, InstanceStore } from "../../store/instances.js";
import type { Tenant } from "../../store/tenants.js";
import { ApiError } from "../errors.js";
import { readJsonBody } from "../middleware/body.js";
import { respond } from "../middleware/envelope.js";
import { loadInstance } from "./instances.js";

export interface AttestationRouteDeps {
  engine: LifecycleEngine;
  instances: InstanceStore;
  clock: Clock;
  securityLog: Logger;
  /** Absent only where the app is built without a daemon (route listing); requests then get 503. */
  attestation?: AttestationService;
}

export const NONCE_MIN_BYTES = 16;
export const NONCE_MAX_BYTES = 64;
const VERIFY_FIELDS = new Set(["quote", "collateral", "at", "report_data", "expected_measurements", "allow_unchecked"]);
const HEX = /^(?:[0-9a-fA-F]{2})+$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$/;

/** The tenant's nonce: hex, 16 to 64 bytes; the agent binds it into REPORTDATA. */
export function parseNonce(v: unknown): Buffer {
  if (v === undefined) throw new ApiError("invalid_request", "nonce is required (hex, 16 to 64 bytes)", { param: "nonce" });
  if (typeof v !== "string" || !HEX.test(v)) throw new ApiError("invalid_request", "nonce must be an even number of hex digits", { param: "nonce" });
  const n = v.length / 2;
  if (n < NONCE_MIN_BYTES || n > NONCE_MAX_BYTES) {
    throw new ApiError("invalid_request", `nonce must be ${NONCE_MIN_BYTES} to ${NONCE_MAX_BYTES} bytes, got ${n}`, { param: "nonce" });
  }
  return Buffer.from(v, "hex");
}

/**
 * A quote as text: hex when the string is nothing but hex digits (even length), otherwise canonical
 * base64 (standard alphabet, padded; surrounding whitespace and line breaks are ignored).
 */
export function parseQuoteText(v: unknown): Buffer {
  if (v === undefined || v === null) throw new ApiError("invalid_request", "quote is required (base64 or hex)", { param: "quote" });
  if (typeof v !== "string") throw new ApiError("invalid_request", "quote must be a base64 or hex string", { param: "quote" });
  const text = v.replace(/\s+/g, "");
  let bytes: Buffer;
  if (HEX.test(text)) bytes = Buffer.from(text, "hex");
  else if (text.length > 0 && BASE64.test(text)) bytes = Buffer.from(text, "base64");
  else throw new ApiError("invalid_request", "quote is neither base64 nor hex", { param: "quote" });
  if (bytes.length === 0) throw new ApiError("invalid_request", "quote is empty", { param: "quote" });
  if (bytes.length > MAX_QUOTE_BYTES) throw new ApiError("invalid_request", `quote exceeds ${MAX_QUOTE_BYTES} bytes`, { param: "quote" });
  return bytes;
}

/** ISO 8601 with a time zone, or Unix seconds (number or digit string). */
export function parseAt(v: unknown): Date {
  let d: Date | undefined;
  if (typeof v === "number" && Number.isFinite(v) && v >= 0) d = new Date(v * 1000);
  else if (typeof v === "string" && /^\d{1,12}$/.test(v)) d = new Date(Number(v) * 1000);
  else if (typeof v === "string" && ISO_8601.test(v)) d = new Date(v);
  if (!d || Number.isNaN(d.getTime())) {
    throw new ApiError("invalid_request", "at must be an ISO 8601 time with a zone (2025-07-19T10:00:34Z) or Unix seconds", { param: "at" });
  }
  return d;
}

/** Registers the caller accepts unchecked where the manifest has no value: "rtmr0,rtmr1" (query) or a list (body). */
export function parseAllowUnchecked(v: unknown): ManifestMeasurement[] {
  if (v === undefined || v === null) return [];
  try {
    return parseWaivers(v);
  } catch (e) {
    if (!(e instanceof ManifestError)) throw e;
    throw new ApiError("invalid_request", e.message.replace(/^allow-unchecked/, "allow_unchecked"), { param: "allow_unchecked" });
  }
}

export function attestationRoutes(deps: AttestationRouteDeps): Router {
  const router = new Router();
  const service = (): AttestationService => {
    if (!deps.attestation) throw new ApiError("unavailable", "attestation is not available on this server");
    return deps.attestation;
  };

  const load = (ctx: Context): Promise<Instance> => loadInstance(ctx, deps.instances);

  router.get("/v1/instances/:name/attestation", async (ctx) => {
    const nonce = parseNonce(ctx.query.nonce);
    const allowUnchecked = parseAllowUnchecked(ctx.query.allow_unchecked);
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
      });
    }
    if (!ev.available) {
      return respond(ctx, 200, { ...base, available: false, reason: ev.reason, event_log: ev.eventLog, measurements: null, verdict: null });
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
    });
  });

  router.post("/v1/attestation/verify", async (ctx) => {
    const body = await readJsonBody(ctx);
    for (const k of Object.keys(body)) {
      if (!VERIFY_FIELDS.has(k)) throw new ApiError("invalid_request", `unknown field: ${k}`, { param: k });
    }
    const quote = parseQuoteText(body.quote);
    let collateral: Collateral | undefined;
    if (body.collateral !== undefined && body.collateral !== null) {
      try {
        collateral = parseCollateral(body.collateral);
      } catch (e) {
        if (!(e instanceof CollateralError)) throw e;
        throw new ApiError("invalid_request", `collateral: ${e.message}`, { param: "collateral" });
      }
    }
    const at = body.at === undefined || body.at === null ? undefined : parseAt(body.at);
    let reportData: Buffer | undefined;
    if (body.report_data !== undefined && body.report_data !== null) {
      if (typeof body.report_data !== "string" || !/^[0-9a-fA-F]{128}$/.test(body.report_data)) {
        throw new ApiError("invalid_request", "report_data must be 64 bytes of hex", { param: "report_data" });
      }
      reportData = Buffer.from(body.report_data, "hex");
    }
    let expected: ImageManifest | undefined;
    if (body.expected_measurements !== undefined && body.expected_measurements !== null) {
      try {
        expected = parseManifest({ expected_measurements: body.expected_measurements });
      } catch (e) {
        if (!(e instanceof ManifestError)) throw e;
        throw new ApiError("invalid_request", e.message, { param: "expected_measurements" });
      }
    }
    const allowUnchecked = parseAllowUnchecked(body.allow_unchecked);
    if (allowUnchecked.length && !expected) {
      throw new ApiError("invalid_request", "allow_unchecked waives registers of expected_measurements, which is missing", { param: "allow_unchecked" });
    }
    respond(ctx, 200, await service().verifyQuote(quote, { collateral, at: at ?? deps.clock.now(), reportData, expected, allowUnchecked }));
  });

  return router;
}

import {
  applyTcbPolicy,
  checkEventLog,
  DEFAULT_ACCEPTED_TCB_STATUSES,
  compareMeasurements,
  ManifestError,
  measurementsOf,
  NotTdxQuoteError,
  parseManifest,
  parseQuote,
  pckInfoOf,
  PkiError,
  QuoteFormatError,
  reportDataFor,
  type Collateral,
  type EventLogCheck,
  type ImageManifest,
  type ManifestMeasurement,
  type Measurements,
  type PckInfo,
  type QuoteVerifier,
  type TcbStatus,
  type VerifyStage,
} from "../../shared/tdx/index.js";
import type { InstanceVerdict, ManifestCheck, QuoteCheck, QuoteVerification, ReportDataCheck } from "../../shared/api/schemas.js";
import type { Clock } from "../clock.js";
import type { AttestationEvidence, BootedImage } from "../drivers/driver.js";
import type { Metrics, QuoteVerdict } from "../ops/metrics.js";
import type { CollateralOrigin, CollateralProvider } from "./collateral-provider.js";

// The answers' shapes (QuoteCheck, QuoteVerification, ReportDataCheck, ManifestCheck, InstanceVerdict)
// are the API's, defined once in shared/api/schemas.ts.
export type { InstanceVerdict, ManifestCheck, QuoteCheck, QuoteVerification, ReportDataCheck };

export interface AttestationServiceDeps {
  /** One per daemon: its cache keeps verified collateral, PCK chains and QE reports warm. */
  verifier: QuoteVerifier;
  collateral: CollateralProvider;
  clock: Clock;
  metrics?: Metrics;
  /** The operator's TCB policy (CVM_ACCEPT_TCB_STATUS); default UpToDate only, as cvm-verify. */
  acceptTcbStatuses?: readonly TcbStatus[];
}

function parseFailure(e: unknown): { stage: VerifyStage; code: string } {
  if (e instanceof NotTdxQuoteError) return { stage: "parse", code: "not_tdx" };
  if (e instanceof QuoteFormatError) return { stage: "parse", code: "malformed_quote" };
  if (e instanceof PkiError) return { stage: "pck_chain", code: e.code };
  return { stage: "internal", code: "error" };
}

function measurementsIfParsed(quote: Buffer): Measurements | null {
  try {
    return measurementsOf(parseQuote(quote).report);
  } catch {
    return null;
  }
}


export function checkReportData(nonce: Buffer, hostKeys: string[], actual: string | null): ReportDataCheck {
  const expected = reportDataFor(nonce, hostKeys).toString("hex");
  if (actual === null) return { ok: false, expected, actual, reason: "the quote does not parse, so its REPORTDATA is unknown" };
  const ok = actual.toLowerCase() === expected;
  return {
    ok,
    expected,
    actual: actual.toLowerCase(),
    reason: ok ? null : "the quote's REPORTDATA is not SHA-512 over this nonce and the instance's SSH host keys",
  };
}

export function checkManifest(m: Measurements | null, image: BootedImage | undefined, allowUnchecked: readonly ManifestMeasurement[] = []): ManifestCheck {
  if (!image) return { ok: false, image_id: null, reason: "the image this instance booted from is not known; measurements not checked" };
  if (!m) return { ok: false, image_id: image.id, reason: "the quote does not parse; measurements not checked" };
  let manifest;
  try {
    // Build notes beside the four values are skipped by parseManifest.
    manifest = parseManifest({ expected_measurements: image.expectedMeasurements ?? {} });
  } catch (e) {
    if (!(e instanceof ManifestError)) throw e;
    return { ok: false, image_id: image.id, reason: `image ${image.id} manifest: ${e.message}` };
  }
  const r = compareMeasurements(m, manifest, { allowUnchecked });
  return { ...r, image_id: image.id, reason: r.ok ? null : `image ${image.id}: ${r.reason}` };
}

/**
 * The host's side of attestation: DCAP verification with collateral from the configured source, and
 * for an instance the checks that tie a quote to it (REPORTDATA over the tenant's nonce and the SSH
 * host keys, measurements against its image manifest, RTMR3 against the event log). Never throws for
 * a bad quote: every outcome is a verdict with a reason; each one is counted in the metrics.
 */
export class AttestationService {
  constructor(private readonly d: AttestationServiceDeps) {}

  get collateralConfigured(): boolean {
    return this.d.collateral.configured;
  }

  /**
   * POST /v1/attestation/verify: a caller's quote, optionally with collateral, time, expected REPORTDATA
   * and expected measurements (compared fail-closed, with the caller's waivers).
   */
  async verifyQuote(
    quote: Buffer,
    opts: { collateral?: Collateral; at?: Date; reportData?: Buffer; expected?: ImageManifest; allowUnchecked?: readonly ManifestMeasurement[] } = {},
  ): Promise<QuoteVerification> {
    const q = await this.dcap(quote, opts);
    const out: QuoteVerification = { ...q };
    const fail = (reason: string | null, failure: QuoteCheck["failure"]) => {
      if (!out.ok) return;
      out.ok = false;
      out.reason = reason;
      out.failure = failure;
    };
    if (opts.reportData) {
      const expected = opts.reportData.toString("hex");
      const actual = q.measurements?.report_data ?? null;
      out.report_data = {
        ok: actual === expected,
        expected,
        actual,
        reason: actual === null ? "the quote does not parse, so its REPORTDATA is unknown" : actual === expected ? null : "the quote's REPORTDATA differs from report_data",
      };
      if (!out.report_data.ok) fail(out.report_data.reason, { stage: "report_data", code: "mismatch" });
    }
    if (opts.expected) {
      if (q.measurements) {
        const r = compareMeasurements(q.measurements, opts.expected, { allowUnchecked: opts.allowUnchecked });
        out.manifest = r;
        if (!r.ok) fail(r.reason, { stage: "measurements", code: r.mismatched.length ? "mismatch" : "unchecked" });
      } else out.manifest = { ok: false, reason: "the quote does not parse; measurements not compared" };
    }
    this.count(q, out.ok);
    return out;
  }

  /** GET /v1/instances/{name}/attestation: the evidence a ready instance's agent returned for `nonce`. */
  async checkInstance(
    ev: Extract<AttestationEvidence, { available: true }>,
    nonce: Buffer,
    opts: { allowUnchecked?: readonly ManifestMeasurement[] } = {},
  ): Promise<{ verdict: InstanceVerdict; measurements: Measurements | null }> {
    const allowUnchecked = [...(opts.allowUnchecked ?? [])];
    const q = await this.dcap(ev.quote, {});
    const rd = checkReportData(nonce, ev.hostKeys, q.measurements?.report_data ?? null);
    const measurements = checkManifest(q.measurements, ev.image, allowUnchecked);
    const eventLog: EventLogCheck = q.measurements
      ? checkEventLog(ev.eventLog, q.measurements.rtmr3)
      : { ok: false, expected: "", events: ev.eventLog.length, reason: "the quote does not parse; RTMR3 unknown" };
    const failed = (
      [
        ["quote", q.ok, q.reason],
        ["report_data", rd.ok, rd.reason],
        ["measurements", measurements.ok, measurements.reason],
        ["event_log", eventLog.ok, eventLog.reason],
      ] as const
    ).find(([, ok]) => !ok);
    const verdict: InstanceVerdict = {
      ok: !failed,
      reason: failed ? `${failed[0]}: ${failed[2] ?? "failed"}` : null,
      status: q.status,
      advisory_ids: q.advisory_ids,
      fmspc: q.fmspc,
      tcb: q.tcb,
      at: q.at,
      collateral_source: q.collateral_source,
      accepted_statuses: q.accepted_statuses,
      allow_unchecked: allowUnchecked,
      checks: {
        quote: { ok: q.ok, reason: q.reason, failure: q.failure },
        report_data: { ...rd, agent_reported: ev.reportData.toString("hex") },
        measurements,
        event_log: eventLog,
      },
    };
    this.count(q, verdict.ok);
    return { verdict, measurements: q.measurements };
  }

  private count(q: QuoteCheck, ok: boolean): void {
    // "error": the host could not verify at all (no collateral, or a fault of its own), as opposed to a quote that failed.
    const couldNotVerify = q.failure?.code === "collateral_unavailable" || q.failure?.stage === "internal";
    const v: QuoteVerdict = ok ? "accepted" : couldNotVerify ? "error" : "rejected";
    this.d.metrics?.observeQuoteVerification(v);
  }

  private async dcap(quote: Buffer, opts: { collateral?: Collateral; at?: Date }): Promise<QuoteCheck> {
    const at = opts.at ?? this.d.clock.now();
    const accepted = [...(this.d.acceptTcbStatuses ?? DEFAULT_ACCEPTED_TCB_STATUSES)];
    const base = (over: Partial<QuoteCheck>): QuoteCheck => ({
      ok: false,
      status: null,
      advisory_ids: [],
      reason: null,
      failure: null,
      fmspc: null,
      measurements: measurementsIfParsed(quote),
      quote: null,
      tcb: null,
      pck: null,
      at: at.toISOString(),
      collateral_source: null,
      accepted_statuses: accepted,
      ...over,
    });

    let collateral = opts.collateral;
    let source: CollateralOrigin = "request";
    if (!collateral) {
      let pck: PckInfo;
      try {
        pck = pckInfoOf(quote);
      } catch (e) {
        return base({ reason: (e as Error).message, failure: parseFailure(e) });
      }
      const found = await this.d.collateral.collateralFor(pck);
      if (!found.collateral) return base({ fmspc: pck.fmspc, reason: found.reason, failure: { stage: "collateral", code: "collateral_unavailable" } });
      collateral = found.collateral;
      source = found.source;
    }

    const v = await this.d.verifier.verify(quote, collateral, at);
    // The same policy function as cvm-verify: a DCAP-valid quote with a status the operator did not
    // accept is not ok here either.
    const policy = applyTcbPolicy(v, accepted);
    const notAccepted = v.ok && !policy.ok;
    return {
      ok: policy.ok,
      status: v.status,
      advisory_ids: v.advisory_ids,
      reason: notAccepted ? `${policy.reason}; the operator accepts more with CVM_ACCEPT_TCB_STATUS` : (v.reason ?? null),
      failure: notAccepted ? { stage: "policy", code: "tcb_status_not_accepted" } : (v.failure ?? null),
      fmspc: v.fmspc,
      measurements: v.measurements,
      quote: v.quote,
      tcb: v.tcb ?? null,
      pck: v.pck ?? null,
      at: v.at,
      collateral_source: source,
      accepted_statuses: accepted,
    };
  }
}

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import { INSTANCE_STATUSES, type InstanceStatus } from "../../shared/api/schemas.js";
import { ApiRequestMetrics } from "./api-request-metrics.js";
import { FAILURE_CODES } from "../drivers/failure-codes.js";
import type { InstanceEventNotice } from "../store/instances.js";

/** Outcome of verifying a guest's TDX quote, as the attestation code reports it. */
export const QUOTE_VERDICTS = ["accepted", "rejected", "error"] as const;
export type QuoteVerdict = (typeof QUOTE_VERDICTS)[number];

export const RATE_LIMIT_SCOPES = ["address", "key", "auth"] as const;
export type RateLimitScope = (typeof RATE_LIMIT_SCOPES)[number];

const HTTP_METHODS = new Set(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]);

/**
 * cvmd's Prometheus metrics, in a registry of its own (never the process-global one, so several
 * daemons in one test process do not collide). Components that produce a figure get this object
 * in their dependencies and call its methods; metrics whose producer is not wired yet still exist
 * at 0, so dashboards and alerts can be written against them today.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly api: ApiRequestMetrics;
  private readonly phaseDuration: Histogram<"phase">;
  private readonly failures: Counter<"failure_code">;
  private readonly quotes: Counter<"verdict">;
  private readonly rateLimited: Counter<"scope">;
  private readonly poolSize: Gauge;
  /** Provisioning instances: when provisioning began and when the last step ended. */
  private readonly provisioning = new Map<string, { startedAt: number; lastAt: number }>();
  private instanceCounts: () => Promise<Partial<Record<InstanceStatus, number>>> = async () => ({});
  private egressTotals: () => Promise<{ bytes: number; blockedInstances: number }> = async () => ({ bytes: 0, blockedInstances: 0 });

  constructor(opts: { processMetrics?: boolean; version?: string } = {}) {
    const registers = [this.registry];
    this.api = new ApiRequestMetrics(this.registry, { requests: "cvm_api_requests_total", duration: "cvm_api_request_duration_seconds" }, [
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
    ]);
    this.phaseDuration = new Histogram({
      name: "cvm_provisioning_phase_duration_seconds",
      help: "Duration of each provisioning step (named by the step that completed); phase=\"total\" is create to ready.",
      labelNames: ["phase"],
      buckets: [0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200],
      registers,
    });
    this.failures = new Counter({
      name: "cvm_instance_failures_total",
      help: "Instances that ended in failed, by failure_code.",
      labelNames: ["failure_code"],
      registers,
    });
    this.quotes = new Counter({
      name: "cvm_quote_verifications_total",
      help: "TDX quote verifications by verdict (accepted, rejected, error).",
      labelNames: ["verdict"],
      registers,
    });
    this.rateLimited = new Counter({
      name: "cvm_rate_limited_total",
      help: "Requests refused with 429 by scope (address, key, auth = failed-authentication penalty).",
      labelNames: ["scope"],
      registers,
    });
    this.poolSize = new Gauge({ name: "cvm_warm_pool_size", help: "Pre-booted guests waiting in the warm pool.", registers });
    const self = this;
    new Gauge({
      name: "cvm_instances",
      help: "Instances by status (rows in the database; terminated rows are kept for name reuse protection).",
      labelNames: ["status"],
      registers,
      async collect() {
        const counts = await self.instanceCounts();
        for (const s of INSTANCE_STATUSES) this.set({ status: s }, counts[s] ?? 0);
      },
    });
    new Gauge({
      name: "cvm_egress_bytes",
      help: "Egress bytes of instances that are not terminated (host counters as last sampled), summed.",
      registers,
      async collect() {
        this.set((await self.egressTotals()).bytes);
      },
    });
    new Gauge({
      name: "cvm_egress_blocked_instances",
      help: "Instances that are not terminated and whose egress cap is reached and enforced.",
      registers,
      async collect() {
        this.set((await self.egressTotals()).blockedInstances);
      },
    });
    const info = new Gauge({ name: "cvm_build_info", help: "Always 1; the version label says which cvmd runs.", labelNames: ["version"], registers });
    info.set({ version: opts.version ?? "unknown" }, 1);

    for (const code of Object.keys(FAILURE_CODES)) this.failures.inc({ failure_code: code }, 0);
    for (const v of QUOTE_VERDICTS) this.quotes.inc({ verdict: v }, 0);
    for (const s of RATE_LIMIT_SCOPES) this.rateLimited.inc({ scope: s }, 0);
    this.poolSize.set(0);
    if (opts.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: "cvm_" });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text for one scrape. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** Where the instances-by-status gauge reads its figures at scrape time. */
  countInstancesWith(fn: () => Promise<Partial<Record<InstanceStatus, number>>>): void {
    this.instanceCounts = fn;
  }

  observeApiRequest(method: string, route: string, status: number, seconds: number): void {
    const m = HTTP_METHODS.has(method) ? method : "OTHER";
    this.api.observe(m, route, status, seconds);
  }

  observeProvisioningPhase(phase: string, seconds: number): void {
    this.phaseDuration.observe({ phase }, Math.max(0, seconds));
  }

  countFailure(failureCode: string): void {
    this.failures.inc({ failure_code: failureCode });
  }

  /** For the attestation code, once per verified quote. */
  observeQuoteVerification(verdict: QuoteVerdict): void {
    this.quotes.inc({ verdict });
  }

  /** For the warm pool, whenever its size changes. */
  setWarmPoolSize(n: number): void {
    this.poolSize.set(n);
  }

  /** Where the egress gauges read their figures at scrape time (the egress store). */
  egressWith(fn: () => Promise<{ bytes: number; blockedInstances: number }>): void {
    this.egressTotals = fn;
  }

  countRateLimited(scope: RateLimitScope): void {
    this.rateLimited.inc({ scope });
  }

  /**
   * Observer for InstanceStore events: a driver event during provisioning ends the step named by
   * its type, the ready transition ends the last step (`ready`) and the whole (`total`), and a
   * failed transition counts its failure_code.
   */
  onInstanceEvent(e: InstanceEventNotice): void {
    const at = e.at.getTime();
    if (e.type !== "status") {
      const p = this.provisioning.get(e.instanceId);
      if (p) {
        this.observeProvisioningPhase(e.type, (at - p.lastAt) / 1000);
        p.lastAt = at;
      }
      return;
    }
    if (e.to === "provisioning") {
      this.provisioning.set(e.instanceId, { startedAt: at, lastAt: at });
      return;
    }
    const p = this.provisioning.get(e.instanceId);
    if (e.from === "provisioning" && e.to === "ready" && p) {
      this.observeProvisioningPhase("ready", (at - p.lastAt) / 1000);
      this.observeProvisioningPhase("total", (at - p.startedAt) / 1000);
    }
    if (e.to === "failed") this.countFailure(e.fields?.failure_code ?? "unknown");
    this.provisioning.delete(e.instanceId);
  }
}

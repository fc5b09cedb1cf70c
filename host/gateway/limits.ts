import { usdToPico } from "./money.js";

/** Operator limits of the inference gateway. */
export interface GatewayLimits {
  /** Spend per tenant per billing window (the window GET /v1/usage reports), USD with ≤ 6 decimals; null = no cap. */
  budgetUsdPerPeriod: string | null;
  /** Gateway requests per tenant per minute (token bucket: bursts up to this, refills at this rate); 0 = off. */
  requestsPerMinute: number;
  /** Requests in flight per instance; more get 429. */
  maxConcurrentPerInstance: number;
  /** Largest request body accepted (bytes). */
  maxRequestBytes: number;
  /** Largest upstream response forwarded (bytes); a larger one is cut. */
  maxResponseBytes: number;
  /** Bytes of one guest's gateway traffic (request bodies, collected and queued responses) held at once, all its streams together. */
  maxBufferedBytesPerGuest: number;
  /** Completion tokens a chat call may ask for (its max_tokens is capped to this, or set to it); bounds the budget reservation. */
  maxOutputTokens: number;
  /** Until the upstream's response head arrives. */
  upstreamHeadersTimeoutMs: number;
  /** Longest silence between two body chunks of a response. */
  upstreamIdleTimeoutMs: number;
  /** Longest a single request may take from start to last byte. */
  upstreamTotalTimeoutMs: number;
  /** Metering records are written at most this long after their request ends... */
  recordFlushMs: number;
  /** ...or as soon as this many are waiting. */
  recordBatch: number;
}

export const DEFAULT_GATEWAY_LIMITS: GatewayLimits = Object.freeze({
  budgetUsdPerPeriod: null,
  requestsPerMinute: 600,
  maxConcurrentPerInstance: 16,
  maxRequestBytes: 4 * 1024 * 1024,
  maxResponseBytes: 16 * 1024 * 1024,
  maxBufferedBytesPerGuest: 16 * 1024 * 1024,
  maxOutputTokens: 4096,
  upstreamHeadersTimeoutMs: 120_000,
  upstreamIdleTimeoutMs: 120_000,
  upstreamTotalTimeoutMs: 600_000,
  recordFlushMs: 50,
  recordBatch: 200,
});

export class GatewayLimitsError extends Error {
  override name = "GatewayLimitsError";
}

/**
 * Limits from the environment, for host/config.ts to fold into Config:
 * CVM_GATEWAY_BUDGET_USD (e.g. "50.00"; unset or "none" = no cap), CVM_GATEWAY_RPM,
 * CVM_GATEWAY_CONCURRENCY, CVM_GATEWAY_TIMEOUT_MS (headers and idle), CVM_GATEWAY_TOTAL_TIMEOUT_MS,
 * CVM_GATEWAY_BUFFER_MIB, CVM_GATEWAY_MAX_OUTPUT_TOKENS.
 */
export function gatewayLimitsFromEnv(get: (name: string) => string | undefined): GatewayLimits {
  const int = (name: string, dflt: number, min: number, max: number): number => {
    const v = get(name);
    if (v === undefined || v === "") return dflt;
    if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new GatewayLimitsError(`${name}=${v}: expected an integer between ${min} and ${max}`);
    return Number(v);
  };
  const budget = get("CVM_GATEWAY_BUDGET_USD");
  let budgetUsdPerPeriod: string | null = null;
  if (budget !== undefined && budget !== "" && budget !== "none") {
    try {
      usdToPico(budget);
    } catch {
      throw new GatewayLimitsError(`CVM_GATEWAY_BUDGET_USD=${budget}: expected a USD amount such as 50.00, or none`);
    }
    budgetUsdPerPeriod = budget;
  }
  const timeout = int("CVM_GATEWAY_TIMEOUT_MS", DEFAULT_GATEWAY_LIMITS.upstreamHeadersTimeoutMs, 100, 3_600_000);
  return {
    ...DEFAULT_GATEWAY_LIMITS,
    budgetUsdPerPeriod,
    requestsPerMinute: int("CVM_GATEWAY_RPM", DEFAULT_GATEWAY_LIMITS.requestsPerMinute, 0, 1_000_000),
    maxConcurrentPerInstance: int("CVM_GATEWAY_CONCURRENCY", DEFAULT_GATEWAY_LIMITS.maxConcurrentPerInstance, 1, 1024),
    upstreamHeadersTimeoutMs: timeout,
    upstreamIdleTimeoutMs: timeout,
    upstreamTotalTimeoutMs: int("CVM_GATEWAY_TOTAL_TIMEOUT_MS", DEFAULT_GATEWAY_LIMITS.upstreamTotalTimeoutMs, 100, 24 * 3_600_000),
    maxBufferedBytesPerGuest: int("CVM_GATEWAY_BUFFER_MIB", DEFAULT_GATEWAY_LIMITS.maxBufferedBytesPerGuest / 2 ** 20, 1, 1024) * 2 ** 20,
    maxOutputTokens: int("CVM_GATEWAY_MAX_OUTPUT_TOKENS", DEFAULT_GATEWAY_LIMITS.maxOutputTokens, 1, 1_000_000),
  };
}

/** Token bucket per key: `perMinute` capacity, refilled continuously. */
export class RequestRateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly perMinute: number,
    private readonly now: () => number,
  ) {}

  /** Takes one request; returns 0 when allowed, else the seconds until one would be. */
  take(key: string): number {
    if (this.perMinute <= 0) return 0;
    const now = this.now();
    const rate = this.perMinute / 60_000;
    const b = this.buckets.get(key) ?? { tokens: this.perMinute, at: now };
    b.tokens = Math.min(this.perMinute, b.tokens + (now - b.at) * rate);
    b.at = now;
    this.buckets.set(key, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / rate / 1000));
  }
}

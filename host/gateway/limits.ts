import { z } from "zod";
import { ConfigError, integer, optional, readSettings, setting, type Lookup, type Value } from "../../shared/config/settings.js";
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

/** A bad CVM_GATEWAY_* value: the configuration's one error type, under the name callers know. */
export const GatewayLimitsError = ConfigError;
export type GatewayLimitsError = ConfigError;

const usd: Value<string> = z.string().refine(
  (v) => {
    try {
      usdToPico(v);
      return true;
    } catch {
      return false;
    }
  },
  { error: "expected a USD amount such as 50.00, or none" },
);

/** The CVM_GATEWAY_* settings; a new limit is one line here and one field of GatewayLimits. */
export const GATEWAY_SETTINGS = {
  budgetUsdPerPeriod: optional("CVM_GATEWAY_BUDGET_USD", z.union([z.literal("none").transform(() => null), usd])),
  requestsPerMinute: setting("CVM_GATEWAY_RPM", integer(0, 1_000_000), String(DEFAULT_GATEWAY_LIMITS.requestsPerMinute)),
  maxConcurrentPerInstance: setting("CVM_GATEWAY_CONCURRENCY", integer(1, 1024), String(DEFAULT_GATEWAY_LIMITS.maxConcurrentPerInstance)),
  /** Both the response-head and the idle deadline. */
  upstreamTimeoutMs: setting("CVM_GATEWAY_TIMEOUT_MS", integer(100, 3_600_000), String(DEFAULT_GATEWAY_LIMITS.upstreamHeadersTimeoutMs)),
  upstreamTotalTimeoutMs: setting("CVM_GATEWAY_TOTAL_TIMEOUT_MS", integer(100, 24 * 3_600_000), String(DEFAULT_GATEWAY_LIMITS.upstreamTotalTimeoutMs)),
  bufferMiB: setting("CVM_GATEWAY_BUFFER_MIB", integer(1, 1024), String(DEFAULT_GATEWAY_LIMITS.maxBufferedBytesPerGuest / 2 ** 20)),
  maxOutputTokens: setting("CVM_GATEWAY_MAX_OUTPUT_TOKENS", integer(1, 1_000_000), String(DEFAULT_GATEWAY_LIMITS.maxOutputTokens)),
};

/** Limits from the configuration's lookup (environment over the config file), for Config.gatewayLimits. */
export function gatewayLimitsFromEnv(get: Lookup): GatewayLimits {
  const { upstreamTimeoutMs, budgetUsdPerPeriod, bufferMiB, ...rest } = readSettings(GATEWAY_SETTINGS, get);
  return {
    ...DEFAULT_GATEWAY_LIMITS,
    ...rest,
    budgetUsdPerPeriod: budgetUsdPerPeriod ?? null,
    upstreamHeadersTimeoutMs: upstreamTimeoutMs,
    upstreamIdleTimeoutMs: upstreamTimeoutMs,
    maxBufferedBytesPerGuest: bufferMiB * 2 ** 20,
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

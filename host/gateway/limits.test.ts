import { describe, expect, test } from "vitest";
import { DEFAULT_GATEWAY_LIMITS, GatewayLimitsError, RequestRateLimiter, gatewayLimitsFromEnv } from "./limits.js";

describe("gateway limits", () => {
  test("from the environment, with defaults and one clear error per bad value", () => {
    expect(gatewayLimitsFromEnv(() => undefined)).toEqual(DEFAULT_GATEWAY_LIMITS);
    const env: Record<string, string> = { CVM_GATEWAY_BUDGET_USD: "50.00", CVM_GATEWAY_RPM: "120", CVM_GATEWAY_CONCURRENCY: "4", CVM_GATEWAY_TIMEOUT_MS: "30000" };
    expect(gatewayLimitsFromEnv((n) => env[n])).toMatchObject({
      budgetUsdPerPeriod: "50.00",
      requestsPerMinute: 120,
      maxConcurrentPerInstance: 4,
      upstreamHeadersTimeoutMs: 30000,
      upstreamIdleTimeoutMs: 30000,
    });
    expect(gatewayLimitsFromEnv((n) => (n === "CVM_GATEWAY_BUDGET_USD" ? "none" : undefined)).budgetUsdPerPeriod).toBeNull();
    expect(() => gatewayLimitsFromEnv((n) => (n === "CVM_GATEWAY_BUDGET_USD" ? "-5" : undefined))).toThrow(/CVM_GATEWAY_BUDGET_USD=-5/);
    expect(() => gatewayLimitsFromEnv((n) => (n === "CVM_GATEWAY_RPM" ? "fast" : undefined))).toThrow(GatewayLimitsError);
    expect(() => gatewayLimitsFromEnv((n) => (n === "CVM_GATEWAY_CONCURRENCY" ? "0" : undefined))).toThrow(/between 1 and 1024/);
    const more: Record<string, string> = { CVM_GATEWAY_BUFFER_MIB: "8", CVM_GATEWAY_MAX_OUTPUT_TOKENS: "1024" };
    expect(gatewayLimitsFromEnv((n) => more[n])).toMatchObject({ maxBufferedBytesPerGuest: 8 * 2 ** 20, maxOutputTokens: 1024 });
    expect(() => gatewayLimitsFromEnv((n) => (n === "CVM_GATEWAY_BUFFER_MIB" ? "0" : undefined))).toThrow(/CVM_GATEWAY_BUFFER_MIB=0/);
  });

  test("requests per minute: a burst of the allowance, then the steady rate, with a retry hint", () => {
    let now = 0;
    const rl = new RequestRateLimiter(60, () => now);
    for (let i = 0; i < 60; i++) expect(rl.take("t1")).toBe(0);
    expect(rl.take("t1")).toBe(1);
    expect(rl.take("t2")).toBe(0); // per key
    now += 1000;
    expect(rl.take("t1")).toBe(0);
    expect(rl.take("t1")).toBe(1);
    expect(new RequestRateLimiter(0, () => now).take("x")).toBe(0); // 0 = off
  });
});

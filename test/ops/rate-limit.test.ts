import { afterAll, describe, expect, it } from "vitest";
import { FakeDriver } from "../support/fake-driver.js";
import { tempDir } from "../support/daemon.js";
import { startOpsDaemon, type OpsDaemon } from "./helpers.js";

const BAD = { Authorization: "Bearer ca_zzzzzzzz_zzzzzzzzzzzzzzzzzz" };

function expectHeaders(r: { headers: Headers }, limit: number): { remaining: number; reset: number } {
  expect(r.headers.get("x-ratelimit-limit")).toBe(String(limit));
  const remaining = r.headers.get("x-ratelimit-remaining");
  const reset = r.headers.get("x-ratelimit-reset");
  expect(remaining).toMatch(/^\d+$/);
  expect(reset).toMatch(/^\d+$/);
  expect(Number(remaining)).toBeLessThanOrEqual(limit);
  expect(Number(reset)).toBeLessThanOrEqual(60);
  return { remaining: Number(remaining), reset: Number(reset) };
}

function expect429(r: { status: number; headers: Headers; body: any }): number {
  expect(r.status).toBe(429);
  expect(r.body.error.code).toBe("rate_limited");
  expect(r.body.request_id).toMatch(/^[0-9a-f]{32}$/);
  expect(Object.keys(r.body).sort()).toEqual(["correlation_id", "error", "request_id"]);
  const retry = r.headers.get("retry-after");
  expect(retry).toMatch(/^\d+$/);
  expect(Number(retry)).toBeGreaterThanOrEqual(1);
  return Number(retry);
}

describe("rate limits against the real daemon", () => {
  const dirs: Array<{ remove(): void }> = [];
  const daemons: OpsDaemon[] = [];
  afterAll(async () => {
    for (const d of daemons) await d.close();
    for (const d of dirs) d.remove();
  });
  async function daemon(env: Record<string, string>): Promise<OpsDaemon> {
    const dir = tempDir();
    dirs.push(dir);
    const d = await startOpsDaemon({ dataDir: dir.path, driver: new FakeDriver(), env });
    daemons.push(d);
    return d;
  }

  it("a burst past the per-key limit gets 429s with Retry-After and X-RateLimit-*, never a 5xx", async () => {
    const LIMIT = 40;
    const d = await daemon({ CVM_RATE_LIMIT: String(LIMIT), CVM_RATE_LIMIT_PER_ADDRESS: "10000" });
    const key = await d.tenant("acme");
    const other = await d.key("acme");
    const results = await Promise.all(Array.from({ length: 100 }, () => d.fetch("/v1/usage", { key })));
    const ok = results.filter((r) => r.status === 200);
    const limited = results.filter((r) => r.status === 429);
    expect(ok.length + limited.length).toBe(100);
    // The bucket refills at LIMIT/60 per second; the burst lasts well under a few seconds.
    expect(ok.length).toBeGreaterThanOrEqual(LIMIT);
    expect(ok.length).toBeLessThanOrEqual(LIMIT + 3);
    for (const r of results) expectHeaders(r, LIMIT);
    for (const r of limited) {
      expect429(r);
      expect(r.headers.get("x-ratelimit-remaining")).toBe("0");
    }
    expect(Math.min(...ok.map((r) => Number(r.headers.get("x-ratelimit-remaining"))))).toBe(0);
    expect(Math.max(...ok.map((r) => Number(r.headers.get("x-ratelimit-remaining"))))).toBe(LIMIT - 1);
    // Per key: the tenant's other key has its own allowance.
    const fresh = await d.fetch("/v1/usage", { key: other });
    expect(fresh.status).toBe(200);
    expect(expectHeaders(fresh, LIMIT).remaining).toBe(LIMIT - 1);
    // Once per episode in the security log, not once per refused request.
    const events = d.security.filter((e) => e.event === "rate_limited");
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ scope: "key", key_prefix: key.split("_")[1], ip: "127.0.0.1" });
    expect(JSON.stringify(d.security)).not.toContain(key.split("_")[2]);
  });

  it("every response carries the headers: unknown routes, the OpenAPI document, 401s", async () => {
    const d = await daemon({ CVM_RATE_LIMIT: "50", CVM_RATE_LIMIT_PER_ADDRESS: "70" });
    for (const [path, init, status] of [
      ["/nope", {}, 404],
      ["/v1/openapi.json", {}, 200],
      ["/v1/usage", { headers: { Authorization: "Bearer nonsense" } }, 401],
    ] as const) {
      const r = await d.fetch(path, init);
      expect(r.status, path).toBe(status);
      expectHeaders(r, 70);
    }
  });

  it("limits per client address, believing X-Forwarded-For only from trusted proxies", async () => {
    const trusting = await daemon({ CVM_RATE_LIMIT: "1000", CVM_RATE_LIMIT_PER_ADDRESS: "10", CVM_TRUSTED_PROXIES: "127.0.0.1" });
    const key = await trusting.tenant("acme");
    const as = (ip: string) => trusting.fetch("/v1/usage", { key, headers: { "X-Forwarded-For": ip } });
    const a = [];
    for (let i = 0; i < 12; i++) a.push(await as("203.0.113.5"));
    expect(a.slice(0, 10).map((r) => r.status)).toEqual(Array(10).fill(200));
    expect(a.slice(10).map((r) => r.status)).toEqual([429, 429]);
    for (const r of a.slice(10)) expect429(r);
    expect((await as("203.0.113.6")).status).toBe(200);
    // A client-supplied leftmost entry does not move it to another bucket.
    expect((await as("198.51.100.1, 203.0.113.5")).status).toBe(429);
    expect(trusting.security.find((e) => e.event === "rate_limited")).toMatchObject({ scope: "address", ip: "203.0.113.5" });

    const untrusting = await daemon({ CVM_RATE_LIMIT: "1000", CVM_RATE_LIMIT_PER_ADDRESS: "10" });
    const key2 = await untrusting.tenant("acme");
    const statuses = [];
    for (let i = 0; i < 12; i++) statuses.push((await untrusting.fetch("/v1/usage", { key: key2, headers: { "X-Forwarded-For": `203.0.113.${i}` } })).status);
    expect(statuses).toEqual([...Array(10).fill(200), 429, 429]);
  });

  it("repeated failed authentication from one address is slowed and recorded in the security log", async () => {
    const d = await daemon({ CVM_AUTH_FAILURE_LIMIT: "5", CVM_TRUSTED_PROXIES: "127.0.0.1" });
    const key = await d.tenant("acme");
    const attacker = { ...BAD, "X-Forwarded-For": "203.0.113.66" };
    const statuses = [];
    for (let i = 0; i < 8; i++) statuses.push((await d.fetch("/v1/instances", { headers: attacker })).status);
    expect(statuses).toEqual([401, 401, 401, 401, 401, 429, 429, 429]);
    // In the penalty box even a valid key is refused from that address, so the answer says nothing about the key ...
    const r = await d.fetch("/v1/usage", { key, headers: { "X-Forwarded-For": "203.0.113.66" } });
    const retry = expect429(r);
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(12);
    // ... while other addresses are unaffected.
    expect((await d.fetch("/v1/usage", { key, headers: { "X-Forwarded-For": "203.0.113.67" } })).status).toBe(200);
    const failures = d.security.filter((e) => e.event === "auth_failure" && e.ip === "203.0.113.66");
    expect(failures).toHaveLength(5);
    const throttled = d.security.filter((e) => e.event === "auth_throttled");
    expect(throttled).toHaveLength(1);
    expect(throttled[0]).toMatchObject({ ip: "203.0.113.66", level: 40 });
  });

  it("CVM_RATE_LIMIT=0 turns the request limits off", async () => {
    const d = await daemon({ CVM_RATE_LIMIT: "0" });
    const key = await d.tenant("acme");
    const results = await Promise.all(Array.from({ length: 50 }, () => d.fetch("/v1/usage", { key })));
    expect(results.every((r) => r.status === 200)).toBe(true);
    expect(results[0]!.headers.get("x-ratelimit-limit")).toBeNull();
  });
});

import parsePrometheusTextFormat, { type PromFamily } from "parse-prometheus-text-format";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EgressStore } from "../../host/store/egress.js";
import { FakeDriver } from "../support/fake-driver.js";
import { tempDir } from "../support/daemon.js";
import { sshKeyPair } from "../support/ssh-keys.js";
import { jsonPost, startOpsDaemon, until, type OpsDaemon } from "./helpers.js";

const ED = sshKeyPair("ed25519").public;

type Scrape = Map<string, PromFamily> & { text: string };

async function scrape(url: string): Promise<Scrape> {
  const res = await fetch(`${url}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  const m = new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f])) as Scrape;
  m.text = text;
  return m;
}

/**
 * Value of the counter/gauge sample whose labels include `labels` (0 when there is none); for a
 * histogram, the observation count of that series. parse-prometheus-text-format folds all series
 * of a histogram into one, so a histogram series is cut out of the text first and parsed alone
 * (its count is then the +Inf bucket).
 */
function value(m: Scrape, name: string, labels: Record<string, string> = {}): number {
  const fam = m.get(name);
  if (!fam) throw new Error(`no metric ${name}`);
  const has = (l: Record<string, string> | undefined) => Object.entries(labels).every(([k, v]) => l?.[k] === v);
  if (fam.type === "HISTOGRAM") {
    const pairs = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
    const lines = m.text.split("\n").filter((l) => l.startsWith(`# HELP ${name} `) || l.startsWith(`# TYPE ${name} `) || (l.startsWith(`${name}_bucket{`) && pairs.every((p) => l.includes(p))));
    const series = parsePrometheusTextFormat(lines.join("\n") + "\n")[0]?.metrics[0];
    return Number(series?.buckets?.["+Inf"] ?? 0);
  }
  const s = fam.metrics.find((x) => has(x.labels));
  return s ? Number(s.value) : 0;
}

describe("metrics on the operator listener", () => {
  const dir = tempDir();
  const driver = new FakeDriver();
  let d: OpsDaemon;
  let key: string;

  beforeAll(async () => {
    d = await startOpsDaemon({ dataDir: dir.path, driver, env: { CVM_METRICS_LISTEN: "127.0.0.1:0" } });
    key = await d.tenant("acme");
  });
  afterAll(async () => {
    await d.close();
    dir.remove();
  });

  it("is a separate listener, and the tenant port has no /metrics", async () => {
    expect(d.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(new URL(d.metricsUrl!).port).not.toBe(String(d.port));
    const r = await d.fetch("/metrics");
    expect(r.status).toBe(404);
    expect(r.body.error.code).toBe("not_found");
    expect((await fetch(`${d.metricsUrl}/nope`)).status).toBe(404);
  });

  it("exposes every documented family, prefixed cvm_, the unwired ones at 0", async () => {
    const m = await scrape(d.metricsUrl!);
    for (const [name, type] of [
      ["cvm_instances", "GAUGE"],
      ["cvm_provisioning_phase_duration_seconds", "HISTOGRAM"],
      ["cvm_instance_failures_total", "COUNTER"],
      ["cvm_egress_bytes", "GAUGE"],
      ["cvm_egress_blocked_instances", "GAUGE"],
      ["cvm_warm_pool_size", "GAUGE"],
      ["cvm_quote_verifications_total", "COUNTER"],
      ["cvm_api_requests_total", "COUNTER"],
      ["cvm_api_request_duration_seconds", "HISTOGRAM"],
      ["cvm_rate_limited_total", "COUNTER"],
      ["cvm_build_info", "GAUGE"],
      ["cvm_process_cpu_seconds_total", "COUNTER"],
      ["cvm_process_resident_memory_bytes", "GAUGE"],
      ["cvm_nodejs_eventloop_lag_seconds", "GAUGE"],
    ] as const) {
      expect(m.get(name)?.type, name).toBe(type);
    }
    for (const name of m.keys()) expect(name).toMatch(/^cvm_/);
    expect(value(m, "cvm_instance_failures_total", { failure_code: "boot_timeout" })).toBe(0);
    expect(m.get("cvm_instance_failures_total")!.metrics.length).toBeGreaterThanOrEqual(10);
    expect(value(m, "cvm_quote_verifications_total", { verdict: "rejected" })).toBe(0);
    expect(value(m, "cvm_warm_pool_size")).toBe(0);
    expect(value(m, "cvm_instances", { status: "ready" })).toBe(0);
  });

  it("counters move after API calls", async () => {
    const before = await scrape(d.metricsUrl!);
    const created: string[] = [];
    for (let i = 0; i < 2; i++) created.push((await d.fetch("/v1/instances", { key, ...jsonPost({ public_key: ED }) })).body.data.name);
    for (const n of created) expect((await until(() => d.fetch(`/v1/instances/${n}`, { key }), (r) => r.body.data.status === "ready")).body.data.status).toBe("ready");
    driver.failWith = "boot_timeout";
    const failed = (await d.fetch("/v1/instances", { key, ...jsonPost({ public_key: ED }) })).body.data.name;
    expect((await until(() => d.fetch(`/v1/instances/${failed}`, { key }), (r) => r.body.data.status === "failed")).body.data.status).toBe("failed");
    driver.failWith = null;
    expect((await d.fetch("/v1/usage", { headers: { Authorization: "Bearer ca_zzzzzzzz_zzzzzzzzzzzzzzzzzz" } })).status).toBe(401);
    expect((await d.fetch("/v1/instances/zzzzzzzz", { key })).status).toBe(404);
    await d.fetch(`/v1/instances/${created[0]}`, { key, method: "DELETE" });
    d.metrics.observeQuoteVerification("accepted");
    // The egress monitor's store is where the gauges read (no nft here: write a host sample as it would).
    const ids = await d.db.all<{ id: string; name: string }>("SELECT id, name FROM instances");
    const idOf = (n: string) => ids.find((r) => r.name === n)!.id;
    const sample = (id: string, bytes: number, blocked: boolean) => ({
      id, limitBytes: 5000, blocked, bytes, packets: 3, quotaUsedBytes: bytes, afterBlockBytes: 0, afterBlockPackets: 0, droppedBytes: 0, droppedPackets: 0,
    });
    const egress = new EgressStore(d.db);
    await d.db.tx(async () => {
      await egress.recordHostSample(sample(idOf(created[1]!), 1234, false), new Date());
      await egress.recordHostSample(sample(idOf(failed), 5000, true), new Date());
      // Terminated instances no longer count.
      await egress.recordHostSample(sample(idOf(created[0]!), 777, true), new Date());
    });
    d.metrics.setWarmPoolSize(3);

    const after = await scrape(d.metricsUrl!);
    const delta = (name: string, labels: Record<string, string>) => value(after, name, labels) - value(before, name, labels);
    expect(delta("cvm_api_requests_total", { method: "POST", route: "/v1/instances", status: "202" })).toBe(3);
    expect(delta("cvm_api_requests_total", { method: "GET", route: "/v1/instances/:name", status: "200" })).toBeGreaterThanOrEqual(3);
    expect(delta("cvm_api_requests_total", { method: "GET", route: "/v1/instances/:name", status: "404" })).toBe(1);
    // Refused before any handler ran, still counted under its route, never under a raw path.
    expect(delta("cvm_api_requests_total", { method: "GET", route: "/v1/usage", status: "401" })).toBe(1);
    expect(delta("cvm_api_requests_total", { method: "DELETE", route: "/v1/instances/:name", status: "202" })).toBe(1);
    const routes = new Set(after.get("cvm_api_requests_total")!.metrics.map((s) => s.labels!.route));
    for (const r of routes) expect(r === "unmatched" || /^\/v1\/[a-z/]*(:name[a-z/]*)?$/.test(r), r).toBe(true);
    expect(delta("cvm_api_request_duration_seconds", { method: "POST", route: "/v1/instances" })).toBe(3);

    expect(value(after, "cvm_instances", { status: "ready" })).toBe(1);
    expect(value(after, "cvm_instances", { status: "failed" })).toBe(1);
    expect(value(after, "cvm_instances", { status: "terminated" })).toBe(1);
    expect(delta("cvm_instance_failures_total", { failure_code: "boot_timeout" })).toBe(1);
    expect(delta("cvm_provisioning_phase_duration_seconds", { phase: "total" })).toBe(2);
    expect(delta("cvm_provisioning_phase_duration_seconds", { phase: "progress" })).toBe(3);
    expect(delta("cvm_provisioning_phase_duration_seconds", { phase: "ready" })).toBe(2);
    expect(delta("cvm_quote_verifications_total", { verdict: "accepted" })).toBe(1);
    expect(value(after, "cvm_egress_bytes")).toBe(6234);
    expect(value(after, "cvm_egress_blocked_instances")).toBe(1);
    expect(value(after, "cvm_warm_pool_size")).toBe(3);
  });

  it("is off unless configured", async () => {
    const dir2 = tempDir();
    const d2 = await startOpsDaemon({ dataDir: dir2.path, driver: new FakeDriver() });
    try {
      expect(d2.metricsUrl).toBeNull();
    } finally {
      await d2.close();
      dir2.remove();
    }
  });
});

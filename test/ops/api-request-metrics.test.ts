import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { ApiRequestMetrics } from "../../host/ops/api-request-metrics.js";

const NAMES = { requests: "t_requests_total", duration: "t_duration_seconds" };

describe("ApiRequestMetrics (the tenant API's counter and histogram outside prom-client's classes)", () => {
  it("exposes per-status counts and a per-route cumulative histogram in the text format", async () => {
    const registry = new Registry();
    const m = new ApiRequestMetrics(registry, NAMES, [0.01, 0.1, 1]);
    m.observe("GET", "/v1/instances/:name", 200, 0.005);
    m.observe("GET", "/v1/instances/:name", 200, 0.01); // on a bound: counted in that bucket (le)
    m.observe("GET", "/v1/instances/:name", 404, 0.05);
    m.observe("GET", "/v1/instances/:name", 200, 3); // above every bound: +Inf only
    m.observe("POST", "/v1/instances", 202, 0.2);
    const text = await registry.metrics();
    const lines = text.split("\n");
    expect(lines).toContain("# TYPE t_requests_total counter");
    expect(lines).toContain('t_requests_total{method="GET",route="/v1/instances/:name",status="200"} 3');
    expect(lines).toContain('t_requests_total{method="GET",route="/v1/instances/:name",status="404"} 1');
    expect(lines).toContain('t_requests_total{method="POST",route="/v1/instances",status="202"} 1');
    expect(lines).toContain("# TYPE t_duration_seconds histogram");
    const get = 'method="GET",route="/v1/instances/:name"';
    expect(lines).toContain(`t_duration_seconds_bucket{${get},le="0.01"} 2`);
    expect(lines).toContain(`t_duration_seconds_bucket{${get},le="0.1"} 3`);
    expect(lines).toContain(`t_duration_seconds_bucket{${get},le="1"} 3`);
    expect(lines).toContain(`t_duration_seconds_bucket{${get},le="+Inf"} 4`);
    expect(lines).toContain(`t_duration_seconds_count{${get}} 4`);
    const sum = Number(lines.find((l) => l.startsWith(`t_duration_seconds_sum{${get}}`))!.split(" ")[1]);
    expect(sum).toBeCloseTo(3.065, 9);
    expect(lines).toContain('t_duration_seconds_bucket{method="POST",route="/v1/instances",le="0.1"} 0');
    expect(lines).toContain('t_duration_seconds_bucket{method="POST",route="/v1/instances",le="1"} 1');
  });

  it("is cleared by the registry's reset and refuses a second registration of its names", async () => {
    const registry = new Registry();
    const m = new ApiRequestMetrics(registry, NAMES, [1]);
    m.observe("GET", "/v1/usage", 200, 0.1);
    registry.resetMetrics();
    expect(await registry.metrics()).not.toContain("t_requests_total{");
    expect(() => new ApiRequestMetrics(registry, NAMES, [1])).toThrow(/already been registered/);
  });
});

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Metrics } from "../../host/ops/metrics.js";
import { bareApp, listen } from "../support/bare-app.js";

// The request frame (host/api/middleware/frame.ts) through the real app on a loopback port. The
// stores are never reached: every request here ends before authentication looks anything up.
describe("request frame", () => {
  let url = "";
  let draining = false;
  const metrics = new Metrics();
  let close = () => {};

  beforeAll(async () => {
    const served = await listen(bareApp({ draining: () => draining, metrics }).app);
    url = served.url;
    close = served.close;
  });
  afterAll(() => close());

  const count = async (labels: string) => {
    const line = (await metrics.text()).split("\n").find((l) => l.startsWith(`cvm_api_requests_total{${labels}}`));
    return line ? Number(line.split(" ").at(-1)) : 0;
  };

  it("gives every answer the envelope, a fresh request id and the client's correlation id", async () => {
    const res = await fetch(`${url}/v1/nothing`, { headers: { "X-Request-ID": "mine", "X-Correlation-ID": "c-1\tx" } });
    const body = (await res.json()) as { request_id: string; correlation_id: string; error: { code: string } };
    expect(res.status).toBe(404);
    expect(body.error.code).toBe("not_found");
    expect(body.request_id).toMatch(/^[0-9a-f]{32}$/);
    expect(res.headers.get("x-request-id")).toBe(body.request_id);
    expect(body.correlation_id).toBe("c-1x");
    expect(res.headers.get("x-correlation-id")).toBe("c-1x");
    expect(await count('method="GET",route="unmatched",status="404"')).toBe(1);
  });

  it("answers 401 before any lookup, counted under the route asked for", async () => {
    const res = await fetch(`${url}/v1/instances/abc`);
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toBe('Bearer realm="cvm"');
    expect(await count('method="GET",route="/v1/instances/:name",status="401"')).toBe(1);
  });

  it("refuses new requests while draining: 503 unavailable, Connection: close, Retry-After, still counted by route", async () => {
    draining = true;
    try {
      const res = await fetch(`${url}/v1/instances/abc`, { method: "DELETE" });
      const body = (await res.json()) as { error: { code: string } };
      expect(res.status).toBe(503);
      expect(body.error.code).toBe("unavailable");
      expect(res.headers.get("connection")).toBe("close");
      expect(res.headers.get("retry-after")).toBe("5");
      expect(await count('method="DELETE",route="/v1/instances/:name",status="503"')).toBe(1);
      expect((await fetch(`${url}/v1/openapi.json`)).status).toBe(503);
    } finally {
      draining = false;
    }
    expect((await fetch(`${url}/v1/openapi.json`)).status).toBe(200);
  });
});

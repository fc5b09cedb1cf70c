import pino from "pino";
import { afterEach, describe, expect, test } from "vitest";
import type { GatewayAgentMessage } from "../../shared/protocol/messages.js";
import { GatewayProxyServer } from "./gateway-proxy.js";

const servers: GatewayProxyServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

async function proxy(opts: { maxRequestBytes?: number; maxOpenStreams?: number } = {}) {
  const p = new GatewayProxyServer({ host: "127.0.0.1", port: 0, logger: pino({ level: "silent" }), ...opts });
  await p.start();
  servers.push(p);
  return { p, url: `http://127.0.0.1:${p.port}` };
}

/** Collects what the proxy would send to the host (the uplink is a plain function here). */
function uplink() {
  const sent: GatewayAgentMessage[] = [];
  let wake: (() => void) | null = null;
  return {
    sent,
    send: (m: GatewayAgentMessage) => {
      sent.push(m);
      wake?.();
      return true;
    },
    next: async (n: number) => {
      while (sent.length < n) await new Promise<void>((r) => (wake = r));
    },
  };
}

describe("the agent's loopback gateway", () => {
  test("without a host session it answers 503 at once; outside /v1 it answers 404", async () => {
    const { url } = await proxy();
    const r = await fetch(`${url}/v1/models`);
    expect(r.status).toBe(503);
    expect(((await r.json()) as any).error.code).toBe("gateway_unavailable");
    expect((await fetch(`${url}/admin`)).status).toBe(404);
    expect((await fetch(`${url}/v1/models`, { method: "DELETE" })).status).toBe(405);
  });

  test("forwards method, path, allow-listed headers and the body; answers from the host's frames", async () => {
    const { p, url } = await proxy();
    const up = uplink();
    p.attach(up.send);
    const pending = fetch(`${url}/v1/chat/completions?x=1`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer guest-secret", "x-forwarded-for": "1.2.3.4" },
      body: '{"stream":true}',
    });
    await up.next(1);
    const m = up.sent[0]!;
    expect(m).toMatchObject({ type: "gw_request", body: { method: "POST", path: "/v1/chat/completions?x=1", end: true } });
    if (m.type !== "gw_request") throw new Error("type");
    expect(m.body.headers).toEqual({ "content-type": "application/json", accept: "*/*" }); // fetch sends accept: */*; the rest stays in the guest
    expect(m.body.body.toString()).toBe('{"stream":true}');
    const stream = m.body.stream;
    p.onHostMessage({ type: "gw_response", body: { stream, status: 200, headers: { "content-type": "text/event-stream" }, body: Buffer.from("data: 1\n\n"), end: false } });
    p.onHostMessage({ type: "gw_response_body", body: { stream, data: Buffer.from("data: 2\n\n"), end: false } });
    p.onHostMessage({ type: "gw_response_body", body: { stream, data: Buffer.from("data: [DONE]\n\n"), end: true } });
    const r = await pending;
    expect(r.status).toBe(200);
    expect(await r.text()).toBe("data: 1\n\ndata: 2\n\ndata: [DONE]\n\n");
    expect(p.openStreams).toBe(0);
  });

  test("a large body crosses in chunks; an oversized one is refused in the guest", async () => {
    const { p, url } = await proxy({ maxRequestBytes: 600 * 1024 });
    const up = uplink();
    p.attach(up.send);
    const big = "x".repeat(520 * 1024);
    const pending = fetch(`${url}/v1/embeddings`, { method: "POST", body: big });
    await up.next(3);
    expect(up.sent.map((m) => m.type)).toEqual(["gw_request", "gw_request_body", "gw_request_body"]);
    const bytes = up.sent.map((m) => (m.type === "gw_request" ? m.body.body : m.type === "gw_request_body" ? m.body.data : Buffer.alloc(0)));
    expect(Buffer.concat(bytes).toString()).toBe(big);
    expect(up.sent.at(-1)).toMatchObject({ body: { end: true } });
    p.onHostMessage({ type: "gw_response", body: { stream: up.sent[0]!.body.stream, status: 200, headers: {}, body: Buffer.from("{}"), end: true } });
    expect((await pending).status).toBe(200);
    const tooBig = await fetch(`${url}/v1/embeddings`, { method: "POST", body: "y".repeat(700 * 1024) });
    expect(tooBig.status).toBe(413);
    expect(up.sent).toHaveLength(3);
  });

  test("the host session going away fails in-flight requests with 502; a client going away sends gw_cancel", async () => {
    const { p, url } = await proxy();
    const up = uplink();
    p.attach(up.send);
    const pending = fetch(`${url}/v1/chat/completions`, { method: "POST", body: "{}" });
    await up.next(1);
    p.detach("host session closed");
    const r = await pending;
    expect(r.status).toBe(502);
    expect(((await r.json()) as any).error.code).toBe("gateway_channel_lost");

    p.attach(up.send);
    const ctl = new AbortController();
    const abandoned = fetch(`${url}/v1/chat/completions`, { method: "POST", body: "{}", signal: ctl.signal }).catch(() => "aborted");
    await up.next(2);
    ctl.abort();
    await abandoned;
    await up.next(3);
    expect(up.sent[2]).toEqual({ type: "gw_cancel", body: { stream: up.sent[1]!.body.stream } });
    expect(p.openStreams).toBe(0);
  });

  test("a reset before the head is a 502; frames of an earlier session are ignored", async () => {
    const { p, url } = await proxy();
    const up = uplink();
    p.attach(up.send);
    const pending = fetch(`${url}/v1/chat/completions`, { method: "POST", body: "{}" });
    await up.next(1);
    const stream = up.sent[0]!.body.stream;
    p.onHostMessage({ type: "gw_reset", body: { stream, reason: "upstream response exceeded 16777216 bytes" } });
    const r = await pending;
    expect(r.status).toBe(502);
    expect(((await r.json()) as any).error.message).toMatch(/exceeded/);
    // A late frame for a finished stream does nothing.
    p.onHostMessage({ type: "gw_response", body: { stream, status: 200, headers: {}, body: Buffer.alloc(0), end: true } });
    expect(p.openStreams).toBe(0);
  });
});

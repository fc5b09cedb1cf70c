import { mkdtemp, rm } from "node:fs/promises";
import type { ChannelBudgetLimits } from "./channel-budget.js";
import type { Server, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Encoder } from "cbor-x";
import pino from "pino";
import { afterEach, describe, expect, test } from "vitest";
import { encodeMessage } from "../../shared/protocol/codec.js";
import { encodeFrame } from "../../shared/protocol/frame.js";
import type { AgentMessage, HostMessage } from "../../shared/protocol/messages.js";
import { AGENT_SAMPLES } from "../../shared/protocol/testdata/samples.js";
import { AgentLink } from "./agent-link.js";
import { UnixSocketConnector } from "./connectors.js";
import { GuestBufferAccount, type GatewayHandler, type GatewayHttpRequest } from "./gateway-streams.js";
import { serveHostFrames } from "../../test/support/host-frame-server.js";

const HELLO = (AGENT_SAMPLES.hello_v2 as Extract<AgentMessage, { type: "hello" }>).body;

/** Test double of the agent end of the channel: answers hello with the given version, then runs the test's script. */
class ScriptedAgent {
  server!: Server;
  socket: Socket | null = null;
  received: HostMessage[] = [];
  private waiters: Array<() => void> = [];
  constructor(readonly path: string, readonly version: number) {}
  async start() {
    const served = await serveHostFrames(
      this.path,
      (m, s) => {
        if (m.type === "hello") s.write(encodeMessage({ type: "hello", re: m.id, body: { ...HELLO, version: this.version } }));
        else this.received.push(m);
        for (const w of this.waiters.splice(0)) w();
      },
      (s) => {
        this.socket = s;
        for (const w of this.waiters.splice(0)) w();
      },
    );
    this.server = served.server;
  }
  send(m: AgentMessage) {
    this.socket!.write(encodeMessage(m));
  }
  async until(pred: () => boolean, ms = 5000) {
    const deadline = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error("timed out");
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }
  close() {
    this.socket?.destroy();
    return new Promise<void>((r) => this.server.close(() => r()));
  }
}

let dir: string;
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function fixture(version = 2, gatewayLimits = {}, channelBudget?: ChannelBudgetLimits) {
  dir = await mkdtemp(join(tmpdir(), "gw-link-"));
  const agent = new ScriptedAgent(join(dir, "a.sock"), version);
  await agent.start();
  const link = new AgentLink({ connector: new UnixSocketConnector(agent.path), logger: pino({ level: "silent" }), instanceId: "inst-a", backoff: { initialMs: 10, maxMs: 50 }, gatewayLimits, channelBudget });
  const disconnects: string[] = [];
  link.on("disconnected", (r) => disconnects.push(r));
  cleanups.push(async () => {
    await link.close();
    await agent.close();
  });
  link.start();
  await new Promise<void>((r) => link.once("connected", () => r()));
  return { agent, link, disconnects };
}

const body = (m: HostMessage) => (m.type === "gw_response" ? m.body.body : m.type === "gw_response_body" ? m.body.data : Buffer.alloc(0));

describe("gateway streams on the agent link", () => {
  test("a request split over frames reaches the handler whole; a streamed response comes back in order", async () => {
    const { agent, link } = await fixture();
    const seen: GatewayHttpRequest[] = [];
    link.onGatewayRequest(async (req, res) => {
      seen.push(req);
      res.head(200, { "content-type": "text/event-stream" });
      for (let i = 0; i < 5; i++) res.write(Buffer.from(`data: ${i}\n\n`));
      res.end();
    });
    agent.send({ type: "gw_request", body: { stream: 7, method: "POST", path: "/v1/chat/completions", headers: { "content-type": "application/json" }, body: Buffer.from('{"a":'), end: false } });
    agent.send({ type: "gw_request_body", body: { stream: 7, data: Buffer.from("1}"), end: true } });
    await agent.until(() => agent.received.some((m) => m.type === "gw_response_body" && m.body.end));
    expect(seen).toHaveLength(1);
    expect(seen[0]!.body.toString()).toBe('{"a":1}');
    expect(seen[0]!.path).toBe("/v1/chat/completions");
    const frames = agent.received.filter((m) => m.type.startsWith("gw_"));
    expect(frames[0]).toMatchObject({ type: "gw_response", body: { stream: 7, status: 200, end: false } });
    expect(Buffer.concat(frames.map(body)).toString()).toBe([0, 1, 2, 3, 4].map((i) => `data: ${i}\n\n`).join(""));
  });

  test("no handler: 503; an oversized body: 413 without reaching the handler", async () => {
    const { agent, link } = await fixture(2, { maxRequestBytes: 10 });
    agent.send({ type: "gw_request", body: { stream: 1, method: "GET", path: "/v1/models", headers: {}, body: Buffer.alloc(0), end: true } });
    await agent.until(() => agent.received.length === 1);
    expect(agent.received[0]).toMatchObject({ type: "gw_response", body: { stream: 1, status: 503, end: true } });
    let called = 0;
    link.onGatewayRequest(async (_q, r) => {
      called++;
      r.send(200, {}, Buffer.alloc(0));
    });
    agent.send({ type: "gw_request", body: { stream: 2, method: "POST", path: "/v1/embeddings", headers: {}, body: Buffer.alloc(8), end: false } });
    agent.send({ type: "gw_request_body", body: { stream: 2, data: Buffer.alloc(8), end: true } });
    await agent.until(() => agent.received.length === 2);
    expect(agent.received[1]).toMatchObject({ type: "gw_response", body: { stream: 2, status: 413 } });
    expect(called).toBe(0);
  });

  test("a cancel from the agent aborts the handler's signal; later writes go nowhere", async () => {
    const { agent, link } = await fixture();
    let aborted: Promise<unknown> | null = null;
    let write: ((b: Buffer) => boolean) | null = null;
    link.onGatewayRequest(async (req, res) => {
      aborted = new Promise((r) => req.signal.addEventListener("abort", () => r(req.signal.reason)));
      res.head(200, {});
      write = (b) => res.write(b);
      await aborted;
    });
    agent.send({ type: "gw_request", body: { stream: 3, method: "POST", path: "/v1/chat/completions", headers: {}, body: Buffer.from("{}"), end: true } });
    await agent.until(() => aborted !== null);
    agent.send({ type: "gw_cancel", body: { stream: 3 } });
    await expect(aborted).resolves.toBeInstanceOf(Error);
    write!(Buffer.from("late"));
    await new Promise((r) => setTimeout(r, 50));
    expect(agent.received.filter((m) => m.type === "gw_response_body")).toHaveLength(0);
  });

  test("more open streams than allowed get 429 at the link", async () => {
    const { agent, link } = await fixture(2, { maxOpenStreams: 2 });
    link.onGatewayRequest(() => new Promise(() => undefined));
    for (const stream of [1, 2, 3]) agent.send({ type: "gw_request", body: { stream, method: "POST", path: "/v1/x", headers: {}, body: Buffer.alloc(0), end: true } });
    await agent.until(() => agent.received.length === 1);
    expect(agent.received[0]).toMatchObject({ type: "gw_response", body: { stream: 3, status: 429 } });
  });

  test("one buffer account per guest across all its streams: unterminated bodies beyond it are refused with 429 and the stream closed", async () => {
    const { agent, link } = await fixture();
    const episodes: unknown[] = [];
    const account = new GuestBufferAccount(100 * 1024, (e) => episodes.push(e));
    let called = 0;
    const handler: GatewayHandler = Object.assign(async (_q: GatewayHttpRequest, r: { send(s: number, h: object, b: Buffer): void }) => {
      called++;
      r.send(200, {}, Buffer.alloc(0));
    }, { buffers: account });
    link.onGatewayRequest(handler);
    // Each stream is well within the 4 MiB per-request limit; together they are not.
    for (let stream = 1; stream <= 6; stream++) agent.send({ type: "gw_request", body: { stream, method: "POST", path: "/v1/chat/completions", headers: {}, body: Buffer.alloc(40 * 1024, 1), end: false } });
    await agent.until(() => agent.received.length === 4);
    expect(agent.received.map((m) => (m.type === "gw_response" ? [m.body.stream, m.body.status, m.body.end] : m.type))).toEqual([
      [3, 429, true],
      [4, 429, true],
      [5, 429, true],
      [6, 429, true],
    ]);
    const first = agent.received[0] as Extract<HostMessage, { type: "gw_response" }>;
    expect(JSON.parse(first.body.body.toString()).error).toMatchObject({ code: "buffer_limit_exceeded" });
    expect(account.held).toBe(80 * 1024);
    expect(episodes).toHaveLength(1); // four refusals, one episode
    // Body frames for a refused stream are ignored; a finished stream gives its bytes back.
    agent.send({ type: "gw_request_body", body: { stream: 3, data: Buffer.alloc(1024), end: true } });
    agent.send({ type: "gw_request_body", body: { stream: 1, data: Buffer.alloc(0), end: true } });
    await agent.until(() => agent.received.length === 5);
    expect(agent.received[4]).toMatchObject({ type: "gw_response", body: { stream: 1, status: 200 } });
    expect(called).toBe(1);
    expect(account.held).toBe(40 * 1024);
    agent.send({ type: "gw_cancel", body: { stream: 2 } });
    await agent.until(() => account.held === 0);
    // The episode is over once the guest holds little again; the next overflow is a new one.
    for (let stream = 7; stream <= 9; stream++) agent.send({ type: "gw_request", body: { stream, method: "POST", path: "/v1/x", headers: {}, body: Buffer.alloc(40 * 1024), end: false } });
    await agent.until(() => agent.received.length === 6);
    expect(agent.received[5]).toMatchObject({ type: "gw_response", body: { stream: 9, status: 429 } });
    expect(episodes).toHaveLength(2);
  });

  test("the account spans sessions: a guest that reconnects does not get a fresh allowance while its old bytes are held", async () => {
    const { agent, link } = await fixture();
    const account = new GuestBufferAccount(64 * 1024);
    const handler: GatewayHandler = Object.assign(() => new Promise<void>(() => undefined), { buffers: account });
    link.onGatewayRequest(handler);
    // Held by something else of the same guest (a response the gateway is collecting, say).
    expect(account.take(60 * 1024)).toBe(true);
    agent.send({ type: "gw_request", body: { stream: 1, method: "POST", path: "/v1/x", headers: {}, body: Buffer.alloc(8 * 1024), end: false } });
    await agent.until(() => agent.received.length === 1);
    expect(agent.received[0]).toMatchObject({ type: "gw_response", body: { stream: 1, status: 429 } });
    agent.socket!.destroy();
    await new Promise<void>((r) => link.once("connected", () => r()));
    agent.send({ type: "gw_request", body: { stream: 1, method: "POST", path: "/v1/x", headers: {}, body: Buffer.alloc(8 * 1024), end: false } });
    await agent.until(() => agent.received.length === 2);
    expect(agent.received[1]).toMatchObject({ type: "gw_response", body: { stream: 1, status: 429 } });
  });

  test("responses wait for the channel: with a guest that stops reading, the handler is held back instead of queuing in memory", async () => {
    const { agent, link } = await fixture();
    const account = new GuestBufferAccount(4 * 1024 * 1024);
    let written = 0;
    let finished = false;
    const total = 24 * 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    link.onGatewayRequest(
      Object.assign(
        async (_q: GatewayHttpRequest, res: Parameters<GatewayHandler>[1]) => {
          res.head(200, { "content-type": "text/event-stream" });
          while (written < total) {
            written += chunk.length;
            if (!res.write(chunk)) await res.drained();
          }
          res.end();
          finished = true;
        },
        { buffers: account },
      ),
    );
    agent.socket!.pause();
    agent.send({ type: "gw_request", body: { stream: 5, method: "POST", path: "/v1/chat/completions", headers: {}, body: Buffer.from("{}"), end: true } });
    await new Promise((r) => setTimeout(r, 400));
    // Stalled: the channel's high-water mark (1 MiB), one chunk, and what the socket buffers took.
    expect(finished).toBe(false);
    expect(written).toBeLessThan(6 * 1024 * 1024);
    expect(account.held).toBeLessThanOrEqual(chunk.length + 2); // one chunk queued, and the request body ("{}") until the stream ends
    agent.socket!.resume();
    await agent.until(() => finished && agent.received.some((m) => m.type === "gw_response_body" && m.body.end), 20_000);
    const bytes = agent.received.reduce((n, m) => n + body(m).length, 0);
    expect(bytes).toBe(total);
    expect(account.held).toBe(0);
  });

  test("a whole response larger than the guest's free buffer is refused with 429, not queued", async () => {
    const { agent, link } = await fixture();
    const account = new GuestBufferAccount(1024 * 1024);
    link.onGatewayRequest(Object.assign(async (_q: GatewayHttpRequest, res: Parameters<GatewayHandler>[1]) => res.send(200, {}, Buffer.alloc(2 * 1024 * 1024)), { buffers: account }));
    agent.send({ type: "gw_request", body: { stream: 1, method: "POST", path: "/v1/x", headers: {}, body: Buffer.from("{}"), end: true } });
    await agent.until(() => agent.received.length === 1);
    expect(agent.received[0]).toMatchObject({ type: "gw_response", body: { stream: 1, status: 429, end: true } });
    expect(account.held).toBe(0);
  });

  test("a guest that opens stream after stream without reading its channel has its session ended, not its refusals queued without end", async () => {
    // Over the default channel budget the excess frames would be dropped before the gateway sees them
    // (that bound has its own tests); this one needs every request to reach the refusal queue.
    const { agent, disconnects } = await fixture(2, {}, { framesPerSec: 1e6, burstFrames: 1e6, bytesPerSec: 1e9, burstBytes: 1e9 });
    const unread = agent.socket!;
    unread.pause();
    // No handler: each request is refused at once with a small 503 that the guest never reads.
    const frames: Buffer[] = [];
    for (let stream = 1; stream <= 30_000; stream++) frames.push(encodeMessage({ type: "gw_request", body: { stream, method: "GET", path: "/v1/models", headers: {}, body: Buffer.alloc(0), end: true } }));
    unread.write(Buffer.concat(frames));
    await agent.until(() => disconnects.length > 0, 15_000);
    expect(disconnects[0]).toMatch(/protocol violation: gateway refusals backed up .*does not read its channel/);
    // A paused socket never sees the host's close; let the fixture's server shut down.
    unread.destroy();
  });

  test("an identity smuggled into a gateway request is a protocol violation: the session ends", async () => {
    const { agent, link, disconnects } = await fixture();
    let called = 0;
    link.onGatewayRequest(async (_q, r) => {
      called++;
      r.send(200, {}, Buffer.alloc(0));
    });
    const raw = new Encoder({ useRecords: false, mapsAsObjects: true, variableMapSize: true, tagUint8Array: false });
    agent.socket!.write(encodeFrame(Buffer.from(raw.encode({ type: "gw_request", body: { stream: 1, method: "GET", path: "/v1/models", headers: {}, body: Buffer.alloc(0), end: true, instance_id: "inst-b" } }))));
    await agent.until(() => disconnects.length > 0);
    expect(disconnects[0]).toMatch(/protocol violation: .*unknown key "instance_id"/);
    expect(called).toBe(0);
  });

  test("in a version 1 session gateway frames are a protocol violation", async () => {
    const { agent, link, disconnects } = await fixture(1);
    link.onGatewayRequest(async (_q, r) => r.send(200, {}, Buffer.alloc(0)));
    agent.send({ type: "gw_request", body: { stream: 1, method: "GET", path: "/v1/models", headers: {}, body: Buffer.alloc(0), end: true } });
    await agent.until(() => disconnects.length > 0);
    expect(disconnects[0]).toMatch(/gw_request in a protocol 1 session/);
    expect(agent.received.filter((m) => m.type === "gw_response")).toHaveLength(0);
  });

  test("a session that ends aborts the streams on it", async () => {
    const { agent, link } = await fixture();
    let reason: unknown = null;
    let started = false;
    link.onGatewayRequest(
      (req) =>
        new Promise<void>((resolve) => {
          started = true;
          req.signal.addEventListener("abort", () => {
            reason = req.signal.reason;
            resolve();
          });
        }),
    );
    agent.send({ type: "gw_request", body: { stream: 1, method: "POST", path: "/v1/chat/completions", headers: {}, body: Buffer.from("{}"), end: true } });
    await agent.until(() => started);
    agent.socket!.destroy();
    for (let i = 0; i < 100 && reason === null; i++) await new Promise((r) => setTimeout(r, 20));
    expect(String((reason as Error | null)?.message)).toMatch(/agent session ended/);
  });
});

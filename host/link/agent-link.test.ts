import { mkdtemp, rm } from "node:fs/promises";
import type { Server, Socket } from "node:net";
import { Writable } from "node:stream";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, describe, expect, test } from "vitest";
import { encodeMessage } from "../../shared/protocol/codec.js";
import type { AgentHello, AgentMessage, HostMessage } from "../../shared/protocol/messages.js";
import { AGENT_SAMPLES, HOST_SAMPLES } from "../../shared/protocol/testdata/samples.js";
import { AgentLink, MAX_SKIPPED_BEFORE_HELLO } from "./agent-link.js";
import { UnixSocketConnector } from "./connectors.js";
import { serveHostFrames } from "../../test/support/host-frame-server.js";

const HELLO = (AGENT_SAMPLES.hello as Extract<AgentMessage, { type: "hello" }>).body;
const HELLO_V3 = (AGENT_SAMPLES.hello_v3_prepared as Extract<AgentMessage, { type: "hello" }>).body;
const AWAITING_V3 = { ...HELLO_V3, state: { ...HELLO_V3.state, phase: "awaiting_setup" as const, stage: null, prepared: null } };
const SETUP = (HOST_SAMPLES.setup as Extract<HostMessage, { type: "setup" }>).body;

/** Test double of the agent end: scripted per connection. */
class FakeAgentServer {
  server!: Server;
  connections = 0;
  received: HostMessage[] = [];
  constructor(readonly path: string, readonly onMessage: (m: HostMessage, s: Socket, conn: number) => void) {}
  async start() {
    const served = await serveHostFrames(
      this.path,
      (m, s, conn) => {
        this.received.push(m);
        this.onMessage(m, s, conn);
      },
      (_s, conn) => (this.connections = conn),
    );
    this.server = served.server;
    this.close = served.close;
  }
  close = async () => {};
}

let dir: string;
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function fixture(onMessage: (m: HostMessage, s: Socket, conn: number) => void, opts: Partial<ConstructorParameters<typeof AgentLink>[0]> = {}) {
  dir = await mkdtemp(join(tmpdir(), "agent-link-"));
  const fake = new FakeAgentServer(join(dir, "a.sock"), onMessage);
  await fake.start();
  const link = new AgentLink({
    connector: new UnixSocketConnector(fake.path),
    logger: pino({ level: "silent" }),
    instanceId: "t",
    backoff: { initialMs: 10, maxMs: 50 },
    ...opts,
  });
  cleanups.push(async () => {
    await link.close();
    await fake.close();
  });
  return { fake, link };
}

describe("AgentLink", () => {
  test("an unacknowledged setup is re-sent after a reconnect and resolves on the ack", async () => {
    const { fake, link } = await fixture((m, s, conn) => {
      if (m.type === "hello") s.write(encodeMessage({ type: "hello", re: m.id, body: HELLO }));
      if (m.type === "setup") {
        if (conn === 1) s.destroy(); // agent died before acknowledging
        else s.write(encodeMessage({ type: "ack", re: m.id, body: { already_applied: true } }));
      }
    });
    link.start();
    await expect(link.setup(SETUP)).resolves.toBeUndefined();
    expect(fake.connections).toBe(2);
    expect(fake.received.filter((m) => m.type === "setup")).toHaveLength(2);
  });

  test("a refused setup rejects with the agent's code; a conflicting concurrent setup is refused locally", async () => {
    const { link } = await fixture((m, s) => {
      if (m.type === "hello") s.write(encodeMessage({ type: "hello", re: m.id, body: HELLO }));
      if (m.type === "setup") setTimeout(() => s.write(encodeMessage({ type: "error", re: m.id, body: { code: "setup_conflict", message: "no" } })), 50);
    });
    link.start();
    const first = link.setup(SETUP);
    await expect(link.setup({ ...SETUP, inference_model: "x" })).rejects.toMatchObject({ code: "setup_conflict", message: /already in flight/ });
    await expect(first).rejects.toMatchObject({ code: "setup_conflict", message: "no" });
  });

  test("no hello reply → reconnect; silence after hello → reconnect; hello state ready re-emits ready", async () => {
    const ready: AgentHello = { ...HELLO, state: { phase: "ready", setup_digest: "0".repeat(64), stage: "ready", ready: { ssh_host_keys: ["ssh-ed25519 AAAA"], openclaw_version: "v", node_version: "n" }, failed: null, prepared: null } };
    const { fake, link } = await fixture(
      (m, s, conn) => {
        if (m.type === "hello" && conn >= 2) s.write(encodeMessage({ type: "hello", re: m.id, body: ready }));
      },
      { helloTimeoutMs: 100, idleTimeoutMs: 150 },
    );
    let readies = 0;
    let disconnects = 0;
    link.on("ready", () => readies++);
    link.on("disconnected", () => disconnects++);
    link.start();
    for (let i = 0; i < 100 && disconnects < 2; i++) await new Promise((r) => setTimeout(r, 20));
    expect(fake.connections).toBeGreaterThanOrEqual(3);
    expect(disconnects).toBeGreaterThanOrEqual(2); // sessions 2.. said hello then went silent
    expect(readies).toBeGreaterThanOrEqual(2);
  });

  test("quote waits for a session, and fails with a clear error on disconnect", async () => {
    const { link } = await fixture((m, s) => {
      if (m.type === "hello") s.write(encodeMessage({ type: "hello", re: m.id, body: HELLO }));
      if (m.type === "quote") s.destroy();
    });
    link.start();
    await expect(link.quote(Buffer.alloc(32))).rejects.toMatchObject({ code: "disconnected" });
    await link.close();
    await expect(link.quote(Buffer.alloc(32))).rejects.toMatchObject({ code: "closed" });
  });

  test("prepare: sends an empty prepare, resolves with the ack; the prepared event is emitted; an error reply rejects", async () => {
    const PREPARED = { openclaw_version: "2026.9.6", node_version: "v24.21.0", prepare_ms: 1234 };
    let prepares = 0;
    const { fake, link } = await fixture((m, s) => {
      if (m.type === "hello") s.write(encodeMessage({ type: "hello", re: m.id, body: AWAITING_V3 }));
      if (m.type === "prepare") {
        prepares++;
        if (prepares === 1) {
          s.write(encodeMessage({ type: "ack", re: m.id, body: { already_applied: false } }));
          setTimeout(() => s.write(encodeMessage({ type: "prepared", body: PREPARED })), 20);
        } else s.write(encodeMessage({ type: "error", re: m.id, body: { code: "setup_conflict", message: "setup already accepted" } }));
      }
    });
    const prepared = new Promise((r) => link.once("prepared", r));
    link.start();
    await expect(link.prepare()).resolves.toEqual({ already_applied: false });
    expect(await prepared).toEqual(PREPARED);
    expect(fake.received.find((m) => m.type === "prepare")).toMatchObject({ type: "prepare", body: {} });
    await expect(link.prepare()).rejects.toMatchObject({ name: "AgentRequestError", code: "setup_conflict", message: "setup already accepted" });
  });

  test("prepare is re-sent after a disconnect; a hello in phase prepared emits prepared", async () => {
    const { fake, link } = await fixture((m, s, conn) => {
      if (m.type === "hello") s.write(encodeMessage({ type: "hello", re: m.id, body: conn === 1 ? AWAITING_V3 : HELLO_V3 }));
      if (m.type === "prepare") {
        if (conn === 1) s.destroy();
        else s.write(encodeMessage({ type: "ack", re: m.id, body: { already_applied: true } }));
      }
    });
    const prepared = new Promise((r) => link.once("prepared", r));
    link.start();
    await expect(link.prepare()).resolves.toEqual({ already_applied: true });
    expect(await prepared).toEqual(HELLO_V3.state.prepared);
    expect(fake.received.filter((m) => m.type === "prepare")).toHaveLength(2);
  });

  test("prepare against a version 2 agent is refused locally; a prepared event in a version 2 session is a protocol violation", async () => {
    const V2 = (AGENT_SAMPLES.hello_v2 as Extract<AgentMessage, { type: "hello" }>).body;
    const { fake, link } = await fixture((m, s, conn) => {
      if (m.type === "hello") {
        s.write(encodeMessage({ type: "hello", re: m.id, body: V2 }));
        if (conn === 1) s.write(encodeMessage({ type: "prepared", body: { openclaw_version: "x", node_version: "y", prepare_ms: 1 } }));
      }
    });
    let prepared = 0;
    link.on("prepared", () => prepared++);
    link.start();
    await expect(link.prepare()).rejects.toMatchObject({ code: "unsupported_version" });
    for (let i = 0; i < 100 && fake.connections < 2; i++) await new Promise((r) => setTimeout(r, 20));
    expect(fake.connections).toBeGreaterThanOrEqual(2);
    expect(prepared).toBe(0);
    expect(fake.received.some((m) => m.type === "bye" && /prepared in a protocol 2 session/.test(m.body.reason))).toBe(true);
  });
});

describe("AgentLink against a hostile guest", () => {
  const captured = () => {
    const records: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const line of chunk.toString().split("\n")) if (line.trim()) records.push(JSON.parse(line) as Record<string, unknown>);
        cb();
      },
    });
    return { records, logger: pino({ level: "info" }, sink) };
  };

  test("after hello any framing error ends the session at once; repeats are one security record", async () => {
    const sec = captured();
    const { fake, link } = await fixture(
      (m, s) => {
        if (m.type !== "hello") return;
        s.write(encodeMessage({ type: "hello", re: m.id, body: HELLO }));
        s.write(Buffer.from("not a frame"));
      },
      { securityLog: sec.logger },
    );
    const reasons: string[] = [];
    link.on("disconnected", (r) => reasons.push(r));
    link.start();
    for (let i = 0; i < 200 && fake.connections < 3; i++) await new Promise((r) => setTimeout(r, 20));
    expect(fake.connections).toBeGreaterThanOrEqual(3);
    expect(reasons[0]).toMatch(/protocol violation: framing: no frame magic/);
    expect(sec.records.filter((r) => r.event === "agent_protocol_violation")).toHaveLength(1);
  });

  test("before hello, stale bytes are skipped up to a bound, then the session ends", async () => {
    const sec = captured();
    const { fake, link } = await fixture(
      (m, s) => {
        // More garbage than any stale tail, and a hello that comes too late to matter.
        if (m.type === "hello") s.write(Buffer.concat([Buffer.alloc(MAX_SKIPPED_BEFORE_HELLO + 1024, 0x41), encodeMessage({ type: "hello", re: m.id, body: HELLO })]));
      },
      { securityLog: sec.logger },
    );
    let hellos = 0;
    link.on("hello", () => hellos++);
    link.start();
    for (let i = 0; i < 200 && !sec.records.length; i++) await new Promise((r) => setTimeout(r, 20));
    expect(sec.records[0]).toMatchObject({ event: "agent_protocol_violation", instance_id: "t" });
    expect(String(sec.records[0]!.reason)).toMatch(/bytes without a frame before hello/);
    expect(hellos).toBe(0);
    expect(fake.connections).toBeGreaterThanOrEqual(1);
  });

  test("frames over the channel budget are dropped undecoded and counted; one security record per episode", async () => {
    const sec = captured();
    let beats = 0;
    const { link } = await fixture(
      (m, s) => {
        if (m.type !== "hello") return;
        s.write(encodeMessage({ type: "hello", re: m.id, body: HELLO }));
        s.write(Buffer.concat(Array.from({ length: 50 }, () => encodeMessage(AGENT_SAMPLES.heartbeat!))));
      },
      { securityLog: sec.logger, channelBudget: { framesPerSec: 1, burstFrames: 10 } },
    );
    link.on("heartbeat", () => beats++);
    link.start();
    for (let i = 0; i < 200 && link.dropped.frames < 40; i++) await new Promise((r) => setTimeout(r, 20));
    // The hello reply took one frame of the burst; the flood got the rest.
    expect(beats).toBe(9);
    expect(link.dropped.frames).toBe(41);
    expect(link.state).toBe("connected");
    expect(sec.records.filter((r) => r.event === "agent_channel_over_budget")).toHaveLength(1);
    await link.close();
    expect(sec.records.filter((r) => r.event === "agent_channel_over_budget_ended")).toEqual([expect.objectContaining({ dropped_frames: 41 })]);
  });
});

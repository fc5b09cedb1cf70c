import { createServer, createConnection, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { Writable } from "node:stream";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { AgentLink, UnixSocketConnector } from "../../host/link/index.js";
import { decodeAgentMessage, decodeHostMessage, encodeMessage } from "../../shared/protocol/codec.js";
import { encodeFrame, FrameDecoder } from "../../shared/protocol/frame.js";
import { SUPPORTED_PROTOCOL_VERSIONS, type AgentMessage, type HostMessage } from "../../shared/protocol/messages.js";
import { prng } from "../../shared/protocol/testdata/prng.js";
import { AGENT_SAMPLES, HOST_SAMPLES } from "../../shared/protocol/testdata/samples.js";
import { agentArgs, buildAgent, makeGuestRoot, removeRoot, spawnAgent, type AgentProcess, type GuestRoot } from "./helpers.js";

const SEED = Number(process.env.CVM_FUZZ_SEED ?? 777);

/** A bad input for one session: content-invalid frames, noise, or CBOR garbage in a valid frame. */
function badInput(r: ReturnType<typeof prng>, valid: Buffer[], decode: (p: Buffer) => { ok: boolean }): Buffer {
  for (;;) {
    const b = candidate(r, valid);
    // A mutation can land on something still valid (say, a different letter in a reason string); draw again.
    if (b.subarray(0, 4).toString("hex") !== "c7564d31" || !decode(b.subarray(16)).ok) return b;
  }
}

function candidate(r: ReturnType<typeof prng>, valid: Buffer[]): Buffer {
  const pick = valid[r.int(valid.length)]!;
  switch (r.int(4)) {
    case 0: {
      const payload = Buffer.from(pick.subarray(16));
      for (let j = r.int(3) + 1; j > 0; j--) payload[r.int(payload.length)] = r.int(256);
      return encodeFrame(payload); // frame intact, content corrupted
    }
    case 1:
      return encodeFrame(r.bytes(r.int(300) + 1)); // frame intact, random payload
    case 2:
      return Buffer.concat([Buffer.from("not a frame at all "), r.bytes(r.int(100))]); // framing garbage
    default:
      return encodeFrame(encodeMessage({ type: "ready", body: { ssh_host_keys: [], openclaw_version: "x", node_version: "y" } }).subarray(16)); // wrong direction
  }
}

function readMessages(sock: Socket, onMsg: (m: AgentMessage) => void): void {
  const d = new FrameDecoder();
  sock.on("data", (c) => {
    for (const ev of d.push(c)) {
      if (ev.kind !== "frame") continue;
      const res = decodeAgentMessage(ev.payload);
      if (res.ok) onMsg(res.message);
    }
  });
}

describe("protocol fuzz against live sessions", () => {
  let root: GuestRoot;
  let agent: AgentProcess;
  const sock = () => join(root.dir, "agent.sock");

  beforeAll(async () => {
    buildAgent();
    root = await makeGuestRoot();
    agent = spawnAgent(agentArgs(root, ["--unix", sock(), "--no-egress", "--heartbeat-ms", "60000"]), "fuzz");
    for (let i = 0; i < 100 && !(await import("node:fs")).existsSync(sock()); i++) await new Promise((r) => setTimeout(r, 50));
  });

  afterAll(async () => {
    await agent?.kill("SIGKILL");
    if (root) await removeRoot(root);
  });

  test("2,000 bad frames at the agent: each ends its session with a bye carrying the reason; the agent keeps serving", async () => {
    const r = prng(SEED);
    const valid = [...Object.values(HOST_SAMPLES), ...Object.values(AGENT_SAMPLES)].map((m) => encodeMessage(m));
    let byes = 0;
    for (let i = 0; i < 2000; i++) {
      const s = createConnection(sock());
      const msgs: AgentMessage[] = [];
      readMessages(s, (m) => msgs.push(m));
      const closed = new Promise<void>((resolve) => s.on("close", () => resolve()));
      s.on("error", () => undefined);
      await new Promise<void>((resolve) => s.once("connect", () => resolve()));
      s.write(encodeMessage({ type: "hello", id: 1, body: { versions: [1], host_version: "fuzzer" } }));
      s.write(badInput(r, valid, decodeHostMessage));
      const timeout = new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), 3000));
      expect(await Promise.race([closed, timeout])).not.toBe("timeout");
      const bye = msgs.find((m) => m.type === "bye");
      expect(msgs[0]?.type).toBe("hello");
      expect(bye, `session ${i} ended without a bye`).toBeDefined();
      if (bye?.type === "bye") expect(bye.body.reason).toMatch(/^protocol violation: /);
      byes++;
    }
    expect(byes).toBe(2000);
    expect(agent.proc.exitCode).toBeNull();

    // Truncated frames just sit there (the agent waits for the rest) until the host goes away.
    for (let i = 0; i < 200; i++) {
      const s = createConnection(sock());
      s.on("error", () => undefined);
      await new Promise<void>((resolve) => s.once("connect", () => resolve()));
      const f = valid[r.int(valid.length)]!;
      s.end(f.subarray(0, r.int(f.length - 1) + 1));
      await new Promise<void>((resolve) => s.on("close", () => resolve()));
    }

    // Still healthy: a real link completes a hello.
    const link = new AgentLink({ connector: new UnixSocketConnector(sock()), logger: pino({ level: "silent" }), instanceId: "fuzz" });
    const hello = new Promise((resolve) => link.once("hello", resolve));
    link.start();
    // Both ends are this build, so they agree on its best version (2: with gateway streams).
    await expect(hello).resolves.toMatchObject({ version: SUPPORTED_PROTOCOL_VERSIONS[0] });
    await link.close();
    expect(agent.proc.exitCode).toBeNull();
  });

  test("1,000 bad frames at the host link: each session is closed with a logged reason and the link reconnects", async () => {
    const r = prng(SEED + 1);
    const path = join(root.dir, "fake-agent.sock");
    const valid = [...Object.values(AGENT_SAMPLES)].map((m) => encodeMessage(m));
    const wrongDirection = Object.values(HOST_SAMPLES).filter((m) => m.type !== "bye").map((m) => encodeMessage(m));
    let sessions = 0;
    const target = 1000;
    let resolveDone!: () => void;
    const done = new Promise<void>((resolve) => (resolveDone = resolve));
    // A test double of the agent: answers hello properly, then sends one bad frame.
    const server: Server = createServer((s) => {
      s.on("error", () => undefined);
      const d = new FrameDecoder();
      s.on("data", (c) => {
        for (const ev of d.push(c)) {
          if (ev.kind !== "frame") continue;
          const res = decodeHostMessage(ev.payload);
          if (!res.ok || res.message.type !== "hello") continue;
          const hello = (AGENT_SAMPLES.hello as Extract<AgentMessage, { type: "hello" }>).body;
          s.write(encodeMessage({ type: "hello", re: (res.message as Extract<HostMessage, { type: "hello" }>).id, body: hello }));
          const bad = r.int(5) === 0 ? wrongDirection[r.int(wrongDirection.length)]! : badInput(r, valid, decodeAgentMessage);
          s.write(bad);
        }
      });
      s.on("close", () => {
        if (++sessions === target) resolveDone();
      });
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    const lines: Array<{ level: number; msg: string; reason?: string }> = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        for (const l of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(l));
        cb();
      },
    });
    const link = new AgentLink({
      connector: new UnixSocketConnector(path),
      logger: pino({ level: "info" }, sink),
      instanceId: "fuzz-host",
      backoff: { initialMs: 1, maxMs: 2 },
      // 1,000 sessions in a few seconds is far over a guest's channel budget, which would drop some
      // hello replies (those sessions then end on the hello timeout, not on the bad frame). The
      // budget has its own tests; here every frame must reach the decoder.
      channelBudget: { framesPerSec: 1e6, burstFrames: 1e6, bytesPerSec: 1e9, burstBytes: 1e9 },
    });
    let disconnects = 0;
    link.on("disconnected", () => disconnects++);
    link.start();
    await done;
    await link.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    expect(disconnects).toBeGreaterThanOrEqual(target - 1);
    const closes = lines.filter((l) => l.msg === "agent session closed");
    const violations = closes.filter((l) => /^protocol violation: /.test(l.reason ?? ""));
    // Every session but possibly the last (closed by link.close()) ended on a logged violation.
    expect(violations.length).toBeGreaterThanOrEqual(target - 1);
  });
});

import { Decoder } from "cbor-x";
import { readFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { afterEach, beforeAll, describe, expect, test } from "vitest";
import { AgentLink, AgentRequestError, UnixSocketConnector } from "../../host/link/index.js";
import { decodeAgentMessage } from "../../shared/protocol/codec.js";
import { MessageStream } from "../../shared/protocol/message-stream.js";
import type { AgentHello, AgentMessage, Failed, HostMessage, Prepared, Progress, Ready, SetupParams } from "../../shared/protocol/messages.js";
import { eventDigest } from "../../guest/attest/tdx-digests.js";
import { configDigest, renderNeutralOpenClawConfig, renderOpenClawConfig } from "../../guest/setup/openclaw.js";
import {
  agentArgs,
  buildAgent,
  freePort,
  killStandIn,
  makeGuestRoot,
  once,
  removeRoot,
  spawnAgent,
  startSshd,
  testLogger,
  type AgentProcess,
  type GuestRoot,
  type Sshd,
  sshExec,
} from "./helpers.js";
import { prerequisites } from "../support/prerequisites.js";

const missing = prerequisites("warm pool agent tests", { root: true, files: ["/usr/sbin/sshd", "/usr/bin/ssh-keygen"] });

const ev = (type: string, payload: string) => ({ imr: 3, event_type: type, event: payload, digest: eventDigest(type, payload).toString("hex") });

describe.skipIf(missing !== null)("cvm-agent warm pool: prepare without a tenant, then claim", () => {
  let root: GuestRoot | undefined;
  let sshd: Sshd | undefined;
  const agents: AgentProcess[] = [];
  const links: AgentLink[] = [];

  beforeAll(() => buildAgent());

  afterEach(async () => {
    for (const l of links.splice(0)) await l.close();
    for (const a of agents.splice(0)) await a.kill("SIGKILL");
    if (root) await killStandIn(root);
    if (sshd) await sshd.stop();
    if (root) await removeRoot(root);
    root = undefined;
    sshd = undefined;
  });

  async function fixture(opts: { readyDelayMs?: number; reload?: "hot" | "restart" } = {}) {
    root = await makeGuestRoot(opts);
    sshd = await startSshd(root);
    const sock = join(root.dir, "agent.sock");
    const ocPort = await freePort();
    const args = agentArgs(root, ["--unix", sock, "--openclaw-port", String(ocPort), "--no-egress", "--openclaw-reload-timeout-ms", "5000"]);
    const params: SetupParams = {
      public_key: root.tenantKey.publicLine,
      agent: "openclaw",
      inference_model: "llama-3.1-8b",
      gateway_address: "http://127.0.0.1:18790/v1",
      instance_name: "warm0001",
    };
    return { root, sshd, sock, ocPort, args, params };
  }

  function newLink(sock: string) {
    const link = new AgentLink({ connector: new UnixSocketConnector(sock), logger: testLogger("link"), instanceId: "warm0001", backoff: { initialMs: 50, maxMs: 500 }, helloTimeoutMs: 3000 });
    links.push(link);
    return link;
  }

  const standInPid = async (r: GuestRoot) => Number((await readFile(join(r.dir, "run/cvm/cvm-openclaw.pid"), "utf8")).split("\n")[0]);

  test("prepare → prepared (neutral config, OpenClaw running) → setup → ready via hot reload; same OpenClaw process; tenant logs in; event log in order", async () => {
    const { root, sshd, sock, args, params } = await fixture();
    agents.push(spawnAgent(args, "warm-happy"));
    const link = newLink(sock);
    const progress: Progress[] = [];
    link.on("progress", (p) => progress.push(p));
    const hello = once<AgentHello>(link, "hello", 15_000);
    link.start();
    expect((await hello).state).toMatchObject({ phase: "awaiting_setup", prepared: null });

    const prepared = once<Prepared>(link, "prepared", 30_000);
    expect(await link.prepare()).toEqual({ already_applied: false });
    const p = await prepared;
    expect(p).toMatchObject({ openclaw_version: "2026.9.6", node_version: process.version });
    expect(p.prepare_ms).toBeGreaterThan(0);
    expect(progress.map((x) => x.stage)).toEqual(["accepted", "openclaw_verify", "openclaw_config", "openclaw_start", "openclaw_ready"]);
    const cfgPath = join(root.dir, "home/azureuser/.openclaw/openclaw.json");
    const neutral = await readFile(cfgPath, "utf8");
    expect(neutral).toBe(renderNeutralOpenClawConfig(Number(args[args.indexOf("--openclaw-port") + 1])));
    expect(neutral).not.toContain("models\": {\n    \"mode");
    const pidBefore = await standInPid(root);
    // No tenant key before the claim.
    await expect(readFile(join(root.dir, "home/azureuser/.ssh/authorized_keys"), "utf8")).rejects.toThrow(/ENOENT/);
    // A repeated prepare is acknowledged as already applied.
    expect(await link.prepare()).toEqual({ already_applied: true });

    progress.length = 0;
    const ready = once<Ready>(link, "ready", 30_000);
    await link.setup(params);
    const r = await ready;
    expect(r).toMatchObject({ openclaw_version: "2026.9.6", node_version: process.version });
    expect(progress.map((x) => x.stage)).toEqual(["accepted", "ssh_key", "openclaw_config", "openclaw_reload", "sshd_check", "openclaw_ready"]);
    expect(progress.find((x) => x.stage === "openclaw_reload")!.message).toMatch(/agents\.defaults\.model, models/);
    const ocPort = Number(args[args.indexOf("--openclaw-port") + 1]);
    expect(await readFile(cfgPath, "utf8")).toBe(renderOpenClawConfig(params, ocPort));
    expect(await standInPid(root)).toBe(pidBefore);
    process.kill(pidBefore, 0); // still alive

    const out = await sshExec(sshd.port, await readFile(root.tenantKey.privatePath), "echo claimed");
    expect(out.trim()).toBe("claimed");

    const q = await link.quote(Buffer.alloc(32, 7));
    expect(q.event_log).toEqual([
      ev("openclaw-tree", root.treeDigest),
      ev("openclaw-config-neutral", configDigest(neutral)),
      expect.objectContaining({ event_type: "ssh-authorized-key" }),
      ev("openclaw-config", configDigest(renderOpenClawConfig(params, ocPort))),
    ]);

    // prepare after the claim: refused.
    await expect(link.prepare()).rejects.toMatchObject({ name: "AgentRequestError", code: "setup_conflict" });
    // A reconnecting host learns the state from hello.
    const h2 = await (async () => {
      const l2 = newLink(sock);
      const h = once<AgentHello>(l2, "hello", 10_000);
      l2.start();
      return h;
    })();
    expect(h2.state).toMatchObject({ phase: "ready", prepared: p, ready: r });
  }, 60_000);

  test("setup while preparing is accepted and runs the claim right after the preparation", async () => {
    const { sock, args, params } = await fixture({ readyDelayMs: 1500 });
    agents.push(spawnAgent(args, "warm-during"));
    const link = newLink(sock);
    const progress: Progress[] = [];
    link.on("progress", (x) => progress.push(x));
    link.start();
    const prepared = once<Prepared>(link, "prepared", 30_000);
    const ready = once<Ready>(link, "ready", 30_000);
    const order: string[] = [];
    link.on("prepared", () => order.push("prepared"));
    await link.prepare();
    await link.setup(params);
    order.push("setup acknowledged");
    await prepared;
    await ready;
    expect(order).toEqual(["setup acknowledged", "prepared"]);
    const stages = progress.map((x) => x.stage);
    expect(stages.indexOf("openclaw_reload")).toBeGreaterThan(stages.lastIndexOf("openclaw_start"));
    expect(link.hello?.state.phase).not.toBe("failed");
  }, 60_000);

  test("prepare after a cold setup was accepted is an error; a cold setup still works", async () => {
    const { sock, args, params } = await fixture();
    agents.push(spawnAgent(args, "warm-cold"));
    const link = newLink(sock);
    link.start();
    const ready = once<Ready>(link, "ready", 30_000);
    await link.setup(params);
    const err = await link.prepare().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentRequestError);
    expect((err as AgentRequestError).code).toBe("setup_conflict");
    await ready;
  }, 60_000);

  test("an agent restarted while prepared says so in hello and the claim still reloads the same OpenClaw", async () => {
    const { root, sock, args, params } = await fixture();
    agents.push(spawnAgent(args, "warm-restart-1"));
    const link = newLink(sock);
    link.start();
    const prepared = once<Prepared>(link, "prepared", 30_000);
    await link.prepare();
    const p = await prepared;
    const pid = await standInPid(root);
    await agents[0]!.kill("SIGKILL");

    const again = once<Prepared>(link, "prepared", 15_000); // emitted from the new hello (phase prepared)
    agents.push(spawnAgent(args, "warm-restart-2"));
    expect(await again).toEqual(p);
    expect(link.hello?.state).toMatchObject({ phase: "prepared", prepared: p, setup_digest: null });
    const ready = once<Ready>(link, "ready", 30_000);
    await link.setup(params);
    await ready;
    expect(await standInPid(root)).toBe(pid);
  }, 60_000);

  test("a claim whose configuration change would restart OpenClaw fails with openclaw_start_failed", async () => {
    const { sock, args, params } = await fixture({ reload: "restart" });
    agents.push(spawnAgent(args, "warm-restart-needed"));
    const link = newLink(sock);
    link.start();
    const prepared = once<Prepared>(link, "prepared", 30_000);
    await link.prepare();
    await prepared;
    const failed = once<Failed>(link, "failed", 30_000);
    await link.setup(params);
    const f = await failed;
    expect(f.code).toBe("openclaw_start_failed");
    expect(f.message).toMatch(/restarts to apply the configuration/);
  }, 60_000);

  test("a version 2 host sees a prepared guest as awaiting setup, without the prepared key, and may not send prepare", async () => {
    const { sock, args } = await fixture();
    agents.push(spawnAgent(args, "warm-v2"));
    const link = newLink(sock);
    link.start();
    const prepared = once<Prepared>(link, "prepared", 30_000);
    await link.prepare();
    await prepared;
    await link.close();

    const sockConn = connect(sock);
    await new Promise((r, j) => sockConn.once("connect", r).once("error", j));
    const raw: Uint8Array[] = [];
    const stream = new MessageStream<AgentMessage, HostMessage>(sockConn, (payload) => {
      raw.push(payload);
      return decodeAgentMessage(payload);
    });
    const got: AgentMessage[] = [];
    stream.on("message", (m) => got.push(m));
    const closed = new Promise((r) => stream.on("closed", r));
    stream.send({ type: "hello", id: 1, body: { versions: [2, 1], host_version: "old-host" } });
    for (let i = 0; i < 100 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    const hello = got.find((m) => m.type === "hello");
    expect(hello?.type === "hello" && hello.body.version).toBe(2);
    expect(hello?.type === "hello" && hello.body.state).toEqual({ phase: "awaiting_setup", setup_digest: null, stage: "openclaw_ready", ready: null, failed: null, prepared: null });
    // On the wire the key is absent (a version 2 host's strict validator would reject it).
    const wire = new Decoder({ mapsAsObjects: true, useRecords: false }).decode(raw[0]!) as { body: { state: Record<string, unknown> } };
    expect(Object.keys(wire.body.state).sort()).toEqual(["failed", "phase", "ready", "setup_digest", "stage"]);
    stream.send({ type: "prepare", id: 2, body: {} });
    await closed;
    expect(got.some((m) => m.type === "bye" && /prepare in a protocol 2 session/.test(m.body.reason))).toBe(true);
  }, 60_000);
});

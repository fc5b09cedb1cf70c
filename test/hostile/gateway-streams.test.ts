import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { PerformanceObserver } from "node:perf_hooks";
import { createInterface } from "node:readline";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { HostServices } from "../../host/drivers/driver.js";
import { AgentLink, UnixSocketConnector } from "../../host/link/index.js";
import { tempDir } from "../support/daemon.js";
import { FakeDriver } from "../support/fake-driver.js";
import { OpenAiUpstreamTestDouble } from "../support/openai-upstream-double.js";
import { tsEntry } from "../support/processes.js";
import { sshKeyPair } from "../support/ssh-keys.js";
import { startGuest, type Guest } from "../gateway/harness.js";
import { startOpsDaemon, until, type OpsDaemon } from "../ops/helpers.js";
import { ATTACK_LIMITS, measureAttack } from "./harness.js";

/**
 * TEST DOUBLE of the VM driver that, like the QEMU driver, is handed the daemon's host services; the
 * test links each "guest" to the gateway handler of its instance exactly as the driver's openLink does.
 */
class HostServicesFakeDriver extends FakeDriver {
  services: HostServices | null = null;
  bindHostServices(s: HostServices): void {
    this.services = s;
  }
}

const STREAMS = 64;
const BYTES_PER_STREAM = 1024 * 1024;
/** The second wave reopens every stream the host refused, with one full frame each. */
const RETRY_BYTES = 256 * 1024;

/*
 * Hostile guest, gateway streams: a tenant who is root in its VM opens 64 gateway streams on its
 * agent channel and feeds each a 1 MiB body it never ends, then reopens every stream that was refused
 * (up to 80 MiB sent). Each stream is within the per-request limit (4 MiB); together they are four times the
 * guest's buffer (16 MiB).
 * cvmd (the real daemon, real AgentLink, real gateway) must hold no more than that cap, stay
 * responsive, record the episode once, and keep serving another tenant's guest.
 */
describe("hostile guest: 64 unterminated gateway streams with large bodies", () => {
  const dir = tempDir("cvm-hostile-gw-");
  const upstream = new OpenAiUpstreamTestDouble();
  const driver = new HostServicesFakeDriver();
  let d: OpsDaemon;
  let attacker: ChildProcess | null = null;
  let attackerLink: AgentLink | null = null;
  let bystander: Guest | null = null;
  const keys: Record<string, string> = {};
  const ids: Record<string, string> = {};

  async function instance(tenant: string): Promise<string> {
    const r = await d.fetch("/v1/instances", { key: keys[tenant], method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ public_key: sshKeyPair("ed25519").public }) });
    expect(r.status).toBe(202);
    const name = r.body.data.name as string;
    await until(
      async () => (await d.fetch(`/v1/instances/${name}`, { key: keys[tenant] })).body.data.status,
      (s) => s === "ready",
    );
    return (await d.db.get<{ id: string }>("SELECT id FROM instances WHERE name = ?", [name]))!.id;
  }

  beforeAll(async () => {
    await upstream.start();
    const models = join(dir.path, "models.json");
    writeFileSync(models, JSON.stringify({ default: "chat", models: [{ id: "chat", upstream: { base_url: upstream.url, api_key_env: null }, price_per_mtok_usd: { input: "1.00", output: "2.00" } }] }));
    d = await startOpsDaemon({ dataDir: join(dir.path, "data"), driver, env: { CVM_MODELS_FILE: models } });
    keys.mallory = await d.tenant("mallory");
    keys.alice = await d.tenant("alice");
    ids.mallory = await instance("mallory");
    ids.alice = await instance("alice");
    expect(driver.services?.gateway).toBeTruthy();
    bystander = await startGuest("alice", driver.services!.gateway!.handlerFor(ids.alice));
  }, 120_000);

  afterAll(async () => {
    await attackerLink?.close();
    attacker?.kill("SIGKILL");
    await bystander?.stop();
    await d?.close();
    await upstream.close();
    dir.remove();
  });

  test("cvmd holds at most the guest's cap, stays responsive, records one episode, and still serves the other tenant", async () => {
    const gateway = driver.services!.gateway!;
    const malloryHandler = gateway.handlerFor(ids.mallory!);
    const account = malloryHandler.buffers!;
    const sock = join(dir.path, "mallory-agent.sock");
    attacker = spawn(process.execPath, [...tsEntry("test/hostile/gateway-attacker.ts"), "--socket", sock, "--streams", String(STREAMS), "--bytes-per-stream", String(BYTES_PER_STREAM), "--waves", "2", "--retry-bytes", String(RETRY_BYTES)], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const lines = createInterface({ input: attacker.stdout! })[Symbol.asyncIterator]();
    const next = async () => JSON.parse(((await lines.next()).value as string) ?? "null") as Record<string, any>;
    expect(await next()).toEqual({ listening: sock });

    // The same measurement with no attack, printed beside the attack's: on a shared, loaded machine
    // the loop's worst delay includes the scheduler's, which no code in cvmd can take away.
    const idle = await measureAttack({ attack: () => new Promise((r) => setTimeout(r, 2000)), probe: () => d.fetch("/v1/instances", { key: keys.alice }) });
    const bystanderCalls: number[] = [];
    let maxHeld = 0;
    const cpu0 = process.cpuUsage();
    // GC pauses are reported apart: cvmd shares this process (and its heap) with the test runner.
    let gcMaxMs = 0;
    const gcs = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) gcMaxMs = Math.max(gcMaxMs, e.duration);
    });
    gcs.observe({ entryTypes: ["gc"] });
    const cost = await measureAttack({
      attack: async () => {
        // The channel budget is lifted here: at its default it drops most of these 64 MiB undecoded
        // (test/hostile/agent-channel.sys.test.ts shows that); this attack must reach the gateway's
        // per-guest buffer account, the defence that holds whatever rate the channel lets through.
        attackerLink = new AgentLink({
          connector: new UnixSocketConnector(sock),
          logger: pino({ level: "silent" }),
          instanceId: ids.mallory!,
          backoff: { initialMs: 20, maxMs: 200 },
          channelBudget: { framesPerSec: 1e6, burstFrames: 1e6, bytesPerSec: 1e9, burstBytes: 1e9 },
        });
        attackerLink.onGatewayRequest(malloryHandler);
        attackerLink.start();
        const watch = setInterval(() => (maxHeld = Math.max(maxHeld, account.held)), 5);
        try {
          const waves = [await next(), await next()];
          // Every stream past the cap was refused with a gateway error and closed; reopened, refused again.
          expect(waves[0]).toMatchObject({ wave: 1, streams: STREAMS, sent: STREAMS * BYTES_PER_STREAM });
          expect(waves[0]!.answered).toBeGreaterThanOrEqual(STREAMS - 16);
          expect(waves[0]!.statuses).toEqual({ "429": waves[0]!.answered });
          expect(waves[1]).toMatchObject({ wave: 2, streams: waves[0]!.answered, sent: waves[0]!.answered * RETRY_BYTES, answered: waves[0]!.answered });
          expect(waves[1]!.statuses).toEqual({ "429": 2 * waves[0]!.answered });
          // Meanwhile another tenant's guest is served through the same gateway.
          const t0 = performance.now();
          const r = await fetch(`${bystander!.gatewayUrl}/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ messages: [{ role: "user", content: "count 3" }] }) });
          bystanderCalls.push(r.status, performance.now() - t0);
          expect(((await r.json()) as any).choices[0].message.content).toBe("w1 w2 w3");
        } finally {
          clearInterval(watch);
        }
      },
      probe: () => d.fetch("/v1/instances", { key: keys.alice }),
    });
    const cpu = process.cpuUsage(cpu0);
    gcs.disconnect();
    const summary = (c: typeof cost) => ({ loopDelayMaxMs: c.loopDelayMaxMs, rssGrowthMiB: c.rssGrowthMiB, probes: c.probeMs.length, probeMaxMs: Math.max(...c.probeMs) });
    console.log(
      `gateway-streams attack: ${JSON.stringify({ attack: summary(cost), idle: summary(idle), cvmdCpuMs: Math.round((cpu.user + cpu.system) / 1000), gcMaxMs, maxHeldBytes: maxHeld, bystanderStatus: bystanderCalls[0], bystanderMs: bystanderCalls[1] })}`,
    );

    expect(maxHeld).toBeLessThanOrEqual(16 * 1024 * 1024);
    expect(maxHeld).toBeGreaterThan(8 * 1024 * 1024); // the attack did reach the cap
    expect(bystanderCalls[0]).toBe(200);
    expect(cost.loopDelayMaxMs).toBeLessThan(ATTACK_LIMITS.loopDelayMaxMs);
    expect(cost.rssGrowthMiB).toBeLessThan(ATTACK_LIMITS.rssGrowthMiB);
    expect(Math.max(...cost.probeMs)).toBeLessThan(ATTACK_LIMITS.probeMs);
    const episodes = d.security.filter((e) => e.event === "gateway_buffer_limit");
    expect(episodes).toHaveLength(1);
    expect(episodes[0]).toMatchObject({ instance_id: ids.mallory, capacity_bytes: 16 * 1024 * 1024 });

    // The session ends (the guest goes away): everything it held is released, and its next overflow is a new episode.
    attacker.kill("SIGKILL");
    await until(async () => account.held, (n) => n === 0);
    expect(account.held).toBe(0);
    expect(d.security.filter((e) => e.event === "gateway_buffer_limit")).toHaveLength(1);
  }, 120_000);
});

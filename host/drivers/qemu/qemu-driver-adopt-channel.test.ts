import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, describe, expect, test } from "vitest";
import { encodeMessage } from "../../../shared/protocol/codec.js";
import type { AgentMessage } from "../../../shared/protocol/messages.js";
import { AGENT_SAMPLES } from "../../../shared/protocol/testdata/samples.js";
import { serveHostFrames } from "../../../test/support/host-frame-server.js";
import type { AdoptResult, GuestProfile, Hypervisor, LaunchRecord } from "../../vmm/hypervisor.js";
import { buildQemuArgs } from "../../vmm/qemu-args.js";
import { ensureRunDir, runPaths } from "../../vmm/run-dir.js";
import type { DriverContext, InstanceSpec } from "../driver.js";
import { QemuDriver, type QemuDriverOptions } from "./qemu-driver.js";

const HELLO = (AGENT_SAMPLES.hello as Extract<AgentMessage, { type: "hello" }>).body;
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

/** TEST DOUBLE of the hypervisor's adoption: a live guest whose launch record says how it was started. */
function adoptingHypervisor(record: LaunchRecord): Hypervisor {
  return {
    adopt: async (id: string): Promise<AdoptResult> => ({ adopted: true, instanceId: id, pid: 4242, status: "running", record }),
    inspect: async (id: string) => ({ instanceId: id, state: "stopped" as const }),
    stop: async () => ({ stoppedBy: "already-stopped" as const, elapsedMs: 0 }),
  } as unknown as Hypervisor;
}

async function adoptUnder(driverProfile: GuestProfile, launchedAs: GuestProfile) {
  const dir = await mkdtemp(join(tmpdir(), "cvm-adopt-"));
  const id = "guest-1";
  const cid = 9;
  const paths = runPaths(dir, id);
  await ensureRunDir(paths);
  const argv = buildQemuArgs({ instanceId: id, profile: launchedAs, accel: "tcg", cid, image: { kernel: "/k", initrd: "/i", cmdline: "x", disks: [] }, nic: { tap: "tap0", mac: "52:54:00:00:00:02" }, tdx: { firmware: "/fw" } }, paths);
  const record: LaunchRecord = { version: 1, instanceId: id, profile: launchedAs, accel: "tcg", cid, tap: "tap0", mac: "52:54:00:00:00:02", netns: null, argv, recordedAt: new Date().toISOString(), serialOffset: 0 };
  const network = { detach: async () => undefined };
  const firewall = { remove: async () => undefined };
  const driver = new QemuDriver({ dataDir: dir, profile: driverProfile, hypervisor: adoptingHypervisor(record),
    // Never a real vsock dial from a unit test: the bridge binary fails at once.
    socat: "/bin/false", network, firewall, logger: pino({ level: "silent" }), accel: "tcg", timeouts: { bootMs: 5_000, setupAckMs: 1_000, setupMs: 1_000, sshMs: 1_000 } } as unknown as QemuDriverOptions);
  const ac = new AbortController();
  const ctx: DriverContext = { signal: ac.signal, event: () => undefined, saveRuntime: async () => undefined };
  const spec: InstanceSpec = { id, name: "abcdefgh", tenantSlug: "acme", hostname: "h", publicKey: "k", agent: "openclaw", inferenceModel: "m", egressLimitBytes: 1, runtime: { tap: "tap0", mac: "52:54:00:00:00:02", ip: "10.0.0.2", netns: "ns", cid, ssh: { host: "127.0.0.1", port: 1 }, imageId: "img" } };
  return { driver, dir, id, cid, paths, spec, ctx, ac };
}

describe("adopting a guest launched under another profile", () => {
  test("dials the channel the guest's recorded command line created, not the current profile's", async () => {
    const { driver, dir, id, cid, paths, spec, ctx, ac } = await adoptUnder("tdx", "plain");
    const server = await serveHostFrames(paths.agent, (m, s) => {
      if (m.type === "hello") s.write(encodeMessage({ type: "hello", re: m.id, body: HELLO }));
    });
    cleanups.push(async () => {
      ac.abort(new Error("test over"));
      await driver.close();
      await server.close();
      await rm(dir, { recursive: true, force: true });
    });
    const res = await driver.adopt(spec, ctx);
    expect(res.alive).toBe(true);
    if (res.alive) res.ready.catch(() => undefined);
    expect(driver.agentConnector(id, cid).description).toBe(`unix:${paths.agent}`);
    // The link really talks to the agent behind that socket.
    const link = driver.link(id)!;
    await new Promise<void>((resolve) => (link.hello ? resolve() : link.once("hello", () => resolve())));
    expect(link.hello?.image_id).toBe(HELLO.image_id);
  });

  test("a guest launched under the current profile keeps the profile's channel", async () => {
    const { driver, dir, id, cid, spec, ctx, ac } = await adoptUnder("tdx", "tdx");
    cleanups.push(async () => {
      ac.abort(new Error("test over"));
      await driver.close();
      await rm(dir, { recursive: true, force: true });
    });
    const res = await driver.adopt(spec, ctx);
    if (res.alive) res.ready.catch(() => undefined);
    expect(driver.agentConnector(id, cid).description).toBe(`vsock:${cid}:1024`);
  });
});

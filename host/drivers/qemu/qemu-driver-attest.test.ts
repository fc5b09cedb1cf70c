import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, describe, expect, test } from "vitest";
import { encodeMessage } from "../../../shared/protocol/codec.js";
import type { AgentMessage, QuoteReply } from "../../../shared/protocol/messages.js";
import { AGENT_SAMPLES } from "../../../shared/protocol/testdata/samples.js";
import type { ImageCatalog } from "../../images/image-catalog.js";
import type { AdoptResult, Hypervisor } from "../../vmm/hypervisor.js";
import { ensureRunDir, runPaths } from "../../vmm/run-dir.js";
import { AttestationUnavailableError, type InstanceSpec } from "../driver.js";
import { QemuDriver, type QemuDriverOptions } from "./qemu-driver.js";
import { serveHostFrames } from "../../../test/support/host-frame-server.js";

const HELLO = (AGENT_SAMPLES.hello as Extract<AgentMessage, { type: "hello" }>).body;
const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmGHkWDnb6W3Ssd8p8cRUzlgPGTd2lkNXCx2n9tJfJP";
const EVENT = { imr: 3 as const, digest: "ab".repeat(48), event_type: "openclaw-tree", event: "{}" };

let dir: string;
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** TEST DOUBLE of the hypervisor's adoption: a guest that is running, launched under the plain profile. */
function adoptingHypervisor(): Hypervisor {
  return {
    adopt: async (id: string): Promise<AdoptResult> => ({
      adopted: true,
      instanceId: id,
      pid: 4242,
      status: "running",
      record: { version: 1, instanceId: id, profile: "plain", accel: "tcg", cid: 9, tap: "tap0", mac: "52:54:00:00:00:02", netns: null, argv: [], recordedAt: new Date().toISOString(), serialOffset: 0 },
    }),
    stop: async () => ({ stoppedBy: "already-stopped" as const, elapsedMs: 0 }),
  } as unknown as Hypervisor;
}

const RUNTIME = { tap: "tap0", mac: "52:54:00:00:00:02", ip: "10.0.0.2", netns: "ns", cid: 9, ssh: { host: "127.0.0.1", port: 1 } };

/**
 * The QEMU driver's attest() against a stand-in agent on the guest's Unix socket (the plain profile's
 * channel). No VM: the driver adopts a "running" guest, which is how it opens the channel a restarted
 * cvmd uses, and attest() then goes over that channel.
 */
async function setup(answer: (nonce: Buffer) => AgentMessage | null) {
  dir = await mkdtemp(join(tmpdir(), "qemu-attest-"));
  const paths = runPaths(dir, "i1");
  await ensureRunDir(paths);
  const nonces: Buffer[] = [];
  const server = await serveHostFrames(paths.agent, (m, s) => {
    if (m.type === "hello") s.write(encodeMessage({ type: "hello", re: m.id, body: HELLO }));
    if (m.type === "quote") {
      nonces.push(m.body.nonce);
      const reply = answer(m.body.nonce);
      if (reply) s.write(encodeMessage({ ...reply, re: m.id } as AgentMessage));
    }
  });
  const images = {
    manifestOf: async (id: string) => (id === "cvm-img" ? { image_id: id, expected_measurements: { rtmr2: "cd".repeat(48) } } : null),
  } as unknown as ImageCatalog;
  const driver = new QemuDriver({
    dataDir: dir,
    images,
    profile: "plain",
    accel: "tcg",
    hypervisor: adoptingHypervisor(),
    network: { detach: async () => undefined },
    firewall: { remove: async () => undefined },
    logger: pino({ level: "silent" }),
    // The stand-in never acknowledges the setup that follows adoption; these only keep it pending.
    timeouts: { bootMs: 5_000, setupAckMs: 60_000, setupMs: 60_000, sshMs: 60_000 },
  } as unknown as QemuDriverOptions);
  const ac = new AbortController();
  cleanups.push(async () => {
    ac.abort(new Error("test over"));
    await driver.close();
    await server.close();
  });
  const adopted = await driver.adopt(spec({ ...RUNTIME, imageId: "cvm-img" }), { signal: ac.signal, event: () => undefined, saveRuntime: async () => undefined });
  if (!adopted.alive) throw new Error(`not adopted: ${adopted.reason}`);
  adopted.ready.catch(() => undefined);
  const link = driver.link("i1")!;
  await new Promise<void>((resolve) => (link.hello ? resolve() : link.once("hello", () => resolve())));
  return { driver, nonces };
}

const spec = (runtime: Record<string, unknown> | null): InstanceSpec => ({
  id: "i1",
  name: "abcdefgh",
  tenantSlug: "acme",
  hostname: "abcdefgh.acme.cvm.localhost",
  publicKey: KEY,
  agent: "openclaw",
  inferenceModel: "m",
  egressLimitBytes: 1,
  runtime,
});

describe("QemuDriver.attest", () => {
  test("passes the nonce to the agent; host keys come from the runtime record, not the reply", async () => {
    const quote = Buffer.alloc(100, 7);
    const { driver, nonces } = await setup(() => ({ type: "quote_reply", re: 0, body: { available: true, quote, report_data: Buffer.alloc(64, 1), event_log: [EVENT] } as QuoteReply }));
    const nonce = Buffer.alloc(24, 9);
    const ev = await driver.attest(spec({ ...RUNTIME, imageId: "cvm-img", hostKeys: [KEY] }), nonce);
    expect(nonces).toEqual([nonce]);
    expect(ev).toEqual({
      available: true,
      quote,
      reportData: Buffer.alloc(64, 1),
      eventLog: [EVENT],
      hostKeys: [KEY],
      image: { id: "cvm-img", expectedMeasurements: { rtmr2: "cd".repeat(48) } },
    });
  });

  test("an agent without TDX: its reason and event log; an unknown image has no expectations", async () => {
    const { driver } = await setup(() => ({ type: "quote_reply", re: 0, body: { available: false, reason: "no TDX quote interface: /sys/kernel/config/tsm/report is not present in this guest", event_log: [] } }));
    const ev = await driver.attest(spec({ ...RUNTIME, imageId: "gone", hostKeys: [KEY] }), Buffer.alloc(16));
    expect(ev).toEqual({ available: false, reason: expect.stringMatching(/no TDX quote interface/), eventLog: [], image: { id: "gone", expectedMeasurements: null } });
  });

  test("no channel, no recorded host keys, or an error reply: AttestationUnavailableError", async () => {
    const { driver } = await setup(() => ({ type: "error", re: 0, body: { code: "not_ready_for_request", message: "setup not finished" } }));
    await expect(driver.attest(spec({ ...RUNTIME, imageId: "cvm-img" }), Buffer.alloc(16))).rejects.toThrow(/host keys of this instance are not recorded/);
    await expect(driver.attest({ ...spec({ ...RUNTIME, imageId: "cvm-img", hostKeys: [KEY] }), id: "other" }, Buffer.alloc(16))).rejects.toThrow(AttestationUnavailableError);
    await expect(driver.attest(spec({ ...RUNTIME, imageId: "cvm-img", hostKeys: [KEY] }), Buffer.alloc(16))).rejects.toThrow(/did not answer the quote request \(not_ready_for_request: setup not finished\)/);
  });
});

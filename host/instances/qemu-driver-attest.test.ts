import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, describe, expect, test } from "vitest";
import { encodeMessage } from "../../shared/protocol/codec.js";
import type { AgentMessage, QuoteReply } from "../../shared/protocol/messages.js";
import { AGENT_SAMPLES } from "../../shared/protocol/testdata/samples.js";
import type { ImageCatalog } from "../images/image-catalog.js";
import { AgentLink, UnixSocketConnector } from "../link/index.js";
import { AttestationUnavailableError, type InstanceSpec } from "./driver.js";
import { QemuDriver, type QemuDriverOptions } from "./qemu-driver.js";
import { serveHostFrames } from "../../test/support/host-frame-server.js";

const HELLO = (AGENT_SAMPLES.hello as Extract<AgentMessage, { type: "hello" }>).body;
const KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmGHkWDnb6W3Ssd8p8cRUzlgPGTd2lkNXCx2n9tJfJP";
const EVENT = { imr: 3 as const, digest: "ab".repeat(48), event_type: "openclaw-tree", event: "{}" };

let dir: string;
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/**
 * The QEMU driver's attest() against a stand-in agent over a Unix socket (the transport the driver
 * uses in development). No VM: the link is put where bringUp would have put it.
 */
async function setup(answer: (nonce: Buffer) => AgentMessage | null) {
  dir = await mkdtemp(join(tmpdir(), "qemu-attest-"));
  const path = join(dir, "agent.sock");
  const nonces: Buffer[] = [];
  const server = await serveHostFrames(path, (m, s) => {
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
  const driver = new QemuDriver({ images, profile: "plain", logger: pino({ level: "silent" }) } as unknown as QemuDriverOptions);
  const link = new AgentLink({ connector: new UnixSocketConnector(path), logger: pino({ level: "silent" }), instanceId: "i1", hostVersion: "test" });
  link.start();
  (driver as unknown as { links: Map<string, AgentLink> }).links.set("i1", link);
  cleanups.push(async () => {
    await link.close();
    await server.close();
  });
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
    const ev = await driver.attest(spec({ imageId: "cvm-img", hostKeys: [KEY] }), nonce);
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
    const ev = await driver.attest(spec({ imageId: "gone", hostKeys: [KEY] }), Buffer.alloc(16));
    expect(ev).toEqual({ available: false, reason: expect.stringMatching(/no TDX quote interface/), eventLog: [], image: { id: "gone", expectedMeasurements: null } });
  });

  test("no channel, no recorded host keys, or an error reply: AttestationUnavailableError", async () => {
    const { driver } = await setup(() => ({ type: "error", re: 0, body: { code: "not_ready_for_request", message: "setup not finished" } }));
    await expect(driver.attest(spec({ imageId: "cvm-img" }), Buffer.alloc(16))).rejects.toThrow(/host keys of this instance are not recorded/);
    await expect(driver.attest({ ...spec({ imageId: "cvm-img", hostKeys: [KEY] }), id: "other" }, Buffer.alloc(16))).rejects.toThrow(AttestationUnavailableError);
    await expect(driver.attest(spec({ imageId: "cvm-img", hostKeys: [KEY] }), Buffer.alloc(16))).rejects.toThrow(/did not answer the quote request \(not_ready_for_request: setup not finished\)/);
  });
});

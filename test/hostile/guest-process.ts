/**
 * A root tenant's end of the agent channel, run as its own process so that its work is not charged to
 * the cvmd under test. Listens on the socket the SocketGuestDriver (TEST DOUBLE of the VM) dials,
 * answers the host's hello like an agent, and then, on each line read from stdin, runs one attack on
 * the current connection and prints `done <attack>` once its bytes are written.
 *
 *   node --import tsx guest-process.ts <socket> [--heartbeat-ms N]
 *
 * Every attack is bounded in bytes and time.
 */
import type { Socket } from "node:net";
import { createInterface } from "node:readline";
import { encodeMessage } from "../../shared/protocol/codec.js";
import { encodeFrame, MAX_FRAME_PAYLOAD } from "../../shared/protocol/frame.js";
import type { AgentMessage } from "../../shared/protocol/messages.js";
import { AGENT_SAMPLES } from "../../shared/protocol/testdata/samples.js";
import { serveHostFrames } from "../support/host-frame-server.js";
import { crcBomb, forgedHeader } from "../../shared/protocol/testdata/hostile-frames.js";

const [path, ...rest] = process.argv.slice(2);
const heartbeatMs = rest[0] === "--heartbeat-ms" ? Number(rest[1]) : 0;
const HELLO = (AGENT_SAMPLES.hello as Extract<AgentMessage, { type: "hello" }>).body;

let current: Socket | null = null;
let helloAnswered = false;
/** Attack to run on each new connection before answering hello (the repeated, pre-hello bomb). */
let onConnect: ((s: Socket) => void) | null = null;

/*
 * Every attack's bytes are built before the host connects: on two shared cores, the attacker's own
 * CPU during the attack would otherwise be charged to cvmd's event-loop delay.
 */
const BOMB = crcBomb(MAX_FRAME_PAYLOAD);
const EGRESS_FLOOD = Array.from({ length: 10 }, (_, batch) =>
  Buffer.concat(
    Array.from({ length: 1000 }, (_, i) => {
      const n = batch * 1000 + i;
      return encodeMessage({ type: "egress", body: { bytes: 1_000_000 + n, packets: 1000 + n, sampled_at: "9999-12-31T23:59:59.999Z" } });
    }),
  ),
);
const OVERSIZED = Buffer.concat([forgedHeader(64 * 1024 * 1024), Buffer.alloc(256 * 1024, 0x55)]);
const TORN = encodeFrame(Buffer.alloc(64 * 1024, 0x33));
const TRUNCATED = Buffer.concat([TORN.subarray(0, TORN.length / 2), encodeMessage(AGENT_SAMPLES.heartbeat!)]);

const write = (s: Socket, b: Buffer) => new Promise<void>((resolve) => (s.destroyed ? resolve() : s.write(b, () => resolve())));

await serveHostFrames(
  path!,
  (m, s) => {
    if (m.type === "hello") {
      current = s;
      helloAnswered = true;
      s.write(encodeMessage({ type: "hello", re: m.id, body: HELLO }));
    }
  },
  (s) => {
    current = s;
    helloAnswered = false;
    onConnect?.(s);
  },
);

if (heartbeatMs > 0) {
  setInterval(() => {
    if (current && helloAnswered && !current.destroyed) current.write(encodeMessage(AGENT_SAMPLES.heartbeat!));
  }, heartbeatMs);
}

async function connected(): Promise<Socket> {
  for (let i = 0; i < 400 && !(current && helloAnswered && !current.destroyed); i++) await new Promise((r) => setTimeout(r, 25));
  if (!current || current.destroyed) throw new Error("no host connection");
  return current;
}

const attacks: Record<string, () => Promise<void>> = {
  /** Nothing: the baseline the attacks are compared with. */
  idle: async () => void (await connected()),
  /** 1 MiB of forged headers each claiming the rest of the buffer, after hello. */
  "crc-bomb": async () => write(await connected(), BOMB),
  /**
   * For 3 s, every connection the host makes gets 1 MiB bombs before any hello reply (where stale
   * bytes are tolerated), up to 4 MiB per connection.
   */
  "crc-bomb-repeat": async () => {
    const blast = async (s: Socket) => {
      for (let i = 0; i < 4 && !s.destroyed; i++) await write(s, BOMB);
    };
    onConnect = (s) => void blast(s);
    const s = await connected();
    s.destroy(); // the host reconnects, and meets the bomb
    await new Promise((r) => setTimeout(r, 3000));
    onConnect = null;
  },
  /** 10,000 egress samples dated 9999-12-31, as fast as the socket takes them. */
  "egress-flood": async () => {
    const s = await connected();
    for (const batch of EGRESS_FLOOD) await write(s, batch);
  },
  /** A header (valid header CRC) announcing 64 MiB, then 256 KiB of its "payload". */
  oversized: async () => write(await connected(), OVERSIZED),
  /** A frame cut off halfway, then an intact heartbeat: the torn frame is a framing error after hello. */
  truncated: async () => write(await connected(), TRUNCATED),
};

for await (const line of createInterface({ input: process.stdin })) {
  const name = line.trim();
  const attack = attacks[name];
  if (!attack) {
    process.stdout.write(`unknown ${name}\n`);
    continue;
  }
  await attack().then(
    () => process.stdout.write(`done ${name}\n`),
    (err: Error) => process.stdout.write(`failed ${name}: ${err.message}\n`),
  );
}
process.exit(0);

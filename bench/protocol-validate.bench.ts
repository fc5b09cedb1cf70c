/**
 * Cost of checking what a guest sends: the host runs validateAgentMessage on every frame of every
 * guest, inside the per-guest budgets, so a slower validator is less room for everything else.
 * Measures the validator alone and decode (CBOR + validate) for the frequent agent messages.
 * Run: npx vitest run --config bench/vitest.bench.config.ts bench/protocol-validate.bench.ts
 */
import { loadavg } from "node:os";
import { Decoder } from "cbor-x";
import { expect, test } from "vitest";
import { decodeAgentMessage, encodeMessagePayload } from "../shared/protocol/codec.js";
import { validateAgentMessage, type AgentMessage } from "../shared/protocol/messages.js";

const N = Number(process.env.CVM_BENCH_MESSAGES ?? 100_000);
const ROUNDS = 5;
/** The codec's decoder options, so the validator gets the same kind of value it gets on a link. */
const raw = new Decoder({ useRecords: false, mapsAsObjects: true });

const MESSAGES: Record<string, AgentMessage> = {
  heartbeat: {
    type: "heartbeat",
    body: { uptime_s: 1234.5, load: [0.25, 0.5, 0.75], mem_total_bytes: 2_147_483_648, mem_available_bytes: 1_073_741_824, openclaw: "healthy" },
  },
  egress: { type: "egress", body: { bytes: 123_456_789, packets: 98_765, sampled_at: "2026-12-03T14:00:00.000Z" } },
  gw_request: {
    type: "gw_request",
    body: {
      stream: 7,
      method: "POST",
      path: "/v1/chat/completions",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: Buffer.alloc(512, 0x61),
      end: true,
    },
  },
  gw_request_body: { type: "gw_request_body", body: { stream: 7, data: Buffer.alloc(4096, 0x61), end: false } },
};

/** Best of ROUNDS, in nanoseconds per call: the least disturbed by whatever else the machine runs. */
function nsPerCall(fn: () => unknown): number {
  let best = Infinity;
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) fn();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / N);
  }
  return best;
}

test(`agent message validation, ${N} messages per round, best of ${ROUNDS}`, () => {
  console.log(`load average ${loadavg().map((x) => x.toFixed(2)).join(" ")}`);
  for (const [name, msg] of Object.entries(MESSAGES)) {
    const payload = encodeMessagePayload(msg);
    expect(decodeAgentMessage(payload).ok).toBe(true);
    // The validator sees what the CBOR decoder produced, not the object the sender built.
    const value: unknown = raw.decode(payload);
    const validate = nsPerCall(() => validateAgentMessage(value));
    const decode = nsPerCall(() => decodeAgentMessage(payload));
    console.log(`${name.padEnd(16)} validate ${(validate / 1000).toFixed(2)} µs/msg, decode+validate ${(decode / 1000).toFixed(2)} µs/msg`);
  }
});

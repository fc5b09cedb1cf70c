import { describe, expect, test } from "vitest";
import { decodeAgentMessage, decodeHostMessage, encodeMessage, encodeMessagePayload } from "./codec.js";
import { encodeFrame, FRAME_HEADER_LEN, FrameDecoder, MAX_FRAME_PAYLOAD } from "./frame.js";
import { AGENT_SAMPLES, HOST_SAMPLES } from "./testdata/samples.js";
import { prng } from "./testdata/prng.js";
import { Decoder, Encoder } from "cbor-x";
import { z } from "zod";
import { MESSAGE_SCHEMAS, validateAgentMessage, validateHostMessage } from "./messages.js";

const SEED = Number(process.env.CVM_FUZZ_SEED ?? 20261124);
const samples = [...Object.values(HOST_SAMPLES), ...Object.values(AGENT_SAMPLES)];
const raw = new Encoder({ useRecords: false, mapsAsObjects: true, variableMapSize: true, tagUint8Array: false });
const rawDecoder = new Decoder({ useRecords: false, mapsAsObjects: true });

/** Values near the protocol's bounds and of the wrong kind, to put in place of a field. */
const EDGES: unknown[] = [
  null, true, 0, -1, 1.5, NaN, Infinity, 2 ** 53, 0xffff_ffff, 2 ** 32, 99, 600, 2n ** 64n, "", "a", "a b", "x".repeat(4097),
  "http://u:p@h/", "2026-01-01T00:00:00Z", "healthy", "GET", "ready", Buffer.alloc(0), Buffer.alloc(16), Buffer.alloc(65),
  new Date(0), new Set([1]), [], [1, 2, 3, 4], {}, { "content-type": "x" }, { Upper: "x" }, Array.from({ length: 17 }, (_, i) => `h${i}`),
];

/** One structural change: a field replaced, removed or added, somewhere in the message. */
function mutate(r: ReturnType<typeof prng>, v: unknown): unknown {
  if (v === null || typeof v !== "object" || v instanceof Uint8Array) return EDGES[r.int(EDGES.length)];
  if (Array.isArray(v)) {
    const a = [...v];
    if (a.length > 0 && r.int(3) > 0) a[r.int(a.length)] = mutate(r, a[r.int(a.length)]);
    else if (r.int(2) === 0) a.push(EDGES[r.int(EDGES.length)]);
    else a.pop();
    return a;
  }
  const o = { ...(v as Record<string, unknown>) };
  const keys = Object.keys(o);
  const k = keys[r.int(keys.length)];
  const what = r.int(6);
  if (what === 0 || k === undefined) o[`x${r.int(3)}`] = EDGES[r.int(EDGES.length)];
  else if (what === 1) delete o[k];
  else o[k] = mutate(r, o[k]);
  return o;
}

function randomValue(r: ReturnType<typeof prng>, depth = 0): unknown {
  const k = r.int(depth > 3 ? 6 : 9);
  switch (k) {
    case 0: return r.int(2 ** 31) - 2 ** 30;
    case 1: return r.next() * 1e6;
    case 2: return r.bytes(r.int(40)).toString("latin1");
    case 3: return r.bytes(r.int(80));
    case 4: return r.int(2) === 0;
    case 5: return null;
    case 6: return Array.from({ length: r.int(5) }, () => randomValue(r, depth + 1));
    default: {
      const keys = ["type", "id", "re", "body", "versions", "nonce", "public_key", "phase", "state", "bytes", "x"];
      const o: Record<string, unknown> = {};
      for (let i = r.int(5); i > 0; i--) o[keys[r.int(keys.length)]!] = randomValue(r, depth + 1);
      if (depth === 0 && r.int(2) === 0) o.type = ["hello", "setup", "quote", "ready", "egress", "bye", "ack", "error"][r.int(8)];
      return o;
    }
  }
}

describe(`protocol fuzz (seed ${SEED})`, () => {
  test("10,000 mutated message payloads: decoders never throw, rejections carry a reason", () => {
    const r = prng(SEED);
    let rejected = 0;
    for (let i = 0; i < 10_000; i++) {
      let payload: Buffer;
      if (i % 3 === 0) payload = Buffer.from(raw.encode(randomValue(r)));
      else {
        payload = Buffer.from(encodeMessagePayload(samples[r.int(samples.length)]!));
        const mode = r.int(4);
        if (mode === 0) payload = payload.subarray(0, r.int(payload.length)); // truncated
        else if (mode === 1) for (let j = r.int(4) + 1; j > 0; j--) payload[r.int(payload.length)] = r.int(256); // flipped
        else if (mode === 2) payload = Buffer.concat([payload, r.bytes(r.int(8) + 1)]); // trailing
        else payload = r.bytes(r.int(200)); // noise
      }
      for (const decode of [decodeHostMessage, decodeAgentMessage]) {
        const res = decode(payload);
        if (!res.ok) {
          rejected++;
          expect(res.reason.length).toBeGreaterThan(0);
        }
      }
    }
    expect(rejected).toBeGreaterThan(15_000);
  });

  test("the compiled validators accept and return exactly what their schemas do, on 20,000 mutated messages", () => {
    // z.compile hands rejections to the runtime parser but returns its own successes as they are, so a
    // compiler bug would be a check silently skipped on guest input: hold it to the schemas it came from.
    const r = prng(SEED + 2);
    const directions = [
      { samples: Object.values(HOST_SAMPLES), schema: MESSAGE_SCHEMAS.host, validate: validateHostMessage },
      { samples: Object.values(AGENT_SAMPLES), schema: MESSAGE_SCHEMAS.agent, validate: validateAgentMessage },
    ];
    let accepted = 0;
    for (let i = 0; i < 20_000; i++) {
      const d = directions[i % 2]!;
      let m: unknown = d.samples[r.int(d.samples.length)];
      for (let j = r.int(3); j >= 0; j--) m = mutate(r, m);
      const value = rawDecoder.decode(raw.encode(m));
      const runtime = d.schema.safeParse(value);
      let compiled: unknown;
      try {
        compiled = d.validate(value);
      } catch {
        compiled = undefined;
      }
      expect(compiled !== undefined, JSON.stringify(m, (_k, x) => (typeof x === "bigint" ? `${x}n` : x))).toBe(runtime.success);
      if (runtime.success) {
        accepted++;
        expect(compiled).toEqual(runtime.data);
      }
    }
    // Some mutations must survive, or only the rejecting half would have been compared.
    expect(accepted).toBeGreaterThan(250);
  });

  test("both message schemas compile: a schema the compiler refuses would quietly run at runtime speed", () => {
    expect(() => z.compile(MESSAGE_SCHEMAS.host, { strict: true })).not.toThrow();
    expect(() => z.compile(MESSAGE_SCHEMAS.agent, { strict: true })).not.toThrow();
  });

  test("random byte streams with embedded, torn and truncated frames: decoder recovers every intact frame", () => {
    const r = prng(SEED + 1);
    for (let round = 0; round < 300; round++) {
      const d = new FrameDecoder();
      const expected: string[] = [];
      const parts: Buffer[] = [];
      for (let i = r.int(10) + 1; i > 0; i--) {
        const kind = r.int(4);
        if (kind === 0) parts.push(r.bytes(r.int(300))); // noise
        else if (kind === 1) {
          // A frame torn off mid-way (stale virtio bytes).
          const f = encodeFrame(r.bytes(r.int(2000) + 1));
          parts.push(f.subarray(0, r.int(f.length - 1) + 1));
        } else {
          const body = `frame-${round}-${i}-${r.int(1e9)}`;
          expected.push(body);
          parts.push(encodeFrame(Buffer.from(body)));
        }
      }
      const wire = Buffer.concat(parts);
      const got: string[] = [];
      // Delivered in random-sized chunks.
      for (let off = 0; off < wire.length; ) {
        const n = r.int(200) + 1;
        for (const ev of d.push(wire.subarray(off, off + n))) if (ev.kind === "frame") got.push(ev.payload.toString());
        off += n;
      }
      // Every intact frame is recovered (a torn frame can only be followed by noise we then skip).
      for (const e of expected) expect(got).toContain(e);
      expect(d.buffered).toBeLessThanOrEqual(FRAME_HEADER_LEN + MAX_FRAME_PAYLOAD);
    }
  });

  test("every prefix of every golden frame is held, not misparsed, and a following frame still decodes", () => {
    for (const m of samples) {
      const f = encodeMessage(m);
      for (let cut = 1; cut < f.length; cut++) {
        const d = new FrameDecoder();
        const early = d.push(f.subarray(0, cut)).filter((e) => e.kind === "frame");
        expect(early).toHaveLength(0);
        const next = d.push(encodeFrame(Buffer.from("next"))).filter((e) => e.kind === "frame");
        expect(next.map((e) => (e as { payload: Buffer }).payload.toString())).toEqual(["next"]);
      }
    }
  });
});

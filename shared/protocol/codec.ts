import { Decoder, Encoder } from "cbor-x";
import { encodeFrame, MAX_FRAME_PAYLOAD } from "./frame.js";
import { validateAgentMessage, validateHostMessage, ValidationError, type AgentMessage, type AnyMessage, type HostMessage } from "./messages.js";

/*
 * CBOR with no cbor-x extensions on the wire (no records, no typed-array tags), minimal map headers,
 * and map keys sorted before encoding, so the bytes for a message depend only on its content. That is
 * what lets golden frames lock the format and lets a second implementation interoperate.
 */
const encoder = new Encoder({ useRecords: false, mapsAsObjects: true, variableMapSize: true, tagUint8Array: false, pack: false });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: true });

function canonical(v: unknown): unknown {
  if (v === null || typeof v !== "object") return v;
  if (v instanceof Uint8Array) return Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.length);
  if (Array.isArray(v)) return v.map(canonical);
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v).sort()) {
    const x = (v as Record<string, unknown>)[k];
    if (x !== undefined) out[k] = canonical(x);
  }
  return out;
}

export function encodeMessagePayload(msg: AnyMessage): Buffer {
  return Buffer.from(encoder.encode(canonical(msg)));
}

/** A complete frame (header + CBOR) for one message. */
export function encodeMessage(msg: AnyMessage): Buffer {
  const payload = encodeMessagePayload(msg);
  if (payload.length > MAX_FRAME_PAYLOAD) throw new RangeError(`message ${msg.type} encodes to ${payload.length} bytes, over the frame limit`);
  return encodeFrame(payload);
}

export type DecodeResult<T> = { ok: true; message: T } | { ok: false; reason: string };

function decodeWith<T>(payload: Uint8Array, validate: (v: unknown) => T): DecodeResult<T> {
  let value: unknown;
  try {
    value = decoder.decode(payload);
  } catch (err) {
    return { ok: false, reason: `malformed CBOR: ${(err as Error).message}`.slice(0, 300) };
  }
  try {
    return { ok: true, message: validate(value) };
  } catch (err) {
    if (err instanceof ValidationError) return { ok: false, reason: `invalid message: ${err.message}`.slice(0, 300) };
    return { ok: false, reason: `invalid message: ${(err as Error).message}`.slice(0, 300) };
  }
}

/** Decodes a frame payload the agent received. Never throws. */
export function decodeHostMessage(payload: Uint8Array): DecodeResult<HostMessage> {
  return decodeWith(payload, validateHostMessage);
}

/** Decodes a frame payload the host received. Never throws. */
export function decodeAgentMessage(payload: Uint8Array): DecodeResult<AgentMessage> {
  return decodeWith(payload, validateAgentMessage);
}

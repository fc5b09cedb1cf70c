/**
 * RTMR3 event log: what the guest agent extends into RTMR3, and how a verifier replays it.
 *
 * File format (written by the agent, default /run/cvm/rtmr3-events.json): a JSON array of
 *   { "imr": 3, "digest": "<96 hex chars>", "event_type": "<type>", "event": "<payload text>" }
 * in extension order.
 *
 * Event encoding (the exact bytes that are hashed):
 *   digest = SHA-384( UTF-8( event_type + ":" + event ) )
 * event_type is restricted to [a-z0-9][a-z0-9._-]* (no ":"), so the first ":" always ends the type and
 * the encoding is unambiguous; event is any string (JSON text for structured payloads), hashed exactly
 * as stored, with no normalisation.
 *
 * Replay (the TDX RTMR extend operation):
 *   rtmr := 48 zero bytes; for each event in order: rtmr := SHA-384( rtmr || digest )
 * and the result must equal the quote's RTMR3.
 *
 * Event types the agent emits (payloads are JSON text):
 *   ssh-authorized-key   {"fingerprint":"SHA256:...","key_type":"ssh-ed25519","source":"host-setup"}
 *   openclaw-tree        {"digest":"sha256:..."}   (the agent tree it activated)
 */
import { createHash } from "node:crypto";
import { z } from "zod";

export interface RtmrEvent {
  imr: number;
  /** Hex SHA-384 of the event encoding. */
  digest: string;
  event_type: string;
  event: string;
}

export class EventLogError extends Error {
  override name = "EventLogError";
  constructor(
    message: string,
    readonly index?: number,
  ) {
    super(index === undefined ? message : `event ${index}: ${message}`);
  }
}

const TYPE_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const RTMR_BYTES = 48;
/** A log longer than this is not one the agent wrote. */
const MAX_EVENTS = 4096;

/** SHA-384 of UTF-8(type + ":" + payload): the digest extended into RTMR3 for one event. */
export function eventDigest(type: string, payload: string): Buffer {
  if (!TYPE_RE.test(type)) throw new EventLogError(`event type "${type}" must match ${TYPE_RE}`);
  return createHash("sha384").update(`${type}:${payload}`, "utf8").digest();
}

/** One RTMR extend step. */
export function extendRtmr(rtmr: Buffer, digest: Buffer): Buffer {
  if (rtmr.length !== RTMR_BYTES || digest.length !== RTMR_BYTES) throw new EventLogError("RTMR and digest must be 48 bytes");
  return createHash("sha384").update(rtmr).update(digest).digest();
}

/** Checks the shape of a parsed event log file (does not recompute digests). */
export function parseEventLog(value: unknown): RtmrEvent[] {
  if (!Array.isArray(value)) throw new EventLogError("event log must be a JSON array");
  if (value.length > MAX_EVENTS) throw new EventLogError(`event log has ${value.length} events (limit ${MAX_EVENTS})`);
  return value.map((v, i) => {
    if (typeof v !== "object" || v === null) throw new EventLogError("not an object", i);
    const e = v as Record<string, unknown>;
    if (e.imr !== 3) throw new EventLogError(`imr must be 3, got ${JSON.stringify(e.imr)}`, i);
    if (typeof e.digest !== "string" || !/^[0-9a-fA-F]{96}$/.test(e.digest)) throw new EventLogError("digest must be 96 hex characters", i);
    if (typeof e.event_type !== "string") throw new EventLogError("event_type must be a string", i);
    if (typeof e.event !== "string") throw new EventLogError("event must be a string", i);
    return { imr: 3, digest: e.digest.toLowerCase(), event_type: e.event_type, event: e.event };
  });
}

/**
 * Replays events into an RTMR value, starting from 48 zero bytes. Throws EventLogError when an event is
 * not for RTMR3 or its digest is not the digest of its own type and payload (a log whose text was
 * edited after the fact).
 */
export function replayRtmr(events: readonly RtmrEvent[]): Buffer {
  let rtmr: Buffer = Buffer.alloc(RTMR_BYTES);
  events.forEach((e, i) => {
    if (e.imr !== 3) throw new EventLogError(`imr must be 3, got ${e.imr}`, i);
    let d: Buffer;
    try {
      d = eventDigest(e.event_type, e.event);
    } catch (err) {
      throw new EventLogError((err as Error).message, i);
    }
    if (d.toString("hex") !== e.digest.toLowerCase()) {
      throw new EventLogError(`digest ${e.digest} is not SHA-384 of "${e.event_type}:<payload>" (${d.toString("hex")})`, i);
    }
    rtmr = extendRtmr(rtmr, d);
  });
  return rtmr;
}

/** An event log replayed against the quote's RTMR3 (served by the host's attestation API). */
export const EventLogCheck = z.object({
  ok: z.boolean(),
  replayed: z.string().optional().meta({ description: "RTMR3 the log replays to, hex (absent when the log does not parse)." }),
  expected: z.string().meta({ description: "The quote's RTMR3, hex (empty when the quote does not parse)." }),
  events: z.int().min(0),
  reason: z.string().optional(),
});
export type EventLogCheck = z.infer<typeof EventLogCheck>;

/** Replays a log and compares it with the quote's RTMR3 (hex). Never throws. */
export function checkEventLog(events: unknown, rtmr3Hex: string): EventLogCheck {
  try {
    const parsed = parseEventLog(events);
    const replayed = replayRtmr(parsed).toString("hex");
    const ok = replayed === rtmr3Hex.toLowerCase();
    return {
      ok,
      replayed,
      expected: rtmr3Hex.toLowerCase(),
      events: parsed.length,
      reason: ok ? undefined : `replaying ${parsed.length} events gives ${replayed}, the quote's RTMR3 is ${rtmr3Hex.toLowerCase()}`,
    };
  } catch (e) {
    return { ok: false, expected: rtmr3Hex.toLowerCase(), events: Array.isArray(events) ? events.length : 0, reason: (e as Error).message };
  }
}

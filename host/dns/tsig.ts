import { createHmac, timingSafeEqual } from "node:crypto";
import { CLASS, TYPE, encodeName, readName, recordOffsets, skipName, u16, u32, u48 } from "./wire.js";

/** A shared TSIG key (RFC 8945). Only HMAC-SHA256 is offered: it is what current servers default to. */
export interface TsigKey {
  name: string;
  secret: Buffer;
}

export const TSIG_ALGORITHM = "hmac-sha256";
const MAC_BYTES = 32;

/** TSIG error field values (RFC 8945 §5.3 and the rcode registry). */
export const TSIG_ERRORS: Record<number, string> = { 0: "NOERROR", 16: "BADSIG", 17: "BADKEY", 18: "BADTIME", 22: "BADTRUNC" };
export const tsigErrorName = (n: number): string => TSIG_ERRORS[n] ?? `TSIG_ERROR_${n}`;

export interface TsigRecord {
  keyName: string;
  algorithm: string;
  timeSigned: number;
  fudge: number;
  mac: Buffer;
  originalId: number;
  error: number;
  other: Buffer;
}

/** The TSIG variables that follow the message in the digest (RFC 8945 §4.3.3). */
function variables(keyName: string, t: Pick<TsigRecord, "timeSigned" | "fudge" | "error" | "other">): Buffer {
  return Buffer.concat([
    encodeName(keyName, true),
    u16(CLASS.ANY),
    u32(0),
    encodeName(TSIG_ALGORITHM, true),
    u48(t.timeSigned),
    u16(t.fudge),
    u16(t.error),
    u16(t.other.length),
    t.other,
  ]);
}

function digest(key: TsigKey, msg: Buffer, vars: Buffer, requestMac?: Buffer): Buffer {
  const h = createHmac("sha256", key.secret);
  // A response's MAC chains to the request's, so it cannot be replayed for another request.
  if (requestMac) h.update(Buffer.concat([u16(requestMac.length), requestMac]));
  h.update(msg);
  h.update(vars);
  return h.digest();
}

/** Appends a TSIG record to `msg` (whose ARCOUNT is bumped); returns the signed message and its MAC. */
export function signMessage(msg: Buffer, key: TsigKey, opts: { now: Date; fudgeSeconds?: number; requestMac?: Buffer }): { message: Buffer; mac: Buffer } {
  const t = { timeSigned: Math.floor(opts.now.getTime() / 1000), fudge: opts.fudgeSeconds ?? 300, error: 0, other: Buffer.alloc(0) };
  const mac = digest(key, msg, variables(key.name, t), opts.requestMac);
  const rdata = Buffer.concat([
    encodeName(TSIG_ALGORITHM, true),
    u48(t.timeSigned),
    u16(t.fudge),
    u16(mac.length),
    mac,
    u16(msg.readUInt16BE(0)),
    u16(t.error),
    u16(0),
  ]);
  const record = Buffer.concat([encodeName(key.name, true), u16(TYPE.TSIG), u16(CLASS.ANY), u32(0), u16(rdata.length), rdata]);
  const out = Buffer.concat([msg, record]);
  out.writeUInt16BE(msg.readUInt16BE(10) + 1, 10);
  return { message: out, mac };
}

/** Splits off the TSIG record, which must be the last one of the message; null when there is none. */
export function extractTsig(msg: Buffer): { unsigned: Buffer; tsig: TsigRecord } | null {
  const records = recordOffsets(msg);
  const last = records[records.length - 1];
  if (!last || last.type !== TYPE.TSIG || last.section !== "additional") return null;
  if (records.some((r) => r.type === TYPE.TSIG && r !== last)) throw new Error("TSIG record not last");
  const keyName = readName(msg, last.offset);
  const p = skipName(msg, last.offset);
  const rdlen = msg.readUInt16BE(p + 8);
  let r = p + 10;
  const rdEnd = r + rdlen;
  const algorithm = readName(msg, r);
  r = skipName(msg, r);
  if (r + 10 > rdEnd) throw new Error("truncated TSIG");
  const timeSigned = msg.readUIntBE(r, 6);
  const fudge = msg.readUInt16BE(r + 6);
  const macLen = msg.readUInt16BE(r + 8);
  r += 10;
  if (r + macLen + 6 > rdEnd) throw new Error("truncated TSIG");
  const mac = Buffer.from(msg.subarray(r, r + macLen));
  r += macLen;
  const originalId = msg.readUInt16BE(r);
  const error = msg.readUInt16BE(r + 2);
  const otherLen = msg.readUInt16BE(r + 4);
  r += 6;
  if (r + otherLen !== rdEnd) throw new Error("bad TSIG length");
  const other = Buffer.from(msg.subarray(r, rdEnd));
  const unsigned = Buffer.from(msg.subarray(0, last.offset));
  unsigned.writeUInt16BE(msg.readUInt16BE(10) - 1, 10);
  // The digest covers the message as it was before a forwarder may have changed its ID.
  unsigned.writeUInt16BE(originalId, 0);
  return { unsigned, tsig: { keyName, algorithm: algorithm.toLowerCase(), timeSigned, fudge, mac, originalId, error, other } };
}

export type TsigVerdict =
  | { ok: true }
  /** `error` names what is wrong, in the RFC's terms where one applies (BADSIG, BADKEY, BADTIME, unsigned). */
  | { ok: false; error: string; tsigError: number };

/** Verifies a signed message: a request, or (with `requestMac`) the response to a request we signed. */
export function verifyMessage(msg: Buffer, key: TsigKey, opts: { requestMac?: Buffer; now: Date }): TsigVerdict {
  let parts: ReturnType<typeof extractTsig>;
  try {
    parts = extractTsig(msg);
  } catch (err) {
    return { ok: false, error: `malformed TSIG: ${(err as Error).message}`, tsigError: 0 };
  }
  if (!parts) return { ok: false, error: "unsigned", tsigError: 0 };
  const { unsigned, tsig } = parts;
  // The server reports BADKEY/BADSIG in an unsigned TSIG: it could not, or would not, sign.
  if (tsig.error !== 0 && tsig.mac.length === 0) return { ok: false, error: tsigErrorName(tsig.error), tsigError: tsig.error };
  if (tsig.keyName.toLowerCase() !== key.name.replace(/\.$/, "").toLowerCase()) return { ok: false, error: "BADKEY", tsigError: 17 };
  if (tsig.algorithm !== TSIG_ALGORITHM) return { ok: false, error: "BADKEY", tsigError: 17 };
  if (tsig.mac.length !== MAC_BYTES) return { ok: false, error: "BADTRUNC", tsigError: 22 };
  const expected = digest(key, unsigned, variables(key.name, tsig), opts.requestMac);
  if (!timingSafeEqual(expected, tsig.mac)) return { ok: false, error: "BADSIG", tsigError: 16 };
  if (Math.abs(Math.floor(opts.now.getTime() / 1000) - tsig.timeSigned) > tsig.fudge) return { ok: false, error: "BADTIME", tsigError: 18 };
  if (tsig.error !== 0) return { ok: false, error: tsigErrorName(tsig.error), tsigError: tsig.error };
  return { ok: true };
}

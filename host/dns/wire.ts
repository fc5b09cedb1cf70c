import { isIPv4, isIPv6 } from "node:net";

/**
 * The few wire-format pieces dns-packet cannot express: RFC 2136 update records (class ANY or
 * NONE with empty RDATA), TSIG (RFC 8945), and raw access to a query's question so it is echoed
 * byte for byte and its labels are checked before any string handling.
 */

export const TYPE = { A: 1, NS: 2, SOA: 6, AAAA: 28, OPT: 41, IXFR: 251, AXFR: 252, TSIG: 250, ANY: 255 } as const;
export const CLASS = { IN: 1, NONE: 254, ANY: 255 } as const;
export const OPCODE = { QUERY: 0, UPDATE: 5 } as const;
export const RCODE_NAMES = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE"];
export const rcodeName = (n: number): string => RCODE_NAMES[n] ?? `RCODE${n}`;

/** Uncompressed wire form; lower-cased when `canonical` (TSIG digests need it). */
export function encodeName(name: string, canonical = false): Buffer {
  const n = name.replace(/\.$/, "");
  const labels = n === "" ? [] : n.split(".");
  const parts: Buffer[] = [];
  for (const l of labels) {
    const b = Buffer.from(canonical ? l.toLowerCase() : l, "ascii");
    if (b.length === 0 || b.length > 63) throw new Error(`bad DNS label in ${JSON.stringify(name)}`);
    parts.push(Buffer.from([b.length]), b);
  }
  parts.push(Buffer.from([0]));
  const out = Buffer.concat(parts);
  if (out.length > 255) throw new Error(`DNS name too long: ${name}`);
  return out;
}

export function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

export function u48(n: number): Buffer {
  const b = Buffer.alloc(6);
  b.writeUIntBE(n, 0, 6);
  return b;
}

/** One resource record, owner name uncompressed. */
export function encodeRecord(name: string, type: number, klass: number, ttl: number, rdata: Buffer): Buffer {
  return Buffer.concat([encodeName(name), u16(type), u16(klass), u32(ttl), u16(rdata.length), rdata]);
}

export function ipv4Bytes(ip: string): Buffer {
  if (!isIPv4(ip)) throw new Error(`not an IPv4 address: ${ip}`);
  return Buffer.from(ip.split(".").map(Number));
}

export function ipv6Bytes(ip: string): Buffer {
  if (!isIPv6(ip)) throw new Error(`not an IPv6 address: ${ip}`);
  let s = ip.replace(/%.*$/, "");
  const out = Buffer.alloc(16);
  // An embedded IPv4 tail (::ffff:192.0.2.1) becomes two hex groups first.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const b = ipv4Bytes(v4[1]!);
    s = s.slice(0, -v4[1]!.length) + `${b.readUInt16BE(0).toString(16)}:${b.readUInt16BE(2).toString(16)}`;
  }
  const [head, tail] = s.includes("::") ? s.split("::") : [s, undefined];
  const h = head ? head.split(":") : [];
  const t = tail === undefined ? [] : tail ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill("0"), ...t];
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

export interface RawQuestion {
  /** As sent (case preserved), without the trailing dot; "" for the root. */
  name: string;
  type: number;
  klass: number;
  /** Offset just past the question. */
  end: number;
  /** Every label is LDH or underscore: no bytes that a string form could misrepresent (dots, non-ASCII). */
  plainLabels: boolean;
}

/** The first question of a message; null when it is not well-formed (a pointer in a question is, too). */
export function readQuestion(buf: Buffer, offset = 12): RawQuestion | null {
  const labels: string[] = [];
  let o = offset;
  let plain = true;
  let total = 1;
  for (;;) {
    const len = buf[o];
    if (len === undefined || (len & 0xc0) !== 0) return null;
    o++;
    if (len === 0) break;
    total += len + 1;
    if (total > 255 || o + len > buf.length) return null;
    const label = buf.subarray(o, o + len);
    for (const c of label) {
      const ok = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x2d || c === 0x5f;
      if (!ok) plain = false;
    }
    labels.push(label.toString("latin1"));
    o += len;
  }
  if (o + 4 > buf.length) return null;
  return { name: labels.join("."), type: buf.readUInt16BE(o), klass: buf.readUInt16BE(o + 2), end: o + 4, plainLabels: plain };
}

/** The length byte of the label at `o`, or "pointer" for a compression pointer whose two bytes are present. */
function labelHead(buf: Buffer, o: number): number | "pointer" {
  const len = buf[o];
  if (len === undefined) throw new Error("truncated name");
  if ((len & 0xc0) === 0xc0) {
    if (o + 2 > buf.length) throw new Error("truncated name");
    return "pointer";
  }
  if ((len & 0xc0) !== 0) throw new Error("bad label type");
  return len;
}

/** Offset just past a (possibly compressed) name. */
export function skipName(buf: Buffer, offset: number): number {
  let o = offset;
  for (let i = 0; i < 128; i++) {
    const len = labelHead(buf, o);
    if (len === "pointer") return o + 2;
    o += 1 + len;
    if (len === 0) return o;
  }
  throw new Error("name has too many labels");
}

/** Reads a name at `offset`, following compression pointers backwards only (so it terminates). */
export function readName(buf: Buffer, offset: number): string {
  const labels: string[] = [];
  let o = offset;
  let floor = offset;
  for (let i = 0; i < 128; i++) {
    const len = labelHead(buf, o);
    if (len === "pointer") {
      const target = buf.readUInt16BE(o) & 0x3fff;
      if (target >= floor) throw new Error("forward compression pointer");
      o = floor = target;
      continue;
    }
    if (len === 0) return labels.join(".");
    if (o + 1 + len > buf.length) throw new Error("truncated name");
    labels.push(buf.toString("latin1", o + 1, o + 1 + len));
    o += 1 + len;
  }
  throw new Error("name has too many labels");
}

/** Start offsets of every resource record after the question section, with each record's type. */
export function recordOffsets(msg: Buffer): Array<{ offset: number; type: number; section: "answer" | "authority" | "additional" }> {
  if (msg.length < 12) throw new Error("message shorter than its header");
  const qd = msg.readUInt16BE(4);
  const counts: Array<["answer" | "authority" | "additional", number]> = [
    ["answer", msg.readUInt16BE(6)],
    ["authority", msg.readUInt16BE(8)],
    ["additional", msg.readUInt16BE(10)],
  ];
  let o = 12;
  for (let i = 0; i < qd; i++) {
    o = skipName(msg, o) + 4;
    if (o > msg.length) throw new Error("truncated question");
  }
  const out: Array<{ offset: number; type: number; section: "answer" | "authority" | "additional" }> = [];
  for (const [section, n] of counts) {
    for (let i = 0; i < n; i++) {
      const start = o;
      o = skipName(msg, o);
      if (o + 10 > msg.length) throw new Error("truncated record");
      const type = msg.readUInt16BE(o);
      o += 10 + msg.readUInt16BE(o + 8);
      if (o > msg.length) throw new Error("truncated record data");
      out.push({ offset: start, type, section });
    }
  }
  return out;
}

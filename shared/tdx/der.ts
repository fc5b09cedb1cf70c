/**
 * A strict DER walker for the few structures we read byte-exactly (certificate TBS/signature split,
 * Intel's SGX extension, ECDSA signature values). Strictness matters here: a lenient reader would let
 * a flipped length byte or a non-minimal encoding through as "the same" certificate.
 */

export class DerError extends Error {
  override name = "DerError";
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(`${message} (at DER offset ${offset})`);
  }
}

export interface DerNode {
  tag: number;
  /** Offset of the tag byte within the buffer the node was read from. */
  start: number;
  /** Offset of the first content byte. */
  contentStart: number;
  /** Offset one past the last content byte. */
  end: number;
  /** Content bytes (a view, not a copy). */
  content: Buffer;
  /** Whole TLV (a view). */
  raw: Buffer;
}

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  ENUMERATED: 0x0a,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Reads one TLV at `off`; rejects indefinite, non-minimal and out-of-bounds lengths and multi-byte tags. */
export function readNode(buf: Buffer, off: number, limit = buf.length): DerNode {
  if (off + 2 > limit) throw new DerError("truncated TLV header", off);
  const tag = buf[off]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError("multi-byte tags are not supported", off);
  let p = off + 1;
  const first = buf[p++]!;
  let len: number;
  if (first < 0x80) {
    len = first;
  } else {
    const n = first & 0x7f;
    if (n === 0) throw new DerError("indefinite length is not DER", off);
    if (n > 4) throw new DerError("length field too long", off);
    if (p + n > limit) throw new DerError("truncated length field", off);
    if (buf[p] === 0) throw new DerError("non-minimal length encoding", off);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[p++]!;
    if (len < 0x80) throw new DerError("non-minimal length encoding", off);
  }
  const end = p + len;
  if (end > limit) throw new DerError(`content runs past its container (${len} bytes declared)`, off);
  return { tag, start: off, contentStart: p, end, content: buf.subarray(p, end), raw: buf.subarray(off, end) };
}

/** Reads all children of a constructed node; they must exactly fill its content. */
export function children(buf: Buffer, node: DerNode): DerNode[] {
  if ((node.tag & 0x20) === 0) throw new DerError("expected a constructed type", node.start);
  const out: DerNode[] = [];
  let p = node.contentStart;
  while (p < node.end) {
    const c = readNode(buf, p, node.end);
    out.push(c);
    p = c.end;
  }
  return out;
}

/** Parses `buf` as exactly one TLV (no trailing bytes). */
export function readWhole(buf: Buffer): DerNode {
  const n = readNode(buf, 0);
  if (n.end !== buf.length) throw new DerError(`${buf.length - n.end} trailing bytes after DER value`, n.end);
  return n;
}

export function expectTag(node: DerNode, tag: number, what: string): DerNode {
  if (node.tag !== tag) {
    throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, found 0x${node.tag.toString(16)}`, node.start);
  }
  return node;
}

export function decodeOid(content: Buffer): string {
  if (content.length === 0) throw new DerError("empty OID", 0);
  const parts: number[] = [];
  let value = 0;
  for (let i = 0; i < content.length; i++) {
    const b = content[i]!;
    if (value === 0 && b === 0x80) throw new DerError("non-minimal OID arc", i);
    value = value * 128 + (b & 0x7f);
    if ((b & 0x80) === 0) {
      if (parts.length === 0) {
        const first = value < 80 ? Math.floor(value / 40) : 2;
        parts.push(first, value - first * 40);
      } else {
        parts.push(value);
      }
      value = 0;
    } else if (i === content.length - 1) {
      throw new DerError("truncated OID arc", i);
    }
  }
  return parts.join(".");
}

/** Non-negative INTEGER that fits in a JS number (SVNs, small counters). */
export function decodeSmallUint(node: DerNode, what: string): number {
  const c = node.content;
  if (node.tag !== TAG.INTEGER && node.tag !== TAG.ENUMERATED) throw new DerError(`${what}: not an INTEGER`, node.start);
  if (c.length === 0 || c.length > 5) throw new DerError(`${what}: bad INTEGER length ${c.length}`, node.start);
  if (c[0]! & 0x80) throw new DerError(`${what}: negative INTEGER`, node.start);
  if (c.length > 1 && c[0] === 0 && (c[1]! & 0x80) === 0) throw new DerError(`${what}: non-minimal INTEGER`, node.start);
  let v = 0;
  for (const b of c) v = v * 256 + b;
  return v;
}

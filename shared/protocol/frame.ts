import { crc32 } from "node:zlib";

/**
 * Framing for the host–agent channel.
 *
 * A frame is a 16-byte header followed by the payload (one CBOR message):
 *
 *   offset 0  magic          4 bytes  0xC7 0x56 0x4D 0x31
 *   offset 4  payload length u32 big-endian, at most MAX_FRAME_PAYLOAD
 *   offset 8  payload CRC-32 u32 big-endian (IEEE, zlib)
 *   offset 12 header CRC-32  u32 big-endian, over bytes 0..11
 *
 * Why more than a bare length prefix: on QEMU virtio-serial the guest never learns that the host side
 * disconnected, so the byte stream the agent reads can hold the tail of a frame the previous host
 * connection started and never finished, followed by the new host's hello. With a bare length prefix
 * that stale header would swallow the new frames as its "payload" and wedge the stream until enough
 * bytes arrive, which never happens because the new host is waiting for the reply. Here:
 *  - the magic gives the decoder a place to restart after garbage;
 *  - the header CRC means a magic lookalike inside payload or stale bytes is not trusted before its
 *    length is believed (a false hit costs a one-byte skip, not a 1 MiB wait);
 *  - the payload CRC detects a frame whose body was replaced by a later frame's bytes;
 *  - while a frame is incomplete the decoder looks ahead for a complete, CRC-valid frame starting
 *    later in the buffer; finding one proves the earlier header was abandoned, so it is dropped.
 * The CRCs are integrity checks against stale or torn bytes, not authentication: both transports are
 * local to the host, and each side validates every message anyway.
 *
 * The peer may be hostile (a tenant is root in its guest), so the decoder's work must stay linear in
 * the bytes it receives, whatever they are. Resynchronising is where it would not be: a stream with a
 * valid header every 16 bytes, each claiming a payload to the end of the buffer, makes every one-byte
 * skip re-checksum almost the whole buffer (~N²/32 bytes of CRC for N bytes). So every checksum and
 * look-ahead byte is paid from a work credit that grows by RESYNC_WORK_PER_BYTE per byte received;
 * when resynchronising would overdraw it, the decoder drops everything it holds instead (reported as
 * skipped). Honest traffic costs about one credit per byte (each payload is checksummed once), and the
 * stale-tail recovery above a few times that, so the credit only runs out under an attack.
 */

export const FRAME_MAGIC = Buffer.from([0xc7, 0x56, 0x4d, 0x31]);
export const FRAME_HEADER_LEN = 16;
/** Quotes are ~8 KB and event logs small; 1 MiB bounds memory per connection with a wide margin. */
export const MAX_FRAME_PAYLOAD = 1024 * 1024;
const MAX_PENDING_CANDIDATES = 16;
/** Credit earned per byte received; honest input spends ~1 (a payload CRC) plus headers. */
export const RESYNC_WORK_PER_BYTE = 4;
/**
 * The credit never exceeds this (nor starts below it): enough to checksum a few maximum-size frames
 * in a row at once, so a large honest first frame never waits for credit.
 */
const WORK_CREDIT_CAP = 4 * (MAX_FRAME_PAYLOAD + FRAME_HEADER_LEN);
const HEADER_WORK = FRAME_HEADER_LEN;

export function encodeFrame(payload: Uint8Array): Buffer {
  if (payload.length > MAX_FRAME_PAYLOAD) throw new RangeError(`frame payload of ${payload.length} bytes exceeds ${MAX_FRAME_PAYLOAD}`);
  const header = Buffer.alloc(FRAME_HEADER_LEN);
  FRAME_MAGIC.copy(header, 0);
  header.writeUInt32BE(payload.length, 4);
  header.writeUInt32BE(crc32(payload), 8);
  header.writeUInt32BE(crc32(header.subarray(0, 12)), 12);
  return Buffer.concat([header, payload]);
}

export type FrameEvent =
  | { kind: "frame"; payload: Buffer }
  /** Bytes dropped while looking for a frame boundary; `reason` says why. */
  | { kind: "skipped"; bytes: number; reason: string };

interface HeaderInfo {
  length: number;
  payloadCrc: number;
}

/** Incremental decoder: push() chunks in, get frames and skip notices out. Never throws on input. */
export class FrameDecoder {
  private store: Buffer = Buffer.alloc(0);
  /** The unconsumed bytes: a view into `store`. */
  private buf: Buffer = this.store;
  /** Offset up to which the look-ahead scan for an incomplete frame has already searched. */
  private scannedTo = 0;
  /** Offsets (in buf) of valid headers found by the look-ahead whose payload has not fully arrived. */
  private pending: number[] = [];
  /** Bytes of checksum and scan work this decoder may still do (see the class comment). */
  private credit = WORK_CREDIT_CAP;
  private workDone = 0;

  /**
   * Once the stream is known to be in sync (the host, after the agent's hello), any anomaly ends the
   * session, so decoding stops at the first one (reported as skipped) instead of spending work on
   * resynchronising a stream that is about to be closed. The look-ahead still runs: it is what shows
   * at once that a frame was cut short and another started.
   */
  strict = false;

  constructor(private readonly maxPayload = MAX_FRAME_PAYLOAD) {}

  /** Total bytes checksummed or scanned so far: never more than the cap plus RESYNC_WORK_PER_BYTE × input. */
  get work(): number {
    return this.workDone;
  }

  /** Bytes held waiting for the rest of a frame. */
  get buffered(): number {
    return this.buf.length;
  }

  reset(): void {
    this.store = Buffer.alloc(0);
    this.buf = this.store;
    this.scannedTo = 0;
    this.pending = [];
  }

  /**
   * `admit`, when given, is asked for every complete, checksum-valid frame (its size on the wire);
   * a frame it refuses is consumed without a copy or an event, so a flood over a budget costs
   * neither allocation nor garbage collection.
   */
  push(chunk: Uint8Array, admit?: (frameBytes: number) => boolean): FrameEvent[] {
    const out: FrameEvent[] = [];
    this.append(chunk);
    this.credit = Math.min(WORK_CREDIT_CAP, this.credit + RESYNC_WORK_PER_BYTE * chunk.length);
    try {
      this.decode(out, admit);
    } catch (err) {
      if (!(err instanceof WorkExhausted)) throw err;
      out.push({ kind: "skipped", bytes: this.buf.length, reason: "resynchronisation work limit reached; input discarded" });
      this.reset();
    }
    return out;
  }

  private decode(out: FrameEvent[], admit?: (frameBytes: number) => boolean): void {
    for (;;) {
      const start = this.buf.indexOf(FRAME_MAGIC);
      if (start < 0) {
        // Keep a possible magic prefix at the end; everything before it cannot start a frame.
        const keep = Math.min(this.buf.length, FRAME_MAGIC.length - 1);
        const drop = this.buf.length - keep;
        if (drop > 0) out.push({ kind: "skipped", bytes: drop, reason: "no frame magic" });
        this.drop(drop);
        return;
      }
      if (start > 0) {
        out.push({ kind: "skipped", bytes: start, reason: "bytes before frame magic" });
        this.drop(start);
        if (this.strict) return;
      }
      if (this.buf.length < FRAME_HEADER_LEN) return;
      const header = this.headerAt(0);
      if (header === "bad_crc") {
        out.push({ kind: "skipped", bytes: 1, reason: "frame header checksum mismatch" });
        this.drop(1);
        if (this.strict) return;
        continue;
      }
      if (header === "too_large") {
        out.push({ kind: "skipped", bytes: 1, reason: `frame length exceeds ${this.maxPayload} bytes` });
        this.drop(1);
        if (this.strict) return;
        continue;
      }
      const total = FRAME_HEADER_LEN + header.length;
      if (this.buf.length < total) {
        const later = this.findCompleteFrameAfter(FRAME_HEADER_LEN);
        if (later < 0) return;
        out.push({ kind: "skipped", bytes: later, reason: "incomplete frame abandoned for a later complete frame" });
        this.drop(later);
        continue;
      }
      const payload = this.buf.subarray(FRAME_HEADER_LEN, total);
      this.spend(header.length);
      if (crc32(payload) !== header.payloadCrc) {
        out.push({ kind: "skipped", bytes: 1, reason: "frame payload checksum mismatch" });
        this.drop(1);
        if (this.strict) return;
        continue;
      }
      if (!admit || admit(total)) out.push({ kind: "frame", payload: Buffer.from(payload) });
      this.drop(total);
    }
  }

  /** Amortised append: trickled input must not turn into a copy of the whole buffer per byte. */
  private append(chunk: Uint8Array): void {
    const used = this.buf.length;
    const offset = this.buf.byteOffset - this.store.byteOffset;
    if (offset + used + chunk.length > this.store.length) {
      const need = used + chunk.length;
      const next = need > this.store.length / 2 ? Buffer.allocUnsafe(Math.max(need * 2, 4096)) : this.store;
      this.buf.copy(next, 0);
      this.store = next;
      this.buf = next.subarray(0, used);
    }
    const base = this.buf.byteOffset - this.store.byteOffset;
    this.store.set(chunk, base + used);
    this.buf = this.store.subarray(base, base + used + chunk.length);
  }

  private drop(n: number): void {
    this.buf = this.buf.subarray(n);
    this.scannedTo = 0;
    this.pending = [];
  }

  /** Charges `n` bytes of work, or throws WorkExhausted (caught in push) when the credit is spent. */
  private spend(n: number): void {
    if (n > this.credit) throw new WorkExhausted();
    this.credit -= n;
    this.workDone += n;
  }

  private headerAt(off: number): HeaderInfo | "bad_crc" | "too_large" {
    this.spend(HEADER_WORK);
    const b = this.buf;
    if (headerCrc(b, off) !== b.readUInt32BE(off + 12)) return "bad_crc";
    const length = b.readUInt32BE(off + 4);
    if (length > this.maxPayload) return "too_large";
    return { length, payloadCrc: b.readUInt32BE(off + 8) };
  }

  /**
   * Offset of the first complete, checksum-valid frame after the current (incomplete) one, or -1.
   * New bytes are scanned once; candidates that are not complete yet are remembered (a bounded list)
   * and rechecked on later pushes, so trickled input cannot make the scan quadratic.
   */
  private findCompleteFrameAfter(from: number): number {
    let best = -1;
    const stillPending: number[] = [];
    for (const i of this.pending) {
      const r = this.candidateAt(i);
      if (r === "complete") {
        if (best < 0 || i < best) best = i;
      } else if (r === "pending") stillPending.push(i);
    }
    this.pending = stillPending;
    let pos = Math.max(from, this.scannedTo);
    while (best < 0) {
      const i = this.buf.indexOf(FRAME_MAGIC, pos);
      // The scan restarts after every drop, so its bytes are paid for like checksums.
      this.spend((i < 0 ? this.buf.length : i) - pos);
      if (i < 0) {
        pos = Math.max(pos, this.buf.length - (FRAME_MAGIC.length - 1));
        break;
      }
      if (i + FRAME_HEADER_LEN > this.buf.length) {
        // The header is not all here yet: look at this offset again next time.
        pos = i;
        break;
      }
      pos = i + 1;
      // Only a complete frame can end the look-ahead, and an incomplete one is worth its header check
      // only while there is room to remember it: a hostile stream has a candidate every 16 bytes, and
      // the unchecked length field is enough to pass over those.
      if (this.pending.length >= MAX_PENDING_CANDIDATES && i + FRAME_HEADER_LEN + this.buf.readUInt32BE(i + 4) > this.buf.length) continue;
      const r = this.candidateAt(i);
      if (r === "complete") best = i;
      else if (r === "pending" && this.pending.length < MAX_PENDING_CANDIDATES) this.pending.push(i);
    }
    this.scannedTo = pos;
    return best;
  }

  private candidateAt(i: number): "complete" | "pending" | "invalid" {
    const h = this.headerAt(i);
    if (typeof h !== "object") return "invalid";
    const end = i + FRAME_HEADER_LEN + h.length;
    if (end > this.buf.length) return "pending";
    this.spend(h.length);
    return crc32(this.buf.subarray(i + FRAME_HEADER_LEN, end)) === h.payloadCrc ? "complete" : "invalid";
  }
}

class WorkExhausted extends Error {}

/** CRC-32 (IEEE, reflected, polynomial 0xEDB88320) lookup table, one entry per byte value. */
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/**
 * The same CRC-32 as zlib's over the 12 header bytes at `off`, computed in place. The look-ahead
 * checks a header at every magic it meets (a hostile stream has one every 16 bytes), and a native
 * call on a fresh subarray per header cost more than the checksum itself.
 */
export function headerCrc(b: Buffer, off: number): number {
  let c = 0xffffffff;
  for (let i = off; i < off + 12; i++) c = CRC_TABLE[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

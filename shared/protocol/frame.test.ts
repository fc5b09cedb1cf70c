import { describe, expect, test } from "vitest";
import { crcBomb } from "./testdata/hostile-frames.js";
import { crc32 } from "node:zlib";
import { encodeFrame, FRAME_HEADER_LEN, FrameDecoder, headerCrc, MAX_FRAME_PAYLOAD, RESYNC_WORK_PER_BYTE, type FrameEvent } from "./frame.js";

const frames = (evs: FrameEvent[]) => evs.filter((e) => e.kind === "frame").map((e) => (e as { payload: Buffer }).payload.toString());
const skipped = (evs: FrameEvent[]) => evs.filter((e) => e.kind === "skipped").reduce((n, e) => n + (e as { bytes: number }).bytes, 0);

describe("FrameDecoder", () => {
  test("decodes back-to-back frames delivered one byte at a time", () => {
    const d = new FrameDecoder();
    const wire = Buffer.concat([encodeFrame(Buffer.from("one")), encodeFrame(Buffer.from("")), encodeFrame(Buffer.from("three"))]);
    const out: FrameEvent[] = [];
    for (const b of wire) out.push(...d.push(Buffer.from([b])));
    expect(frames(out)).toEqual(["one", "", "three"]);
    expect(skipped(out)).toBe(0);
    expect(d.buffered).toBe(0);
  });

  test("skips garbage before a frame and reports how much", () => {
    const d = new FrameDecoder();
    const out = d.push(Buffer.concat([Buffer.from("stale bytes from a previous session"), encodeFrame(Buffer.from("hello"))]));
    expect(frames(out)).toEqual(["hello"]);
    expect(skipped(out)).toBe("stale bytes from a previous session".length);
  });

  test("a stale, never-finished frame does not swallow the next session's hello (virtio-serial case)", () => {
    const d = new FrameDecoder();
    const big = encodeFrame(Buffer.alloc(500_000, 7));
    // The previous host went away after the header and 100 payload bytes; the new host sends hello.
    const out1 = d.push(big.subarray(0, FRAME_HEADER_LEN + 100));
    expect(frames(out1)).toEqual([]);
    const out2 = d.push(encodeFrame(Buffer.from("hello")));
    expect(frames(out2)).toEqual(["hello"]);
    expect(skipped(out2)).toBe(FRAME_HEADER_LEN + 100);
    expect(d.buffered).toBe(0);
  });

  test("the same recovery works when the new frame trickles in byte by byte", () => {
    const d = new FrameDecoder();
    d.push(encodeFrame(Buffer.alloc(300_000, 1)).subarray(0, 5000));
    const out: FrameEvent[] = [];
    for (const b of encodeFrame(Buffer.from("hello again"))) out.push(...d.push(Buffer.from([b])));
    expect(frames(out)).toEqual(["hello again"]);
  });

  test("a torn frame whose body was overwritten by a later complete frame is detected by the payload CRC", () => {
    const d = new FrameDecoder();
    const a = encodeFrame(Buffer.from("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    const b = encodeFrame(Buffer.from("B"));
    // Header of `a` claims 40 bytes; we deliver 3 of them then `b` and filler to reach 40.
    const torn = Buffer.concat([a.subarray(0, FRAME_HEADER_LEN + 3), b, Buffer.alloc(40, 0x20)]);
    const out = d.push(torn);
    expect(frames(out)).toEqual(["B"]);
  });

  test("rejects a header whose checksum is wrong without waiting for its length", () => {
    const d = new FrameDecoder();
    const f = encodeFrame(Buffer.from("x"));
    f.writeUInt32BE(1_000_000, 4); // corrupt length, header CRC now wrong
    const out = d.push(Buffer.concat([f, encodeFrame(Buffer.from("ok"))]));
    expect(frames(out)).toEqual(["ok"]);
    expect(out.some((e) => e.kind === "skipped" && e.reason.includes("header checksum"))).toBe(true);
  });

  test("rejects a frame whose (valid) header announces more than the maximum", () => {
    const d = new FrameDecoder(1024);
    const out = d.push(Buffer.concat([encodeFrame(Buffer.alloc(2000)), encodeFrame(Buffer.from("after"))]));
    expect(out.some((e) => e.kind === "skipped" && e.reason.includes("exceeds"))).toBe(true);
    expect(frames(out)).toEqual(["after"]);
  });

  test("encodeFrame refuses payloads above the maximum", () => {
    expect(() => encodeFrame(Buffer.alloc(MAX_FRAME_PAYLOAD + 1))).toThrow(RangeError);
  });

  test("memory stays bounded while garbage without magic streams in", () => {
    const d = new FrameDecoder();
    for (let i = 0; i < 100; i++) d.push(Buffer.alloc(65536, 0x41));
    expect(d.buffered).toBeLessThan(4);
  });

  test("trickled input into a large pending frame is not quadratic", () => {
    const d = new FrameDecoder();
    const f = encodeFrame(Buffer.alloc(MAX_FRAME_PAYLOAD, 3));
    const t0 = Date.now();
    let got = 0;
    for (let off = 0; off < f.length; off += 64) got += frames(d.push(f.subarray(off, off + 64))).length;
    expect(got).toBe(1);
    expect(Date.now() - t0).toBeLessThan(5000);
  });
});

describe("FrameDecoder against a hostile peer", () => {
  test("the CRC bomb (1 MiB of headers each claiming the rest) costs work linear in its size", () => {
    const bomb = crcBomb(MAX_FRAME_PAYLOAD);
    const d = new FrameDecoder();
    const t0 = performance.now();
    const out = d.push(bomb);
    const ms = performance.now() - t0;
    // The old decoder did ~N²/32 ≈ 32 GiB of CRC here (8 s); the credit allows the cap plus 4 per byte.
    expect(d.work).toBeLessThanOrEqual(4 * (MAX_FRAME_PAYLOAD + FRAME_HEADER_LEN) + RESYNC_WORK_PER_BYTE * bomb.length);
    expect(ms).toBeLessThan(1000);
    expect(frames(out)).toEqual([]);
    expect(skipped(out) + d.buffered).toBe(bomb.length);
    // The decoder is usable afterwards: an honest frame still decodes.
    expect(frames(d.push(encodeFrame(Buffer.from("after the bomb"))))).toEqual(["after the bomb"]);
  });

  test("repeated bombs in small chunks: work stays within the credit earned by the bytes received", () => {
    const d = new FrameDecoder();
    let received = 0;
    for (let round = 0; round < 8; round++) {
      const bomb = crcBomb(256 * 1024);
      for (let off = 0; off < bomb.length; off += 4096) {
        d.push(bomb.subarray(off, off + 4096));
        received += Math.min(4096, bomb.length - off);
      }
    }
    expect(d.work).toBeLessThanOrEqual(4 * (MAX_FRAME_PAYLOAD + FRAME_HEADER_LEN) + RESYNC_WORK_PER_BYTE * received);
    expect(frames(d.push(encodeFrame(Buffer.from("still decodes"))))).toEqual(["still decodes"]);
  });

  test("the in-place header checksum is zlib's CRC-32", () => {
    for (let i = 0; i < 200; i++) {
      const b = Buffer.from(Array.from({ length: 20 }, (_, j) => (i * 31 + j * 7 + ((i * j) % 13)) & 0xff));
      expect(headerCrc(b, 3)).toBe(crc32(b.subarray(3, 15)));
    }
  });

  test("honest traffic never runs out of credit: 64 maximum-size frames back to back", () => {
    const d = new FrameDecoder();
    const f = encodeFrame(Buffer.alloc(MAX_FRAME_PAYLOAD, 9));
    let got = 0;
    for (let i = 0; i < 64; i++) for (let off = 0; off < f.length; off += 65536) got += frames(d.push(f.subarray(off, off + 65536))).length;
    expect(got).toBe(64);
  });
});

describe("FrameDecoder in strict mode (a stream known to be in sync)", () => {
  test("stops at the first anomaly and reports it; frames before it are delivered", () => {
    const d = new FrameDecoder();
    d.strict = true;
    const out = d.push(Buffer.concat([encodeFrame(Buffer.from("ok")), Buffer.from("junk"), encodeFrame(Buffer.from("never"))]));
    expect(frames(out)).toEqual(["ok"]);
    expect(out.filter((e) => e.kind === "skipped")).toHaveLength(1);
  });

  test("the CRC bomb costs one payload checksum, not the credit", () => {
    const d = new FrameDecoder();
    d.strict = true;
    const bomb = crcBomb(MAX_FRAME_PAYLOAD);
    const out = d.push(bomb);
    expect(out).toEqual([{ kind: "skipped", bytes: 1, reason: "frame payload checksum mismatch" }]);
    expect(d.work).toBeLessThan(bomb.length + 64);
  });

  test("a frame cut short and followed by another is reported at once", () => {
    const d = new FrameDecoder();
    d.strict = true;
    const torn = encodeFrame(Buffer.alloc(4096, 1));
    const out = d.push(Buffer.concat([torn.subarray(0, 2000), encodeFrame(Buffer.from("next"))]));
    expect(out[0]).toMatchObject({ kind: "skipped", reason: expect.stringContaining("incomplete frame") });
  });
});

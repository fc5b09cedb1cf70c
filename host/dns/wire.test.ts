import { describe, expect, test } from "vitest";
import { encodeName, ipv6Bytes, readName, readQuestion, recordOffsets } from "./wire.js";

describe("DNS wire helpers", () => {
  test("names: uncompressed, canonical on request, bounded", () => {
    expect(encodeName("Ab.cvm.test.")).toEqual(Buffer.from("\x02Ab\x03cvm\x04test\x00", "latin1"));
    expect(encodeName("Ab.cvm.test", true)).toEqual(Buffer.from("\x02ab\x03cvm\x04test\x00", "latin1"));
    expect(encodeName(".")).toEqual(Buffer.from([0]));
    expect(() => encodeName("a..b")).toThrow(/label/);
    expect(() => encodeName("x".repeat(64))).toThrow(/label/);
    expect(() => encodeName(Array(64).fill("abc").join("."))).toThrow(/too long/);
  });

  test("IPv6 text to bytes, every shorthand", () => {
    expect(ipv6Bytes("::").toString("hex")).toBe("0".repeat(32));
    expect(ipv6Bytes("::1").toString("hex")).toBe("0".repeat(31) + "1");
    expect(ipv6Bytes("fd00::5").toString("hex")).toBe("fd00" + "0".repeat(27) + "5");
    expect(ipv6Bytes("2001:db8:0:0:1:0:0:1").toString("hex")).toBe("20010db8000000000001000000000001");
    expect(ipv6Bytes("fe80::").toString("hex")).toBe("fe80" + "0".repeat(28));
    expect(ipv6Bytes("::ffff:192.0.2.1").toString("hex")).toBe("00000000000000000000ffffc0000201");
    expect(() => ipv6Bytes("1.2.3.4")).toThrow();
  });

  test("a question is read raw; pointers in it, or running off the end, are malformed", () => {
    const q = Buffer.concat([Buffer.alloc(12), encodeName("Ab.cvm.test"), Buffer.from([0, 28, 0, 1])]);
    expect(readQuestion(q)).toEqual({ name: "Ab.cvm.test", type: 28, klass: 1, end: q.length, plainLabels: true });
    expect(readQuestion(q.subarray(0, q.length - 1))).toBeNull();
    expect(readQuestion(Buffer.concat([Buffer.alloc(12), Buffer.from([0xc0, 0, 0, 1, 0, 1])]))).toBeNull();
    const odd = Buffer.concat([Buffer.alloc(12), Buffer.from([3, 0x61, 0x2e, 0xff, 0]), Buffer.from([0, 1, 0, 1])]);
    expect(readQuestion(odd)?.plainLabels).toBe(false);
  });

  test("readName follows pointers backwards only, so a loop ends", () => {
    const buf = Buffer.concat([encodeName("cvm.test"), Buffer.from([1, 0x61, 0xc0, 0])]);
    expect(readName(buf, 10)).toBe("a.cvm.test");
    expect(() => readName(Buffer.from([0xc0, 0]), 0)).toThrow(/pointer/);
    expect(() => readName(Buffer.from([1, 0x61, 0xc0, 2]), 0)).toThrow(/pointer/);
  });

  test("recordOffsets rejects counts the message cannot hold", () => {
    const hdr = Buffer.from([0, 1, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]);
    expect(() => recordOffsets(hdr)).toThrow();
  });
});

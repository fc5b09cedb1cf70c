import dnsPacket from "dns-packet";
import { describe, expect, test } from "vitest";
import { extractTsig, signMessage, verifyMessage, type TsigKey } from "./tsig.js";

const KEY: TsigKey = { name: "cvmd-update.", secret: Buffer.from("0123456789abcdef0123456789abcdef") };
const NOW = new Date("2026-05-01T12:00:00Z");
const msg = () => dnsPacket.encode({ type: "query", id: 777, questions: [{ name: "cvm.test", type: "SOA" }] });

describe("TSIG (RFC 8945, HMAC-SHA256)", () => {
  test("a signed message verifies, and its TSIG record says what was signed", () => {
    const { message, mac } = signMessage(msg(), KEY, { now: NOW });
    expect(message.readUInt16BE(10)).toBe(1);
    expect(mac).toHaveLength(32);
    const parts = extractTsig(message)!;
    expect(parts.unsigned).toEqual(msg());
    expect(parts.tsig).toMatchObject({ keyName: "cvmd-update", algorithm: "hmac-sha256", timeSigned: NOW.getTime() / 1000, fudge: 300, originalId: 777, error: 0 });
    expect(parts.tsig.mac).toEqual(mac);
    expect(verifyMessage(message, KEY, { now: NOW })).toEqual({ ok: true });
    // Key names compare case-insensitively and with or without the root dot.
    expect(verifyMessage(message, { ...KEY, name: "CVMD-Update" }, { now: NOW })).toEqual({ ok: true });
  });

  test("any changed byte, another secret, or another key name fails", () => {
    const { message } = signMessage(msg(), KEY, { now: NOW });
    const tampered = Buffer.from(message);
    tampered[14] ^= 1; // inside the question name
    expect(verifyMessage(tampered, KEY, { now: NOW })).toMatchObject({ ok: false, error: "BADSIG" });
    expect(verifyMessage(message, { ...KEY, secret: Buffer.from("another secret of enough length!") }, { now: NOW })).toMatchObject({ ok: false, error: "BADSIG" });
    expect(verifyMessage(message, { ...KEY, name: "other-key" }, { now: NOW })).toMatchObject({ ok: false, error: "BADKEY" });
  });

  test("outside the fudge window is BADTIME", () => {
    const { message } = signMessage(msg(), KEY, { now: NOW, fudgeSeconds: 60 });
    expect(verifyMessage(message, KEY, { now: new Date(NOW.getTime() + 59_000) })).toEqual({ ok: true });
    expect(verifyMessage(message, KEY, { now: new Date(NOW.getTime() + 61_000) })).toMatchObject({ ok: false, error: "BADTIME" });
  });

  test("a response chains to its request's MAC: it does not verify against another request", () => {
    const req1 = signMessage(msg(), KEY, { now: NOW });
    const req2 = signMessage(msg(), KEY, { now: new Date(NOW.getTime() + 1000) });
    const response = dnsPacket.encode({ type: "response", id: 777, questions: [{ name: "cvm.test", type: "SOA" }] });
    const signed = signMessage(response, KEY, { now: NOW, requestMac: req1.mac }).message;
    expect(verifyMessage(signed, KEY, { now: NOW, requestMac: req1.mac })).toEqual({ ok: true });
    expect(verifyMessage(signed, KEY, { now: NOW, requestMac: req2.mac })).toMatchObject({ ok: false, error: "BADSIG" });
    expect(verifyMessage(signed, KEY, { now: NOW })).toMatchObject({ ok: false, error: "BADSIG" });
  });

  test("the digest covers the original ID, so a changed ID (a forwarder's) still verifies", () => {
    const { message } = signMessage(msg(), KEY, { now: NOW });
    const forwarded = Buffer.from(message);
    forwarded.writeUInt16BE(999, 0);
    expect(verifyMessage(forwarded, KEY, { now: NOW })).toEqual({ ok: true });
  });

  test("unsigned messages and a server's unsigned BADKEY are reported as such", () => {
    expect(verifyMessage(msg(), KEY, { now: NOW })).toMatchObject({ ok: false, error: "unsigned" });
    // What a server sends when it does not know the key: TSIG with error 17 and no MAC.
    const { message } = signMessage(msg(), KEY, { now: NOW });
    const parts = extractTsig(message)!;
    const noMac = Buffer.from(message.subarray(0, message.length - (32 + 6)));
    // Rebuild the tail: MAC size 0, original ID, error 17, other length 0.
    const macSizeAt = noMac.length - 2;
    noMac.writeUInt16BE(0, macSizeAt);
    const tail = Buffer.from([0x03, 0x09, 0x00, 0x11, 0x00, 0x00]);
    const unsignedErr = Buffer.concat([noMac, tail]);
    const rdlenAt = parts.unsigned.length + "cvmd-update".length + 2 + 8;
    unsignedErr.writeUInt16BE(unsignedErr.readUInt16BE(rdlenAt) - 32, rdlenAt);
    expect(verifyMessage(unsignedErr, KEY, { now: NOW })).toMatchObject({ ok: false, error: "BADKEY", tsigError: 17 });
  });

  test("a TSIG that is not the last record, or is cut short, is rejected without throwing", () => {
    const { message } = signMessage(msg(), KEY, { now: NOW });
    expect(verifyMessage(message.subarray(0, message.length - 3), KEY, { now: NOW })).toMatchObject({ ok: false });
    const withTrailer = Buffer.concat([message, Buffer.from([0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0])]);
    withTrailer.writeUInt16BE(2, 10);
    expect(verifyMessage(withTrailer, KEY, { now: NOW })).toMatchObject({ ok: false });
  });
});

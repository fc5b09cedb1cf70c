import { createHash } from "node:crypto";
import { describe, expect, test } from "vitest";
import { canonicalHostKey, reportDataFor } from "./report-data.js";

const ed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@cvm";
const ec = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEm root@cvm";

describe("reportDataFor", () => {
  test("matches the documented encoding", () => {
    const nonce = Buffer.alloc(32, 7);
    const keys = [canonicalHostKey(ec), canonicalHostKey(ed)].map((k) => Buffer.from(k)).sort(Buffer.compare);
    const u32 = (n: number) => {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(n);
      return b;
    };
    const expected = createHash("sha512")
      .update(Buffer.from("cvm-attest-v1\0", "latin1"))
      .update(u32(32))
      .update(nonce)
      .update(Buffer.concat(keys.flatMap((k) => [u32(k.length), k])))
      .digest();
    const got = reportDataFor(nonce, [ed, ec]);
    expect(got.length).toBe(64);
    expect(got.equals(expected)).toBe(true);
  });

  test("independent of key order and comments; sensitive to nonce and key bytes", () => {
    const n = Buffer.alloc(32, 1);
    const base = reportDataFor(n, [ed, ec]);
    expect(reportDataFor(n, [ec, ed]).equals(base)).toBe(true);
    expect(reportDataFor(n, [ed.replace(" root@cvm", ""), ec + "\n"]).equals(base)).toBe(true);
    expect(reportDataFor(Buffer.alloc(32, 2), [ed, ec]).equals(base)).toBe(false);
    expect(reportDataFor(n, [ed]).equals(base)).toBe(false);
    // moving a byte between nonce and key changes the result (length prefixes)
    expect(reportDataFor(Buffer.alloc(0), []).equals(reportDataFor(Buffer.alloc(4), []))).toBe(false);
    expect(() => reportDataFor(n, ["garbage"])).toThrow(/not an SSH public key/);
  });
});

import { createHash } from "node:crypto";
import { describe, expect, test } from "vitest";
import { eventDigest, reportDataFor } from "./tdx-digests.js";

describe("RTMR3 event digests and REPORTDATA", () => {
  test("eventDigest is SHA-384 of type:payload", () => {
    expect(eventDigest("openclaw-tree", "ab").toString("hex")).toBe(createHash("sha384").update("openclaw-tree:ab").digest("hex"));
    expect(eventDigest("a", "b")).toHaveLength(48);
  });

  test("reportDataFor is 64 bytes, binds nonce and keys, ignores key order and comments", () => {
    const k1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA1";
    const k2 = "ecdsa-sha2-nistp256 AAAAE2VjZHNh";
    const n = Buffer.alloc(32, 1);
    const rd = reportDataFor(n, [k1, k2]);
    expect(rd).toHaveLength(64);
    expect(reportDataFor(n, [k2 + " comment", k1])).toEqual(rd);
    expect(reportDataFor(Buffer.alloc(32, 2), [k1, k2])).not.toEqual(rd);
    expect(reportDataFor(n, [k1])).not.toEqual(rd);
  });
});

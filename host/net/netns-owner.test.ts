import { expect, test } from "vitest";

import { dnsmasqDataDir, ownerMark, parseOwnerMark } from "./netns-owner.js";

test("a data dir that fits is named in full and read back as it was", () => {
  expect(ownerMark("/var/lib/cvm")).toBe("cvmd-owner:/var/lib/cvm");
  expect(parseOwnerMark("cvmd-owner:/var/lib/cvm")).toEqual({ dataDir: "/var/lib/cvm", complete: true });
  expect(parseOwnerMark("/srv/a b/ü")).toBeNull();
  expect(parseOwnerMark(ownerMark("/srv/a b/ü"))).toEqual({ dataDir: "/srv/a b/ü", complete: true });
});

test("a path too long for IFALIASZ becomes hash plus the beginning; paths differing only past the cut still differ", () => {
  const base = "/data/" + "ä".repeat(150); // two bytes each: the cut must not split one
  const a = ownerMark(base + "/a");
  const b = ownerMark(base + "/b");
  expect(Buffer.byteLength(a)).toBeLessThanOrEqual(255);
  expect(a).not.toBe(b);
  expect(a).not.toContain("\uFFFD");
  const parsed = parseOwnerMark(a)!;
  expect(parsed.complete).toBe(false);
  expect(base.startsWith(parsed.dataDir)).toBe(true);
  // The longest path that still fits is kept whole.
  const fits = "/" + "x".repeat(255 - "cvmd-owner:/".length);
  expect(ownerMark(fits)).toBe("cvmd-owner:" + fits);
  expect(parseOwnerMark(ownerMark(fits + "y"))!.complete).toBe(false);
});

test("the data dir a dnsmasq serves comes from its pid file", () => {
  expect(dnsmasqDataDir({ pid: 2, argv: ["dnsmasq", "--port=0", "--pid-file=/var/lib/cvm/net/dhcp/dnsmasq.pid"] })).toBe("/var/lib/cvm");
  expect(dnsmasqDataDir({ pid: 2, argv: ["dnsmasq", "--pid-file=/run/other.pid"] })).toBeNull();
  expect(dnsmasqDataDir({ pid: 2, argv: ["dnsmasq"] })).toBeNull();
});

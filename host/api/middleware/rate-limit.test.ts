import { describe, expect, it } from "vitest";
import { addressBucketId, TokenBuckets } from "./rate-limit.js";

describe("TokenBuckets", () => {
  it("allows a minute's burst, then the steady rate, and says when to come back", () => {
    let now = 0;
    const b = new TokenBuckets(60, () => now);
    for (let i = 0; i < 60; i++) expect(b.take("k").allowed).toBe(true);
    const refused = b.take("k");
    expect(refused).toEqual({ allowed: false, limit: 60, remaining: 0, resetSeconds: 60, retryAfterSeconds: 1 });
    now += 1000;
    expect(b.take("k")).toMatchObject({ allowed: true, remaining: 0 });
    expect(b.take("k").allowed).toBe(false);
    now += 30_000;
    expect(b.take("k")).toMatchObject({ allowed: true, remaining: 29, resetSeconds: 31 });
    expect(b.take("other")).toMatchObject({ allowed: true, remaining: 59 });
  });

  it("peek does not consume", () => {
    const b = new TokenBuckets(2, () => 0);
    expect(b.peek("k").remaining).toBe(2);
    b.take("k");
    b.take("k");
    expect(b.peek("k")).toMatchObject({ allowed: false, retryAfterSeconds: 30 });
  });

  it("forgets full buckets and caps the number it keeps", () => {
    let now = 0;
    const b = new TokenBuckets(10, () => now, 100);
    for (let i = 0; i < 500; i++) b.take(`id-${i}`);
    expect(b.size).toBeLessThanOrEqual(101);
    now += 60_000;
    for (let i = 0; i < 1024; i++) b.take("same");
    expect(b.size).toBe(1);
  });
});

describe("addressBucketId", () => {
  it("groups IPv6 by /64 and leaves IPv4 alone", () => {
    expect(addressBucketId("203.0.113.5")).toBe("203.0.113.5");
    expect(addressBucketId("2001:db8:1:2:aaaa::1")).toBe("2001:0db8:0001:0002::/64");
    expect(addressBucketId("2001:db8:1:2:bbbb:cccc:dddd:eeee")).toBe("2001:0db8:0001:0002::/64");
    expect(addressBucketId("::1")).toBe("0000:0000:0000:0000::/64");
    expect(addressBucketId("64:ff9b::192.0.2.1")).toBe("0064:ff9b:0000:0000::/64");
  });
});

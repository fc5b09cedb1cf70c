import { describe, expect, it } from "vitest";
import { clientAddress, TrustedProxies } from "./client-address.js";

describe("clientAddress", () => {
  const proxies = new TrustedProxies(["127.0.0.1", "10.0.0.0/8", "fd00::/8"]);

  it("ignores X-Forwarded-For from an untrusted peer", () => {
    expect(clientAddress("192.0.2.7", "203.0.113.9", proxies)).toBe("192.0.2.7");
    expect(clientAddress("192.0.2.7", "203.0.113.9", new TrustedProxies([]))).toBe("192.0.2.7");
  });

  it("takes the rightmost untrusted hop behind trusted proxies", () => {
    expect(clientAddress("127.0.0.1", "203.0.113.9", proxies)).toBe("203.0.113.9");
    expect(clientAddress("::ffff:127.0.0.1", "198.51.100.1, 203.0.113.9, 10.1.2.3", proxies)).toBe("203.0.113.9");
    expect(clientAddress("fd00::1", "2001:db8::5", proxies)).toBe("2001:db8::5");
  });

  it("a spoofed leftmost entry cannot choose the identity", () => {
    // The client sent "1.2.3.4" itself; our proxy appended the real peer.
    expect(clientAddress("127.0.0.1", "1.2.3.4, 203.0.113.9", proxies)).toBe("203.0.113.9");
  });

  it("stops at garbage and when every hop is trusted", () => {
    expect(clientAddress("127.0.0.1", "not-an-ip", proxies)).toBe("127.0.0.1");
    expect(clientAddress("127.0.0.1", "203.0.113.9, junk, 10.0.0.2", proxies)).toBe("10.0.0.2");
    expect(clientAddress("127.0.0.1", "10.0.0.3, 10.0.0.2", proxies)).toBe("10.0.0.3");
    expect(clientAddress("127.0.0.1", undefined, proxies)).toBe("127.0.0.1");
  });
});

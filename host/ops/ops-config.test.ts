import { describe, expect, it } from "vitest";
import { loadConfig } from "../config.js";

const base = { CVM_DATA_DIR: "/tmp/cvm-config-test" };

describe("operator configuration (issue 10 variables)", () => {
  it("defaults: metrics off, 600/min per key, twice that per address, 10 auth failures, no proxies, no TLS", () => {
    const c = loadConfig(base);
    expect(c.metricsListen).toBeNull();
    expect(c.rateLimit).toEqual({ perKeyPerMinute: 600, perAddressPerMinute: 1200, authFailuresPerMinute: 10 });
    expect(c.trustedProxies).toEqual([]);
    expect(c.tls).toBeNull();
  });

  it("parses every variable", () => {
    const c = loadConfig(
      {
        ...base,
        CVM_METRICS_LISTEN: "[::1]:9464",
        CVM_RATE_LIMIT: "0",
        CVM_RATE_LIMIT_PER_ADDRESS: "50",
        CVM_AUTH_FAILURE_LIMIT: "3",
        CVM_TRUSTED_PROXIES: " 127.0.0.1, 10.0.0.0/8,fd00::/8 ",
        CVM_TLS_CERT: "tls/c.pem",
        CVM_TLS_KEY: "/etc/k.pem",
      },
      "/srv",
    );
    expect(c.metricsListen).toEqual({ host: "::1", port: 9464 });
    expect(c.rateLimit).toEqual({ perKeyPerMinute: 0, perAddressPerMinute: 50, authFailuresPerMinute: 3 });
    expect(c.trustedProxies).toEqual(["127.0.0.1", "10.0.0.0/8", "fd00::/8"]);
    expect(c.tls).toEqual({ certFile: "/srv/tls/c.pem", keyFile: "/etc/k.pem" });
    expect(loadConfig({ ...base, CVM_RATE_LIMIT: "10000000" }).rateLimit.perAddressPerMinute).toBe(10_000_000);
  });

  it.each([
    [{ CVM_METRICS_LISTEN: "9464" }, /CVM_METRICS_LISTEN=9464: expected host:port/],
    [{ CVM_RATE_LIMIT: "-1" }, /CVM_RATE_LIMIT=-1/],
    [{ CVM_RATE_LIMIT: "fast" }, /CVM_RATE_LIMIT=fast/],
    [{ CVM_RATE_LIMIT_PER_ADDRESS: "1.5" }, /CVM_RATE_LIMIT_PER_ADDRESS=1.5/],
    [{ CVM_TRUSTED_PROXIES: "proxy.local" }, /CVM_TRUSTED_PROXIES=proxy.local/],
    [{ CVM_TRUSTED_PROXIES: "10.0.0.0/33" }, /CVM_TRUSTED_PROXIES=10.0.0.0\/33/],
    [{ CVM_TRUSTED_PROXIES: "10.0.0.0/8/1" }, /CVM_TRUSTED_PROXIES/],
    [{ CVM_TLS_CERT: "c.pem" }, /CVM_TLS_KEY: CVM_TLS_CERT and CVM_TLS_KEY go together/],
    [{ CVM_TLS_KEY: "k.pem" }, /CVM_TLS_CERT: CVM_TLS_CERT and CVM_TLS_KEY go together/],
  ])("rejects %j naming the variable", (env, message) => {
    expect(() => loadConfig({ ...base, ...env })).toThrow(message);
  });
});

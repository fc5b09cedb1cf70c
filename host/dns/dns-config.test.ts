import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import { parseDnsConfig } from "./dns-config.js";

const parse = (env: Record<string, string>, base = "cvm.localhost") => parseDnsConfig((n) => env[n] || undefined, base);
const SECRET = Buffer.alloc(32, 7).toString("base64");

describe("parseDnsConfig", () => {
  const dir = mkdtempSync(join(tmpdir(), "cvm-dns-config-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("defaults: no server, embedded provider, the apex as nameserver", () => {
    expect(parse({})).toEqual({
      listen: null,
      provider: "embedded",
      ttlSeconds: 30,
      negativeTtlSeconds: 30,
      nameservers: ["cvm.localhost"],
      hostmaster: "hostmaster.cvm.localhost",
      hostAddresses: { a: [], aaaa: [] },
      rfc2136: null,
    });
  });

  test("a server on a specific address uses it for the apex glue unless told otherwise", () => {
    expect(parse({ CVM_DNS_LISTEN: "127.0.0.1:5353" })).toMatchObject({ listen: { host: "127.0.0.1", port: 5353 }, hostAddresses: { a: ["127.0.0.1"] } });
    expect(parse({ CVM_DNS_LISTEN: "[::1]:53" }).hostAddresses).toEqual({ a: [], aaaa: ["::1"] });
    expect(() => parse({ CVM_DNS_LISTEN: "0.0.0.0:53" })).toThrow(/CVM_DNS_HOST_ADDRESSES: required/);
    expect(parse({ CVM_DNS_LISTEN: "0.0.0.0:53", CVM_DNS_HOST_ADDRESSES: "203.0.113.7,2001:db8::7" }).hostAddresses).toEqual({ a: ["203.0.113.7"], aaaa: ["2001:db8::7"] });
    expect(parse({ CVM_DNS_LISTEN: "0.0.0.0:53", CVM_DNS_NAMESERVERS: "ns1.operator.example" }).nameservers).toEqual(["ns1.operator.example"]);
  });

  test("bad values name their variable", () => {
    expect(() => parse({ CVM_DNS_LISTEN: "5353" })).toThrow(/^CVM_DNS_LISTEN=5353/);
    expect(() => parse({ CVM_DNS_PROVIDER: "route53" })).toThrow(/^CVM_DNS_PROVIDER/);
    expect(() => parse({ CVM_DNS_TTL: "0" })).toThrow(/^CVM_DNS_TTL/);
    expect(() => parse({ CVM_DNS_HOST_ADDRESSES: "host.example" })).toThrow(/^CVM_DNS_HOST_ADDRESSES/);
    expect(() => parse({ CVM_DNS_NAMESERVERS: "ns1.cvm.localhost" })).toThrow(/must be cvm.localhost itself/);
  });

  test("rfc2136: server, zone, key; the secret from the environment or a file, never echoed", () => {
    const base = { CVM_DNS_PROVIDER: "rfc2136", CVM_DNS_UPDATE_SERVER: "192.0.2.53:53", CVM_DNS_TSIG_KEY_NAME: "cvmd-key" };
    const c = parse({ ...base, CVM_DNS_TSIG_SECRET: SECRET }, "cvm.example.com");
    expect(c.rfc2136).toEqual({ server: { host: "192.0.2.53", port: 53 }, zone: "cvm.example.com", keyName: "cvmd-key", secret: Buffer.alloc(32, 7) });
    const file = join(dir, "tsig.key");
    writeFileSync(file, `${SECRET}\n`, { mode: 0o600 });
    expect(parse({ ...base, CVM_DNS_TSIG_SECRET_FILE: file }).rfc2136?.secret).toEqual(Buffer.alloc(32, 7));
    expect(parse({ ...base, CVM_DNS_TSIG_SECRET: SECRET, CVM_DNS_UPDATE_ZONE: "example.com" }, "cvm.example.com").rfc2136?.zone).toBe("example.com");
    expect(() => parse({ ...base, CVM_DNS_TSIG_SECRET: SECRET, CVM_DNS_UPDATE_ZONE: "other.example" }, "cvm.example.com")).toThrow(/not inside it/);
    expect(() => parse({ ...base })).toThrow(/CVM_DNS_TSIG_SECRET or CVM_DNS_TSIG_SECRET_FILE: required/);
    expect(() => parse({ ...base, CVM_DNS_TSIG_SECRET: "c2hvcnQ=" })).toThrow(/shorter than 16 bytes/);
    let msg = "";
    try {
      parse({ ...base, CVM_DNS_TSIG_SECRET: "not base64 but a secret!" });
    } catch (err) {
      msg = (err as Error).message;
    }
    expect(msg).toBe("CVM_DNS_TSIG_SECRET: not base64");
    expect(() => parse({ ...base, CVM_DNS_TSIG_SECRET_FILE: join(dir, "missing") })).toThrow(/ENOENT/);
    expect(() => parse({ CVM_DNS_PROVIDER: "rfc2136" })).toThrow(/CVM_DNS_UPDATE_SERVER: required/);
  });
});

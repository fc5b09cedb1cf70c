import { describe, expect, test } from "vitest";
import { addressesForSshHost, normalizeAddresses, splitAddresses } from "./records.js";
import { instanceAddresses } from "./store-source.js";
import { locateInZone } from "./zone-names.js";

describe("instance addresses", () => {
  const host = { a: ["203.0.113.7"], aaaa: ["2001:db8::7"] };

  test("an IP literal SSH host is the answer; a hostname or wildcard means this host", () => {
    expect(addressesForSshHost("127.0.0.1", host)).toEqual({ a: ["127.0.0.1"] });
    expect(addressesForSshHost("10.77.0.5", host)).toEqual({ a: ["10.77.0.5"] });
    expect(addressesForSshHost("[FD00::5]", host)).toEqual({ aaaa: ["fd00::5"] });
    expect(addressesForSshHost("0.0.0.0", host)).toEqual(host);
    expect(addressesForSshHost("::", host)).toEqual(host);
    expect(addressesForSshHost("abcdefgh.acme.cvm.localhost", host)).toEqual(host);
    expect(addressesForSshHost("abcdefgh.acme.cvm.localhost")).toEqual({ a: [], aaaa: [] });
  });

  test("by status: ready and provisioning resolve, failed exists without address, deleted ones do not exist", () => {
    const ssh = { host: "127.0.0.1", port: 22201, user: "azureuser" };
    expect(instanceAddresses({ status: "ready", ssh, runtime: null })).toEqual({ a: ["127.0.0.1"] });
    expect(instanceAddresses({ status: "provisioning", ssh: null, runtime: { ssh: { host: "127.0.0.1", port: 22201 } } })).toEqual({ a: ["127.0.0.1"] });
    expect(instanceAddresses({ status: "provisioning", ssh: null, runtime: { fake: true } })).toEqual({});
    expect(instanceAddresses({ status: "provisioning", ssh: null, runtime: null })).toEqual({});
    expect(instanceAddresses({ status: "failed", ssh, runtime: null })).toEqual({});
    expect(instanceAddresses({ status: "terminating", ssh, runtime: null })).toBeNull();
    expect(instanceAddresses({ status: "terminated", ssh, runtime: null })).toBeNull();
  });

  test("normalize: de-duplicates, rejects wrong families and oversized sets", () => {
    expect(normalizeAddresses({ a: ["1.2.3.4", "1.2.3.4"], aaaa: ["FD00::1"] })).toEqual({ a: ["1.2.3.4"], aaaa: ["fd00::1"] });
    expect(() => normalizeAddresses({ a: ["fd00::1"] })).toThrow(/IPv4/);
    expect(() => normalizeAddresses({ aaaa: ["1.2.3.4"] })).toThrow(/IPv6/);
    expect(() => normalizeAddresses({ a: Array.from({ length: 9 }, (_, i) => `10.0.0.${i}`) })).toThrow(/at most/);
    expect(splitAddresses([" 192.0.2.1", "2001:db8::1 "])).toEqual({ a: ["192.0.2.1"], aaaa: ["2001:db8::1"] });
    expect(() => splitAddresses(["cvm.test"])).toThrow(/not an IP/);
  });
});

describe("locateInZone", () => {
  test.each([
    ["cvm.test", { kind: "apex" }],
    ["CVM.Test.", { kind: "apex" }],
    ["acme.cvm.test", { kind: "tenant", slug: "acme" }],
    ["AbCdEfGh.Acme.cvm.test", { kind: "instance", name: "abcdefgh", slug: "acme" }],
    ["x.abcdefgh.acme.cvm.test", { kind: "nonexistent" }],
    ["-bad.acme.cvm.test", { kind: "nonexistent" }],
    ["_acme-challenge.cvm.test", { kind: "nonexistent" }],
    ["evilcvm.test", { kind: "outside" }],
    ["cvm.test.evil", { kind: "outside" }],
    ["", { kind: "outside" }],
  ])("%s", (name, want) => expect(locateInZone(name, "cvm.test")).toEqual(want));
});

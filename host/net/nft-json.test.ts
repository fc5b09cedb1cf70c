import { readFileSync } from "node:fs";
import { describe, expect, test } from "vitest";
import { NftJsonError, parseNftTableListing } from "./nft-json.js";

// Captured from nft 1.0.6 (kernel 6.18) after NftEgressFirewall.sync() of two instances plus one
// foreign counter; the second file is a table built with afterBlock: null.
const LISTING = readFileSync(new URL("./testdata/nft-1.0.6-list-table.json", import.meta.url), "utf8");
const STRICT = readFileSync(new URL("./testdata/nft-1.0.6-list-table-strict.json", import.meta.url), "utf8");
// `nft -j list counters table netdev cvm_egress ; list quotas table netdev cvm_egress` on the same table.
const OBJECTS = readFileSync(new URL("./testdata/nft-1.0.6-list-objects.json", import.meta.url), "utf8");

type Entry = Record<string, Record<string, unknown>>;
const entries = (text: string): Entry[] => (JSON.parse(text) as { nftables: Entry[] }).nftables;
const withEntries = (list: Entry[]) => JSON.stringify({ nftables: list });

describe("parseNftTableListing", () => {
  test("reads counters, quotas, chains and rules of a real listing", () => {
    const t = parseNftTableListing(LISTING, "netdev", "cvm_egress");
    expect(t.counters.get("egress_inst_2d1")).toEqual({ name: "egress_inst_2d1", packets: 1000, bytes: 1048576 });
    expect(t.counters.get("foreign")).toEqual({ name: "foreign", packets: 3, bytes: 4 });
    expect(t.counters.size).toBe(7);
    expect(t.quotas.get("quota_inst_2d1")).toEqual({ name: "quota_inst_2d1", limitBytes: 5368709120, usedBytes: 1048576, over: true });
    expect(t.quotas.get("quota__c3_9cn_c3_af_5f2")).toMatchObject({ limitBytes: 3000000, usedBytes: 3000000 });
    const ingress = t.chains.get("ingress_inst_2d1")!;
    expect(ingress.hook).toEqual({ type: "filter", hook: "ingress", prio: -500, policy: "accept" });
    expect(ingress.rules.map((r) => r.comment)).toEqual(["tap=tap-1", undefined]);
    expect(ingress.rules[0]!.expr).toEqual([{ quota: "quota_inst_2d1" }, { jump: { target: "blocked_inst_2d1" } }]);
    const blocked = t.chains.get("blocked_inst_2d1")!;
    expect(blocked.hook).toBeUndefined();
    expect(blocked.rules).toHaveLength(6);
    expect(blocked.rules[5]!.expr).toEqual([{ counter: "dropped_inst_2d1" }, { drop: null }]);
  });

  test("reads the two documents of a counters + quotas listing as one snapshot", () => {
    expect(OBJECTS.trim().split("\n")).toHaveLength(2);
    const objects = parseNftTableListing(OBJECTS, "netdev", "cvm_egress");
    const full = parseNftTableListing(LISTING, "netdev", "cvm_egress");
    expect(objects.counters).toEqual(full.counters);
    expect(objects.quotas).toEqual(full.quotas);
    expect(objects.chains.size).toBe(0);
  });

  test("reads a quota that has never been charged (used 0)", () => {
    const t = parseNftTableListing(STRICT, "netdev", "cvm_egress_strict");
    expect(t.quotas.get("quota_inst_2d3")).toEqual({ name: "quota_inst_2d3", limitBytes: 1000, usedBytes: 0, over: true });
    expect(t.chains.get("blocked_inst_2d3")!.rules).toHaveLength(1);
  });

  test("an omitted quota usage (older nft) reads as 0", () => {
    const list = entries(STRICT).map((e) => {
      if (!e.quota) return e;
      const { used: _used, ...rest } = e.quota;
      return { quota: rest };
    });
    expect(parseNftTableListing(withEntries(list), "netdev", "cvm_egress_strict").quotas.get("quota_inst_2d3")!.usedBytes).toBe(0);
  });

  test("skips entries of other tables and families, and object kinds it does not use", () => {
    const list = entries(STRICT);
    list.push({ counter: { family: "inet", name: "x", table: "cvm_egress_strict", handle: 90, packets: 1, bytes: 1 } });
    list.push({ counter: { family: "netdev", name: "y", table: "other", handle: 91, packets: 1, bytes: 1 } });
    list.push({ limit: { family: "netdev", name: "l", table: "cvm_egress_strict", handle: 92, rate: 1, per: "second" } });
    const t = parseNftTableListing(withEntries(list), "netdev", "cvm_egress_strict");
    expect([...t.counters.keys()].sort()).toEqual(["afterblock_inst_2d3", "dropped_inst_2d3", "egress_inst_2d3"]);
  });

  test.each<[string, (list: Entry[]) => Entry[] | string, RegExp]>([
    ["not JSON", () => "Error: oops", /not JSON/],
    ["no nftables array", () => JSON.stringify({ foo: [] }), /no "nftables" array/],
    ["another schema version", (l) => [{ metainfo: { json_schema_version: 2 } }, ...l.slice(1)], /schema version 2/],
    ["empty output", () => "\n", /printed nothing/],
    ["a second document that is not JSON", (l) => withEntries(l) + "\nError: x", /not JSON/],
    ["counter bytes as string", (l) => l.map((e) => (e.counter ? { counter: { ...e.counter, bytes: "12" } } : e)), /"bytes" is not a non-negative safe integer/],
    ["counter beyond 2^53", (l) => l.map((e) => (e.counter ? { counter: { ...e.counter, packets: 2 ** 60 } } : e)), /"packets" is not a non-negative safe integer/],
    ["negative quota", (l) => l.map((e) => (e.quota ? { quota: { ...e.quota, bytes: -1 } } : e)), /"bytes"/],
    ["rule of an unknown chain", (l) => l.map((e) => (e.rule ? { rule: { ...e.rule, chain: "ghost" } } : e)), /unknown chain ghost/],
    ["rule without expr", (l) => l.map((e) => (e.rule ? { rule: { ...e.rule, expr: {} } } : e)), /"expr" is not an array/],
    ["entry with two kinds", (l) => [...l, { counter: {}, quota: {} } as Entry], /has 2 keys/],
  ])("rejects %s", (_name, mutate, error) => {
    const out = mutate(entries(STRICT));
    const text = typeof out === "string" ? out : withEntries(out);
    expect(() => parseNftTableListing(text, "netdev", "cvm_egress_strict")).toThrow(NftJsonError);
    expect(() => parseNftTableListing(text, "netdev", "cvm_egress_strict")).toThrow(error);
  });
});

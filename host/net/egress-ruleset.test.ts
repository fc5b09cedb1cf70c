import { readFileSync } from "node:fs";
import { describe, expect, test } from "vitest";
import { parseNftTableListing } from "./nft-json.js";
import {
  DEFAULT_AFTER_BLOCK,
  EgressConfigError,
  MAX_ENCODED_ID_LENGTH,
  decodeInstanceId,
  egressNames,
  encodeInstanceId,
  planRemove,
  planUpsert,
  readEgressState,
  renderEgressScript,
  sampleFromState,
  validateRenderOptions,
  type KernelInstanceState,
  type RenderOptions,
} from "./egress-ruleset.js";

const LISTING = parseNftTableListing(readFileSync(new URL("./testdata/nft-1.0.6-list-table.json", import.meta.url), "utf8"), "netdev", "cvm_egress");
const ODD_ID = "Ünï_2";
const RENDER: RenderOptions = { table: "cvm_egress", priority: -500, afterBlock: { ...DEFAULT_AFTER_BLOCK, sshPeers: ["10.77.255.0"], gateways: ["10.77.0.1"] } };
const SHAPE = { priority: -500 };

describe("instance id encoding", () => {
  test.each([
    ["inst-1", "inst_2d1"],
    ["ABCxyz019", "ABCxyz019"],
    ["a_b", "a_5fb"],
    [ODD_ID, "_c3_9cn_c3_af_5f2"],
    ['x"; flush ruleset', "x_22_3b_20flush_20ruleset"],
    ["3f2a9c1e-0d4b-4c2e-9f7a-1b2c3d4e5f60", "3f2a9c1e_2d0d4b_2d4c2e_2d9f7a_2d1b2c3d4e5f60"],
  ])("%j encodes to %s and back", (id, enc) => {
    expect(encodeInstanceId(id)).toBe(enc);
    expect(encodeInstanceId(id)).toMatch(/^[A-Za-z0-9_]+$/);
    expect(decodeInstanceId(enc)).toBe(id);
  });

  test("distinct ids never collide (a_b vs a-b vs a_5fb)", () => {
    const ids = ["a_b", "a-b", "a_5fb", "a__b", "a5fb", "a b"];
    expect(new Set(ids.map(encodeInstanceId)).size).toBe(ids.length);
  });

  test("round-trips random strings (bounded sample)", () => {
    const alphabet = ["a", "Z", "0", "_", "-", ".", " ", "/", "é", "€", "😀", "\u0000", '"'];
    let seed = 12345;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let i = 0; i < 500; i++) {
      const id = Array.from({ length: 1 + Math.floor(rnd() * 12) }, () => alphabet[Math.floor(rnd() * alphabet.length)]).join("");
      expect(decodeInstanceId(encodeInstanceId(id))).toBe(id);
    }
  });

  test("decode refuses names encode would not produce", () => {
    for (const bad of ["", "_41", "_C3_9C", "a_", "a_5", "a-b", "_ff", "_c3", "x".repeat(MAX_ENCODED_ID_LENGTH + 1)]) {
      expect(decodeInstanceId(bad), bad).toBeUndefined();
    }
  });

  test("length limit: the encoded form, not the raw id, counts", () => {
    expect(encodeInstanceId("a".repeat(MAX_ENCODED_ID_LENGTH))).toHaveLength(MAX_ENCODED_ID_LENGTH);
    expect(() => encodeInstanceId("a".repeat(MAX_ENCODED_ID_LENGTH + 1))).toThrow(EgressConfigError);
    expect(() => encodeInstanceId("-".repeat(67))).toThrow(/encodes to 201 characters/);
    expect(() => encodeInstanceId("")).toThrow(/empty/);
    // The longest derived name stays within the kernel's 255.
    expect(egressNames("a".repeat(MAX_ENCODED_ID_LENGTH)).afterBlock.length).toBeLessThanOrEqual(255);
  });

  test("no derived prefix is a prefix of another, so names map back to one kind", () => {
    const n = egressNames("x");
    const prefixes = Object.values(n).map((v) => v.slice(0, -1));
    for (const a of prefixes) for (const b of prefixes) if (a !== b) expect(b.startsWith(a)).toBe(false);
  });
});

describe("reading the kernel table", () => {
  const state = readEgressState(LISTING);

  test("groups objects and chains by decoded instance id, ignoring foreign names", () => {
    expect([...state.keys()].sort()).toEqual(["inst-1", ODD_ID].sort());
    const s = state.get("inst-1")!;
    expect(s.tap).toBe("tap-1");
    expect(s.egress?.bytes).toBe(1048576);
    expect(s.ingressChain?.hook?.prio).toBe(-500);
    expect(s.blockedChain?.rules).toHaveLength(6);
  });

  test("samples: usage, limit, blocked", () => {
    expect(sampleFromState(state.get("inst-1")!)).toEqual({
      id: "inst-1",
      bytes: 1048576,
      packets: 1000,
      quotaUsedBytes: 1048576,
      afterBlockBytes: 0,
      afterBlockPackets: 0,
      droppedBytes: 0,
      droppedPackets: 0,
      limitBytes: 5368709120,
      blocked: false,
    });
    expect(sampleFromState(state.get(ODD_ID)!)).toMatchObject({
      bytes: 2999000,
      quotaUsedBytes: 3000000,
      afterBlockBytes: 4096,
      afterBlockPackets: 7,
      droppedBytes: 51400,
      droppedPackets: 50,
      blocked: true,
    });
  });

  test("an instance without its quota is not reported (it is not enforced)", () => {
    const { quota: _q, ...rest } = state.get("inst-1")!;
    expect(sampleFromState(rest)).toBeUndefined();
  });
});

describe("planning", () => {
  const kernel = readEgressState(LISTING);
  const k1 = kernel.get("inst-1")!;

  test("a new instance declares every object with its restored state, quota usage at least the counters' sum", () => {
    const p = planUpsert({ id: "new", tap: "tap-9", limitBytes: 10_000n, restored: { bytes: 500, packets: 5, droppedBytes: 70, droppedPackets: 1 } }, undefined, SHAPE);
    expect(p.declare).toEqual({
      egress: { bytes: 500, packets: 5 },
      afterBlock: { bytes: 0, packets: 0 },
      dropped: { bytes: 70, packets: 1 },
      quotaUsedBytes: 570,
    });
    expect(p.limitBytes).toBe(10_000);
    expect(Object.values(p.existing).every((v) => v === false)).toBe(true);
  });

  test("kernel at or above persisted: nothing redeclared, counters keep running", () => {
    const p = planUpsert({ id: "inst-1", tap: "tap-1", limitBytes: 5368709120, restored: { bytes: 10, packets: 1, quotaUsedBytes: 1048576 } }, k1, SHAPE);
    expect(p.declare).toEqual({});
    expect(p.updateQuotaLimit).toBe(false);
    expect(p.recreateIngressChain).toBe(false);
  });

  test("persisted above kernel: max per field, only the affected objects", () => {
    const p = planUpsert({ id: "inst-1", tap: "tap-1", limitBytes: 5368709120, restored: { bytes: 2_000_000, packets: 900 } }, k1, SHAPE);
    expect(p.declare).toEqual({ egress: { bytes: 2_000_000, packets: 1000 }, quotaUsedBytes: 2_000_000 });
  });

  test("restored usage is clamped to the limit (the kernel rejects more)", () => {
    const p = planUpsert({ id: "x", tap: "t", limitBytes: 1000, restored: { bytes: 999, droppedBytes: 5000, quotaUsedBytes: 1000 } }, undefined, SHAPE);
    expect(p.declare.quotaUsedBytes).toBe(1000);
  });

  test("a limit change keeps the kernel's usage and updates in place", () => {
    const p = planUpsert({ id: "inst-1", tap: "tap-1", limitBytes: 6_000_000_000 }, k1, SHAPE);
    expect(p.declare).toEqual({});
    expect(p.updateQuotaLimit).toBe(true);
  });

  test("a different tap or priority recreates the base chain only", () => {
    expect(planUpsert({ id: "inst-1", tap: "tap-7", limitBytes: 5368709120 }, k1, SHAPE).recreateIngressChain).toBe(true);
    expect(planUpsert({ id: "inst-1", tap: "tap-1", limitBytes: 5368709120 }, k1, { priority: 0 }).recreateIngressChain).toBe(true);
    const noComment: KernelInstanceState = { ...k1, tap: undefined };
    expect(planUpsert({ id: "inst-1", tap: "tap-1", limitBytes: 5368709120 }, noComment, SHAPE).recreateIngressChain).toBe(true);
  });

  test.each<[string, object, RegExp]>([
    ["negative restored bytes", { restored: { bytes: -1 } }, /restored.bytes: -1/],
    ["fractional restored packets", { restored: { packets: 1.5 } }, /restored.packets/],
    ["zero limit", { limitBytes: 0 }, /limitBytes 0/],
    ["limit above 2^53", { limitBytes: 2n ** 60n }, /limitBytes/],
    ["tap with a quote", { tap: 'a"b' }, /interface name/],
    ["tap too long", { tap: "a".repeat(16) }, /interface name/],
  ])("rejects %s", (_n, patch, err) => {
    expect(() => planUpsert({ id: "x", tap: "t", limitBytes: 1, ...patch }, undefined, SHAPE)).toThrow(err);
  });
});

describe("rendering", () => {
  test("a new instance: objects with state, chains, rules (golden)", () => {
    const u = planUpsert({ id: "i-1", tap: "tap1", limitBytes: 5368709120, restored: { bytes: 7, packets: 1 } }, undefined, SHAPE);
    expect(renderEgressScript({ remove: [], upsert: [u] }, RENDER)).toBe(
      [
        "add table netdev cvm_egress",
        "add set netdev cvm_egress after_block_v4 { type ipv4_addr . inet_proto . inet_service; flags interval; }",
        "flush set netdev cvm_egress after_block_v4",
        "add element netdev cvm_egress after_block_v4 { 10.77.255.0 . tcp . 22, 10.77.0.1 . udp . 68, 255.255.255.255 . udp . 68 }",
        "add set netdev cvm_egress after_block_v6 { type ipv6_addr . inet_proto . inet_service; flags interval; }",
        "flush set netdev cvm_egress after_block_v6",
        "add element netdev cvm_egress after_block_v6 { fe80::/10 . ipv6-icmp . 34560, fe80::/10 . ipv6-icmp . 34816, ff02::/16 . ipv6-icmp . 34560, ff02::/16 . ipv6-icmp . 34816 }",
        "add set netdev cvm_egress after_block_arp { type ipv4_addr; flags interval; }",
        "flush set netdev cvm_egress after_block_arp",
        "add element netdev cvm_egress after_block_arp { 10.77.0.1 }",
        "add counter netdev cvm_egress egress_i_2d1 { packets 1 bytes 7 }",
        "add counter netdev cvm_egress afterblock_i_2d1 { packets 0 bytes 0 }",
        "add counter netdev cvm_egress dropped_i_2d1 { packets 0 bytes 0 }",
        "add quota netdev cvm_egress quota_i_2d1 { over 5368709120 bytes used 7 bytes }",
        "add chain netdev cvm_egress blocked_i_2d1",
        'add chain netdev cvm_egress ingress_i_2d1 { type filter hook ingress device "tap1" priority -500; policy accept; }',
        'add rule netdev cvm_egress blocked_i_2d1 arp daddr ip @after_block_arp limit rate 10/second burst 20 packets counter name "afterblock_i_2d1" accept',
        'add rule netdev cvm_egress blocked_i_2d1 ip daddr . meta l4proto . th sport @after_block_v4 limit rate 16384 bytes/second burst 65536 bytes counter name "afterblock_i_2d1" accept',
        'add rule netdev cvm_egress blocked_i_2d1 ip6 daddr . meta l4proto . th sport @after_block_v6 limit rate 16384 bytes/second burst 65536 bytes counter name "afterblock_i_2d1" accept',
        'add rule netdev cvm_egress blocked_i_2d1 counter name "dropped_i_2d1" drop',
        'add rule netdev cvm_egress ingress_i_2d1 quota name "quota_i_2d1" jump blocked_i_2d1 comment "tap=tap1"',
        'add rule netdev cvm_egress ingress_i_2d1 counter name "egress_i_2d1"',
        "",
      ].join("\n"),
    );
  });

  test("the after-block sets follow sshPort and peers; a removal-only script leaves the sets alone", () => {
    const u = planUpsert({ id: "s", tap: "tap1", limitBytes: 1 }, undefined, SHAPE);
    const script = renderEgressScript({ remove: [], upsert: [u] }, { ...RENDER, afterBlock: { ...RENDER.afterBlock!, sshPort: 2022, sshPeers: ["10.9.0.0/30", "fd00::1"] } });
    expect(script).toContain("after_block_v4 { 10.9.0.0/30 . tcp . 2022, 10.77.0.1 . udp . 68, 255.255.255.255 . udp . 68 }");
    expect(script).toContain("after_block_v6 { fd00::1 . tcp . 2022, fe80::/10");
    const kernel = readEgressState(LISTING);
    expect(renderEgressScript({ remove: [planRemove(kernel.get("inst-1")!)], upsert: [] }, RENDER)).not.toContain("after_block");
  });

  test("no peers: SSH, DHCP and ARP get no allowance after the block, only link-local ND", () => {
    const u = planUpsert({ id: "s", tap: "tap1", limitBytes: 1 }, undefined, SHAPE);
    const script = renderEgressScript({ remove: [], upsert: [u] }, { ...RENDER, afterBlock: { ...DEFAULT_AFTER_BLOCK } });
    expect(script).not.toContain("add element netdev cvm_egress after_block_v4");
    expect(script).not.toContain("add element netdev cvm_egress after_block_arp");
    expect(script).not.toMatch(/arp daddr|ip daddr/);
    expect(script).toContain("ip6 daddr . meta l4proto . th sport @after_block_v6");
  });

  test("afterBlock null: a blocked frame is only counted and dropped", () => {
    const u = planUpsert({ id: "s", tap: "tap1", limitBytes: 1 }, undefined, SHAPE);
    const script = renderEgressScript({ remove: [], upsert: [u] }, { ...RENDER, afterBlock: null });
    expect(script).not.toMatch(/accept\n/);
    expect(script).not.toContain("after_block");
    expect(script).toContain('add rule netdev cvm_egress blocked_s counter name "dropped_s" drop\n');
  });

  test("existing instances: flush before any object is deleted; removal deletes chains before objects", () => {
    const kernel = readEgressState(LISTING);
    const raise = planUpsert({ id: "inst-1", tap: "tap-1", limitBytes: 5368709120, restored: { bytes: 9_999_999 } }, kernel.get("inst-1"), SHAPE);
    const script = renderEgressScript({ remove: [planRemove(kernel.get(ODD_ID)!)], upsert: [raise] }, RENDER).split("\n");
    const at = (line: string) => {
      const i = script.indexOf(line);
      expect(i, line).toBeGreaterThanOrEqual(0);
      return i;
    };
    const t = "netdev cvm_egress";
    const odd = "_c3_9cn_c3_af_5f2";
    expect(at(`delete chain ${t} ingress_${odd}`)).toBeLessThan(at(`delete chain ${t} blocked_${odd}`));
    expect(at(`delete chain ${t} blocked_${odd}`)).toBeLessThan(at(`delete quota ${t} quota_${odd}`));
    expect(at(`delete chain ${t} blocked_${odd}`)).toBeLessThan(at(`delete counter ${t} egress_${odd}`));
    expect(at(`flush chain ${t} ingress_inst_2d1`)).toBeLessThan(at(`delete counter ${t} egress_inst_2d1`));
    expect(at(`flush chain ${t} blocked_inst_2d1`)).toBeLessThan(at(`delete quota ${t} quota_inst_2d1`));
    expect(at(`delete counter ${t} egress_inst_2d1`)).toBeLessThan(at(`add counter ${t} egress_inst_2d1 { packets 1000 bytes 9999999 }`));
    expect(at(`add quota ${t} quota_inst_2d1 { over 5368709120 bytes used 9999999 bytes }`)).toBeLessThan(
      at(`add rule ${t} ingress_inst_2d1 quota name "quota_inst_2d1" jump blocked_inst_2d1 comment "tap=tap-1"`),
    );
    // Untouched objects of the kept instance are neither deleted nor re-added; its chains are kept.
    expect(script.filter((l) => l.includes("afterblock_inst_2d1 {"))).toEqual([]);
    expect(script.some((l) => l.startsWith(`add chain ${t} ingress_inst_2d1`))).toBe(false);
    expect(script.some((l) => l.startsWith(`add chain ${t} blocked_inst_2d1`))).toBe(false);
  });

  test("a limit change is an in-place quota add without usage; a tap change deletes and re-adds the base chain", () => {
    const kernel = readEgressState(LISTING);
    const u = planUpsert({ id: "inst-1", tap: "tap-5", limitBytes: 100 }, kernel.get("inst-1"), SHAPE);
    const script = renderEgressScript({ remove: [], upsert: [u] }, RENDER);
    expect(script).toContain("add quota netdev cvm_egress quota_inst_2d1 { over 100 bytes }\n");
    expect(script).not.toContain("delete quota");
    expect(script).toContain("delete chain netdev cvm_egress ingress_inst_2d1\n");
    expect(script).toContain('add chain netdev cvm_egress ingress_inst_2d1 { type filter hook ingress device "tap-5" priority -500; policy accept; }\n');
  });

  test.each<[string, Partial<RenderOptions>, RegExp]>([
    ["table name with a space", { table: "a b" }, /table/],
    ["table name starting with a digit", { table: "1abc" }, /table/],
    ["priority not an integer", { priority: 1.5 }, /priority/],
    ["ssh port 0", { afterBlock: { ...DEFAULT_AFTER_BLOCK, sshPort: 0 } }, /sshPort/],
    ["zero byte rate", { afterBlock: { ...DEFAULT_AFTER_BLOCK, bytesPerSecond: 0 } }, /bytesPerSecond/],
    ["zero ARP rate", { afterBlock: { ...DEFAULT_AFTER_BLOCK, arpPacketsPerSecond: 0 } }, /arpPacketsPerSecond/],
    ["a peer that is no address", { afterBlock: { ...DEFAULT_AFTER_BLOCK, sshPeers: ["10.0.0.1; drop"] } }, /sshPeers/],
    ["an IPv6 gateway", { afterBlock: { ...DEFAULT_AFTER_BLOCK, gateways: ["fe80::1"] } }, /gateways/],
  ])("rejects options: %s", (_n, patch, err) => {
    expect(() => validateRenderOptions({ ...RENDER, ...patch })).toThrow(err);
  });
});

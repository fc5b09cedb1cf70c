/**
 * Pure part of the egress firewall: how instance ids become nft names, how the kernel listing is read
 * back into per-instance state, how a desired set of instances becomes a plan (honouring "never lower
 * a kernel counter"), and how a plan becomes one `nft -f` script. No I/O here.
 */
import type { NftChain, NftCounter, NftQuota, NftTableListing } from "./nft-json.js";
import type { EgressCounters, EgressSample } from "../store/egress.js";

export const EGRESS_FAMILY = "netdev";

/** Longest encoded id: keeps the longest derived name ("afterblock_" + id) well under the kernel's 255. */
export const MAX_ENCODED_ID_LENGTH = 200;

export class EgressConfigError extends Error {
  override name = "EgressConfigError";
}

// ---------------------------------------------------------------------------------------------------
// Names

/**
 * Encodes an instance id into the letters/digits/underscore alphabet nft names accept. ASCII letters and
 * digits stay as they are; every other UTF-8 byte, underscore included, becomes `_` + two lowercase
 * hex digits. The mapping is injective and reversible, so `sample()` can name instances it finds in
 * the kernel without any other record (e.g. right after a cvmd restart).
 */
export function encodeInstanceId(id: string): string {
  if (id.length === 0) throw new EgressConfigError("instance id is empty");
  let out = "";
  for (const byte of Buffer.from(id, "utf8")) {
    const isAlnum = (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a);
    out += isAlnum ? String.fromCharCode(byte) : `_${byte.toString(16).padStart(2, "0")}`;
  }
  if (out.length > MAX_ENCODED_ID_LENGTH) {
    throw new EgressConfigError(`instance id ${JSON.stringify(id.slice(0, 40))}...: encodes to ${out.length} characters, max ${MAX_ENCODED_ID_LENGTH}`);
  }
  return out;
}

/** Inverse of encodeInstanceId; undefined for anything encodeInstanceId would not have produced. */
export function decodeInstanceId(encoded: string): string | undefined {
  if (encoded.length <= MAX_ENCODED_ID_LENGTH && /^[A-Za-z0-9]+$/.test(encoded)) return encoded;
  if (encoded.length === 0 || encoded.length > MAX_ENCODED_ID_LENGTH || !/^(?:[A-Za-z0-9]|_[0-9a-f]{2})+$/.test(encoded)) return undefined;
  const bytes = Buffer.from(encoded.replace(/_([0-9a-f]{2})|([A-Za-z0-9])/g, (_m, hex: string | undefined, ch: string | undefined) =>
    hex !== undefined ? String.fromCharCode(parseInt(hex, 16)) : ch!,
  ), "latin1");
  const id = bytes.toString("utf8");
  // Rejects escaped letters/digits and byte sequences that are not valid UTF-8 (they would not round-trip).
  return encodeInstanceIdOrUndefined(id) === encoded ? id : undefined;
}

function encodeInstanceIdOrUndefined(id: string): string | undefined {
  try {
    return encodeInstanceId(id);
  } catch {
    return undefined;
  }
}

/** The nft objects and chains of one instance. Prefixes are distinct and none is a prefix of another. */
export interface EgressNames {
  /** Counter: bytes/packets admitted under the cap. */
  egress: string;
  /** Quota `over <limit>`: the cap itself. */
  quota: string;
  /** Counter: frames still accepted after the block (SSH replies, ARP, neighbour discovery, DHCP). */
  afterBlock: string;
  /** Counter: frames dropped because the cap was reached. */
  dropped: string;
  /** Base chain on the instance's tap (netdev ingress). */
  ingressChain: string;
  /** Regular chain the base chain jumps to once the quota is exhausted. */
  blockedChain: string;
}

const PREFIX = {
  egress: "egress_",
  quota: "quota_",
  afterBlock: "afterblock_",
  dropped: "dropped_",
  ingressChain: "ingress_",
  blockedChain: "blocked_",
} as const satisfies Record<keyof EgressNames, string>;

export function egressNames(id: string): EgressNames {
  const e = encodeInstanceId(id);
  return {
    egress: PREFIX.egress + e,
    quota: PREFIX.quota + e,
    afterBlock: PREFIX.afterBlock + e,
    dropped: PREFIX.dropped + e,
    ingressChain: PREFIX.ingressChain + e,
    blockedChain: PREFIX.blockedChain + e,
  };
}


/** Linux interface names: 1-15 bytes; this stays inside a set that needs no quoting in nft either. */
export function assertTapName(tap: string): void {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(tap) || tap === "." || tap === "..") {
    throw new EgressConfigError(`tap ${JSON.stringify(tap)}: not an interface name (1-15 of A-Z a-z 0-9 _ . -)`);
  }
}

export function assertTableName(table: string): void {
  if (!/^[A-Za-z][A-Za-z0-9_]{0,63}$/.test(table)) throw new EgressConfigError(`table ${JSON.stringify(table)}: expected a letter then up to 63 of A-Z a-z 0-9 _`);
}

// ---------------------------------------------------------------------------------------------------
// Reading the kernel's state back

/** Everything cvmd's table holds for one instance, as the kernel reports it. */
export interface KernelInstanceState {
  id: string;
  egress?: NftCounter;
  afterBlock?: NftCounter;
  dropped?: NftCounter;
  quota?: NftQuota;
  ingressChain?: NftChain;
  blockedChain?: NftChain;
  /** The tap recorded in the ingress chain's rule comment (nft 1.0.6 JSON does not print a chain's device). */
  tap?: string;
}

const TAP_COMMENT = /^tap=([A-Za-z0-9_.-]{1,15})$/;

/** Groups the table's objects and chains by instance; names that are not ours are ignored. */
export function readEgressState(listing: NftTableListing): Map<string, KernelInstanceState> {
  const byId = new Map<string, KernelInstanceState>();
  // Each id appears in six names; decoding (with its round-trip check) dominates a 1,000-instance sample.
  const decoded = new Map<string, string | undefined>();
  const splitName = (name: string, prefix: string): string | undefined => {
    if (!name.startsWith(prefix)) return undefined;
    const enc = name.slice(prefix.length);
    let id = decoded.get(enc);
    if (id === undefined && !decoded.has(enc)) decoded.set(enc, (id = decodeInstanceId(enc)));
    return id;
  };
  const slot = (id: string): KernelInstanceState => {
    let s = byId.get(id);
    if (!s) byId.set(id, (s = { id }));
    return s;
  };
  for (const c of listing.counters.values()) {
    for (const kind of ["egress", "afterBlock", "dropped"] as const) {
      const id = splitName(c.name, PREFIX[kind]);
      if (id !== undefined) slot(id)[kind] = c;
    }
  }
  for (const q of listing.quotas.values()) {
    const id = splitName(q.name, PREFIX.quota);
    if (id !== undefined) slot(id).quota = q;
  }
  for (const ch of listing.chains.values()) {
    const ingressId = splitName(ch.name, PREFIX.ingressChain);
    if (ingressId !== undefined) {
      const s = slot(ingressId);
      s.ingressChain = ch;
      for (const r of ch.rules) {
        const m = r.comment === undefined ? null : TAP_COMMENT.exec(r.comment);
        if (m) s.tap = m[1];
      }
    }
    const blockedId = splitName(ch.name, PREFIX.blockedChain);
    if (blockedId !== undefined) slot(blockedId).blockedChain = ch;
  }
  return byId;
}

// ---------------------------------------------------------------------------------------------------
// Counters, samples, plans

export interface EgressInstance {
  id: string;
  tap: string;
  limitBytes: bigint | number;
  /** Last persisted counters; installed as max(kernel, persisted) field by field, so a restart never hands out a fresh cap. */
  restored?: Partial<EgressCounters>;
}

/** An instance is reported when its quota exists: the quota is what enforces the cap. */
export function sampleFromState(s: KernelInstanceState): EgressSample | undefined {
  if (!s.quota) return undefined;
  return {
    id: s.id,
    bytes: s.egress?.bytes ?? 0,
    packets: s.egress?.packets ?? 0,
    quotaUsedBytes: s.quota.usedBytes,
    afterBlockBytes: s.afterBlock?.bytes ?? 0,
    afterBlockPackets: s.afterBlock?.packets ?? 0,
    droppedBytes: s.dropped?.bytes ?? 0,
    droppedPackets: s.dropped?.packets ?? 0,
    limitBytes: s.quota.limitBytes,
    // The kernel drops a frame once usage including that frame reaches the limit, and reports usage
    // capped at the limit: equality means every further frame is over.
    blocked: s.quota.usedBytes >= s.quota.limitBytes,
  };
}

interface CounterValue {
  packets: number;
  bytes: number;
}

/** What to do for one instance that should exist after the batch. */
export interface UpsertPlan {
  id: string;
  names: EgressNames;
  tap: string;
  limitBytes: number;
  /** Which of the instance's objects/chains exist in the kernel right now. */
  existing: Record<keyof EgressNames, boolean>;
  /** Objects to declare with this state (existing ones are deleted first, in the same batch). */
  declare: { egress?: CounterValue; afterBlock?: CounterValue; dropped?: CounterValue; quotaUsedBytes?: number };
  /** The quota is kept (its usage preserved in the kernel) but its limit changes in place. */
  updateQuotaLimit: boolean;
  /** The base chain exists but is bound to another device or has another shape. */
  recreateIngressChain: boolean;
}

export interface RemovePlan {
  id: string;
  names: EgressNames;
  existing: Record<keyof EgressNames, boolean>;
}

export interface EgressPlan {
  remove: RemovePlan[];
  upsert: UpsertPlan[];
}

function nonNegative(v: number | undefined, what: string): number {
  if (v === undefined) return 0;
  if (!Number.isSafeInteger(v) || v < 0) throw new EgressConfigError(`${what}: ${v} is not a non-negative integer`);
  return v;
}

export function normalizeLimit(limit: bigint | number, id: string): number {
  const n = typeof limit === "bigint" ? (limit <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(limit) : NaN) : limit;
  if (!Number.isSafeInteger(n) || n <= 0) throw new EgressConfigError(`instance ${id}: limitBytes ${String(limit)} is not a positive integer below 2^53`);
  return n;
}

function existingOf(s: KernelInstanceState | undefined): Record<keyof EgressNames, boolean> {
  return {
    egress: !!s?.egress,
    quota: !!s?.quota,
    afterBlock: !!s?.afterBlock,
    dropped: !!s?.dropped,
    ingressChain: !!s?.ingressChain,
    blockedChain: !!s?.blockedChain,
  };
}

function mergeCounter(kernel: NftCounter | undefined, bytes: number, packets: number): { value: CounterValue; redeclare: boolean } {
  if (!kernel) return { value: { bytes, packets }, redeclare: true };
  const value = { bytes: Math.max(kernel.bytes, bytes), packets: Math.max(kernel.packets, packets) };
  return { value, redeclare: value.bytes > kernel.bytes || value.packets > kernel.packets };
}

export interface ChainShape {
  priority: number;
}

/** Plans one instance: keep what the kernel has, raise what persisted state says is higher, create what is missing. */
export function planUpsert(inst: EgressInstance, kernel: KernelInstanceState | undefined, shape: ChainShape): UpsertPlan {
  assertTapName(inst.tap);
  const names = egressNames(inst.id);
  const limitBytes = normalizeLimit(inst.limitBytes, inst.id);
  const r = inst.restored ?? {};
  const what = (f: string) => `instance ${inst.id}: restored.${f}`;

  const egress = mergeCounter(kernel?.egress, nonNegative(r.bytes, what("bytes")), nonNegative(r.packets, what("packets")));
  const afterBlock = mergeCounter(kernel?.afterBlock, nonNegative(r.afterBlockBytes, what("afterBlockBytes")), nonNegative(r.afterBlockPackets, what("afterBlockPackets")));
  const dropped = mergeCounter(kernel?.dropped, nonNegative(r.droppedBytes, what("droppedBytes")), nonNegative(r.droppedPackets, what("droppedPackets")));
  // Every byte that reached the quota was charged to it and then landed in exactly one of the three
  // counters, so used >= their sum: restoring only `bytes` still restores the cap.
  // The kernel refuses a usage above the limit (and reports usage capped at it), hence the min.
  const used = Math.min(
    limitBytes,
    Math.max(
      kernel?.quota?.usedBytes ?? 0,
      nonNegative(r.quotaUsedBytes, what("quotaUsedBytes")),
      egress.value.bytes + afterBlock.value.bytes + dropped.value.bytes,
    ),
  );
  const q = kernel?.quota;
  const redeclareQuota = !q || !q.over || used > q.usedBytes;

  const declare: UpsertPlan["declare"] = {};
  if (egress.redeclare) declare.egress = egress.value;
  if (afterBlock.redeclare) declare.afterBlock = afterBlock.value;
  if (dropped.redeclare) declare.dropped = dropped.value;
  if (redeclareQuota) declare.quotaUsedBytes = used;

  const ic = kernel?.ingressChain;
  const recreateIngressChain =
    !!ic && (kernel?.tap !== inst.tap || !ic.hook || ic.hook.hook !== "ingress" || ic.hook.type !== "filter" || ic.hook.prio !== shape.priority || ic.hook.policy !== "accept");

  return {
    id: inst.id,
    names,
    tap: inst.tap,
    limitBytes,
    existing: existingOf(kernel),
    declare,
    updateQuotaLimit: !redeclareQuota && q !== undefined && q.limitBytes !== limitBytes,
    recreateIngressChain,
  };
}

export function planRemove(kernel: KernelInstanceState): RemovePlan {
  return { id: kernel.id, names: egressNames(kernel.id), existing: existingOf(kernel) };
}

// ---------------------------------------------------------------------------------------------------
// Rendering

/** What still flows once an instance is blocked, and only to whom. null blocks everything. */
export interface AfterBlockPolicy {
  /** TCP source port of the guest's sshd: replies on tenant SSH sessions keep flowing. */
  sshPort: number;
  /**
   * Where SSH replies may go: the address forwarded SSH arrives from (the host end of the namespace's
   * veth, which masquerades it). IPv4 or IPv6 addresses or CIDRs. Empty: no SSH after the block.
   */
  sshPeers: readonly string[];
  /**
   * The guest's on-link gateway (the bridge address): the only DHCP server and the only ARP target
   * after the block. IPv4 addresses or CIDRs. Empty: no DHCP and no ARP after the block.
   */
  gateways: readonly string[];
  /**
   * One byte-rate bucket per instance and address family: IPv4 carries SSH replies and DHCP requests,
   * IPv6 SSH replies and neighbour solicitations/advertisements to link-local or link-scope multicast
   * destinations.
   */
  bytesPerSecond: number;
  /** Must exceed the guest's largest segmentation-offloaded frame (up to 64 KiB) or such frames never pass. */
  burstBytes: number;
  /** ARP requests/replies per second (separate bucket: ARP has no transport header to classify). */
  arpPacketsPerSecond: number;
}

export const DEFAULT_AFTER_BLOCK: Readonly<AfterBlockPolicy> = Object.freeze({
  sshPort: 22,
  sshPeers: Object.freeze([]) as readonly string[],
  gateways: Object.freeze([]) as readonly string[],
  bytesPerSecond: 16 * 1024,
  burstBytes: 64 * 1024,
  arpPacketsPerSecond: 10,
});

/**
 * Shared sets of (destination, L4 protocol, first 16 bits of the transport header) that may pass
 * after the block, one per family. `th sport` is the source port for TCP/UDP and type << 8 | code for
 * ICMPv6, so one lookup per family checks both what a frame is and whom it is for.
 */
export const AFTER_BLOCK_SET_V4 = "after_block_v4";
export const AFTER_BLOCK_SET_V6 = "after_block_v6";
/** ARP targets (the gateways) after the block. */
export const AFTER_BLOCK_SET_ARP = "after_block_arp";

const isV6 = (a: string) => a.includes(":");

export function afterBlockSetElements(a: AfterBlockPolicy): { v4: string[]; v6: string[]; arp: string[] } {
  const ssh = (p: string) => `${p} . tcp . ${a.sshPort}`;
  const v4 = [...a.sshPeers.filter((p) => !isV6(p)).map(ssh)];
  // A DHCP client broadcasts until it has a lease, then unicasts renewals to the server.
  for (const g of a.gateways) v4.push(`${g} . udp . 68`);
  if (a.gateways.length > 0) v4.push("255.255.255.255 . udp . 68");
  // Neighbour discovery stays on the link: unicast link-local or link-scope multicast.
  const v6 = [...a.sshPeers.filter(isV6).map(ssh)];
  for (const dst of ["fe80::/10", "ff02::/16"]) for (const type of [135, 136]) v6.push(`${dst} . ipv6-icmp . ${type << 8}`);
  return { v4, v6, arp: [...a.gateways] };
}

export interface RenderOptions {
  table: string;
  priority: number;
  afterBlock: AfterBlockPolicy | null;
}

function counterBody(v: CounterValue): string {
  return `{ packets ${v.packets} bytes ${v.bytes} }`;
}

function quotaBody(limit: number, used?: number): string {
  return used ? `{ over ${limit} bytes used ${used} bytes }` : `{ over ${limit} bytes }`;
}

/** Rules of the chain a blocked instance's frames jump to; every frame ends in exactly one counter. */
export function blockedChainRules(n: EgressNames, after: AfterBlockPolicy | null): string[] {
  const rules: string[] = [];
  if (after) {
    // Neighbour resolution and lease renewal keep the guest addressable, without which its SSH
    // replies could not be delivered for long.
    const bucket = `limit rate ${after.bytesPerSecond} bytes/second burst ${after.burstBytes} bytes counter name "${n.afterBlock}" accept`;
    if (after.gateways.length > 0) {
      rules.push(`arp daddr ip @${AFTER_BLOCK_SET_ARP} limit rate ${after.arpPacketsPerSecond}/second burst ${2 * after.arpPacketsPerSecond} packets counter name "${n.afterBlock}" accept`);
    }
    const el = afterBlockSetElements(after);
    if (el.v4.length > 0) rules.push(`ip daddr . meta l4proto . th sport @${AFTER_BLOCK_SET_V4} ${bucket}`);
    rules.push(`ip6 daddr . meta l4proto . th sport @${AFTER_BLOCK_SET_V6} ${bucket}`);
  }
  rules.push(`counter name "${n.dropped}" drop`);
  return rules;
}

/**
 * The quota is evaluated exactly once per frame (a named quota charges every evaluation): frames
 * over it jump away and never return, the rest fall through to the admitted-bytes counter.
 */
export function ingressChainRules(n: EgressNames, tap: string): string[] {
  return [`quota name "${n.quota}" jump ${n.blockedChain} comment "tap=${tap}"`, `counter name "${n.egress}"`];
}

function assertAfterBlock(a: AfterBlockPolicy): void {
  const ok = (v: number, min: number, max: number) => Number.isSafeInteger(v) && v >= min && v <= max;
  if (!ok(a.sshPort, 1, 65535)) throw new EgressConfigError(`afterBlock.sshPort ${a.sshPort}: expected 1-65535`);
  if (!ok(a.bytesPerSecond, 1, 2 ** 32 - 1)) throw new EgressConfigError(`afterBlock.bytesPerSecond ${a.bytesPerSecond}: expected 1..2^32-1`);
  if (!ok(a.burstBytes, 0, 2 ** 32 - 1)) throw new EgressConfigError(`afterBlock.burstBytes ${a.burstBytes}: expected 0..2^32-1`);
  if (!ok(a.arpPacketsPerSecond, 1, 1_000_000)) throw new EgressConfigError(`afterBlock.arpPacketsPerSecond ${a.arpPacketsPerSecond}: expected 1..1000000`);
  const addr = /^[0-9A-Fa-f:.]+(\/\d{1,3})?$/;
  for (const p of a.sshPeers) if (!addr.test(p)) throw new EgressConfigError(`afterBlock.sshPeers: ${JSON.stringify(p)} is not an address or CIDR`);
  for (const g of a.gateways) {
    if (!addr.test(g) || isV6(g)) throw new EgressConfigError(`afterBlock.gateways: ${JSON.stringify(g)} is not an IPv4 address or CIDR`);
  }
}

export function validateRenderOptions(o: RenderOptions): void {
  assertTableName(o.table);
  if (!Number.isSafeInteger(o.priority) || o.priority < -(2 ** 31) || o.priority >= 2 ** 31) throw new EgressConfigError(`priority ${o.priority}: expected a 32-bit integer`);
  if (o.afterBlock) assertAfterBlock(o.afterBlock);
}

/**
 * One nft script for the whole plan; `nft -f` applies it as a single kernel transaction, so packets
 * see either the old or the new ruleset. Order matters: rules that reference an object are flushed
 * before the object is deleted, and objects exist before rules name them.
 */
export function renderEgressScript(plan: EgressPlan, o: RenderOptions): string {
  const t = `${EGRESS_FAMILY} ${o.table}`;
  const lines: string[] = [`add table ${t}`];
  if (o.afterBlock && plan.upsert.length > 0) {
    // Flushed and refilled so that a changed port or peer leaves no stale element behind.
    const el = afterBlockSetElements(o.afterBlock);
    const sets = [
      [AFTER_BLOCK_SET_V4, "ipv4_addr . inet_proto . inet_service", el.v4],
      [AFTER_BLOCK_SET_V6, "ipv6_addr . inet_proto . inet_service", el.v6],
      [AFTER_BLOCK_SET_ARP, "ipv4_addr", el.arp],
    ] as const;
    for (const [name, type, elements] of sets) {
      lines.push(`add set ${t} ${name} { type ${type}; flags interval; }`);
      lines.push(`flush set ${t} ${name}`);
      if (elements.length > 0) lines.push(`add element ${t} ${name} { ${elements.join(", ")} }`);
    }
  }

  // 1. Detach: chains go (or are emptied) first, releasing their references to objects.
  for (const r of plan.remove) {
    if (r.existing.ingressChain) lines.push(`delete chain ${t} ${r.names.ingressChain}`);
    if (r.existing.blockedChain) lines.push(`delete chain ${t} ${r.names.blockedChain}`);
  }
  for (const u of plan.upsert) {
    if (u.existing.ingressChain) lines.push(`${u.recreateIngressChain ? "delete" : "flush"} chain ${t} ${u.names.ingressChain}`);
    if (u.existing.blockedChain) lines.push(`flush chain ${t} ${u.names.blockedChain}`);
  }

  // 2. Objects.
  for (const r of plan.remove) {
    for (const k of ["egress", "afterBlock", "dropped"] as const) if (r.existing[k]) lines.push(`delete counter ${t} ${r.names[k]}`);
    if (r.existing.quota) lines.push(`delete quota ${t} ${r.names.quota}`);
  }
  for (const u of plan.upsert) {
    for (const k of ["egress", "afterBlock", "dropped"] as const) {
      const v = u.declare[k];
      if (!v) continue;
      if (u.existing[k]) lines.push(`delete counter ${t} ${u.names[k]}`);
      lines.push(`add counter ${t} ${u.names[k]} ${counterBody(v)}`);
    }
    if (u.declare.quotaUsedBytes !== undefined) {
      if (u.existing.quota) lines.push(`delete quota ${t} ${u.names.quota}`);
      lines.push(`add quota ${t} ${u.names.quota} ${quotaBody(u.limitBytes, u.declare.quotaUsedBytes)}`);
    } else if (u.updateQuotaLimit) {
      // Re-adding an existing quota updates its limit in place and keeps the kernel's usage.
      lines.push(`add quota ${t} ${u.names.quota} ${quotaBody(u.limitBytes)}`);
    }
  }

  // 3. Chains and their rules.
  for (const u of plan.upsert) {
    if (!u.existing.blockedChain) lines.push(`add chain ${t} ${u.names.blockedChain}`);
    if (!u.existing.ingressChain || u.recreateIngressChain) {
      lines.push(`add chain ${t} ${u.names.ingressChain} { type filter hook ingress device "${u.tap}" priority ${o.priority}; policy accept; }`);
    }
    for (const rule of blockedChainRules(u.names, o.afterBlock)) lines.push(`add rule ${t} ${u.names.blockedChain} ${rule}`);
    for (const rule of ingressChainRules(u.names, u.tap)) lines.push(`add rule ${t} ${u.names.ingressChain} ${rule}`);
  }
  return lines.join("\n") + "\n";
}

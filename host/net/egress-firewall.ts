/**
 * Host-side egress cap: one nftables table (family netdev) owned by cvmd, in the network namespace
 * that holds the guests' tap devices.
 *
 * ## Kernel objects, per instance (names derive from the instance id, see encodeInstanceId)
 * - base chain `ingress_<id>`: `type filter hook ingress device "<tap>"`. A guest's egress is its tap's
 *   ingress on the host, so the hook sees every frame the guest emits before any routing, bridging,
 *   NAT or conntrack decision.
 * - quota `quota_<id>` (`over <limit> bytes`): the cap. The base chain evaluates it exactly once per
 *   frame and jumps to `blocked_<id>` when it is exhausted; otherwise the frame is counted in
 *   counter `egress_<id>` and accepted.
 * - chain `blocked_<id>`: after the block only these still pass, counted in `afterblock_<id>`, and
 *   each only to its one legitimate peer (the table's shared sets `after_block_v4`, `after_block_v6`
 *   and `after_block_arp`, filled from AfterBlockPolicy): replies from the guest's sshd port to the
 *   SSH peer (the host end of the namespace's veth), DHCPv4 client requests to the gateway (the
 *   bridge) or broadcast, IPv6 neighbour solicitations/advertisements to link-local or link-scope
 *   multicast destinations (one byte bucket per family, default 16 KiB/s, burst 64 KiB), and ARP
 *   aimed at the gateway (default 10 packets/s). Neighbour resolution and DHCP keep the guest
 *   reachable for those SSH replies. Everything else is counted in `dropped_<id>` and dropped.
 *   The SSH allowance is by source port and peer only (there is no conntrack at netdev ingress), so
 *   a guest's root can still send anything from port 22 to the SSH peer at that rate; the namespace's
 *   filter passes only forwarded SSH towards it. Set afterBlock: null for a hard block.
 *
 * ## What counts (measured on this host's kernel, see egress-firewall.sys.test.ts)
 * - Bytes are the frame length as the netdev ingress hook sees it: the L3 packet (IP header +
 *   payload; for ARP the 28-byte ARP body). The 14-byte Ethernet header is not counted (nor an FCS,
 *   which a tap never carries). A 1000-byte UDP payload counts 1028 bytes over IPv4 and 1048 over
 *   IPv6. Not measured here: 802.1Q-tagged frames; the kernel moves the tag out of the frame before
 *   this hook, so the 4 tag bytes are expected not to count either.
 * - Everything the guest sends through its tap counts, whatever its destination: IPv4 and IPv6,
 *   ARP, neighbour discovery, DHCP, DNS to the host's resolver, traffic to other guests or to the
 *   host itself, and traffic that is later forwarded/NATed or dropped by other host rules.
 * - Traffic that never crosses the tap is not counted: the agent channel (vsock / virtio-serial)
 *   and the inference gateway carried over it, and the guest's loopback.
 * - Segmentation offload: when the guest hands the host a TSO/GSO super-frame, the hook sees one
 *   frame whose length counts the IP/TCP headers once, while the wire later carries one header per
 *   segment. Counted bytes are "bytes the guest handed over": measured over veth, 20 MiB of bulk
 *   TCP payload counted as payload +0.1..0.2% (repeated runs), where one header per 1448-byte
 *   segment on a wire would be +3.6%. Disable the guest's TSO (virtio-net host_tso4/host_tso6=off) if wire-exact
 *   accounting matters. For the same reason the cap is exact to within one frame, and one frame can
 *   be up to 64 KiB with offload on.
 * - `bytes` = admitted under the cap (never exceeds the limit); `afterBlockBytes` = what still
 *   flowed after the block; `droppedBytes` = what was refused. The kernel charges every frame to the
 *   quota, so its usage = bytes + afterBlockBytes + droppedBytes (plus any restored surplus); the
 *   kernel reports that usage capped at the limit, so `quotaUsedBytes` = min(limit, that sum). A
 *   frame is dropped when usage including it reaches the limit, so `bytes` < limit, and an instance
 *   is blocked once quotaUsedBytes == limitBytes.
 *
 * ## Persistence and restarts
 * The kernel table outlives cvmd; a host reboot empties it. `sync()` and `add()` first read the table
 * (`nft -j list table`), then apply one `nft -f` transaction that touches only what must change:
 * objects of instances already in the kernel are left alone (their counters keep counting during the
 * update), persisted state is installed as max(kernel, persisted) per field, and an object is only
 * redeclared (delete + add with state, in the same transaction) when persisted state is higher than
 * the kernel's, i.e. after a reboot or a foreign flush. Frames counted between that read and the
 * commit are lost only in that redeclare case. Chains' rules are always rewritten in the same
 * transaction, which keeps the rule shape current without resetting any counter.
 *
 * Rewriting an instance's rules also refills its after-block rate buckets (one burst more).
 *
 * Choice: incremental (object-level) transactions instead of rewriting the whole table from a read,
 * because a whole-table rewrite would lose every instance's increments between read and commit on
 * every add/remove.
 *
 * ## Devices
 * Create the tap before add()/sync(). Observed on kernel 6.18: a netdev chain for a device that does
 * not exist (yet) is accepted and attaches when a device of that name appears, also after the tap is
 * deleted and recreated. Older kernels reject such a chain, which fails the whole transaction.
 *
 * ## Cost (bench/egress-sample.bench.ts, 1,000 instances)
 * sample() lists only counters and quotas in one nft invocation; nft 1.0.6 still fetches every rule
 * of the family into its cache first, which is why the rules are kept to five per instance.
 */
import type { NftRunner } from "./nft-runner.js";
import { isNftNotFound } from "./nft-runner.js";
import { parseNftTableListing, type NftTableListing } from "./nft-json.js";
import {
  DEFAULT_AFTER_BLOCK,
  EGRESS_FAMILY,
  EgressConfigError,
  encodeInstanceId,
  planRemove,
  planUpsert,
  readEgressState,
  renderEgressScript,
  sampleFromState,
  validateRenderOptions,
  type AfterBlockPolicy,
  type EgressInstance,
  type EgressPlan,
  type KernelInstanceState,
  type RenderOptions,
} from "./egress-ruleset.js";

export type { AfterBlockPolicy, EgressInstance } from "./egress-ruleset.js";
import type { EgressSample } from "../store/egress.js";
export type { EgressCounters, EgressSample } from "../store/egress.js";
export { EgressConfigError, DEFAULT_AFTER_BLOCK } from "./egress-ruleset.js";

export interface EgressSyncResult {
  /** Instances whose objects did not exist and were declared. */
  created: string[];
  /** Instances in the kernel table that were not asked for, with their last counters. */
  removed: EgressSample[];
  /** Instances already in the kernel for which persisted state was higher (or an object was missing) and was installed. */
  raised: string[];
}

/** Per-instance egress cap enforced by the host. */
export interface EgressFirewall {
  /** Makes the table hold exactly these instances, atomically, keeping live kernel counters. */
  sync(instances: EgressInstance[]): Promise<EgressSyncResult>;
  /** Installs (or refreshes) one instance without touching the others. */
  add(inst: EgressInstance): Promise<void>;
  /** Removes one instance; resolves with its counters as read just before the deletion, or undefined if it was not installed. */
  remove(id: string): Promise<EgressSample | undefined>;
  /** Counters of every instance in the table, keyed by instance id, from one kernel read. */
  sample(): Promise<Map<string, EgressSample>>;
  /** Deletes the whole table: enforcement ends. For decommissioning and tests, never on shutdown. */
  destroy(): Promise<void>;
}

export interface NftEgressFirewallOptions {
  nft: NftRunner;
  /** Name of cvmd's netdev table. */
  table: string;
  /** Hook priority of the per-tap base chains; the default runs before other netdev ingress filters. */
  priority?: number;
  /** What still flows after the block; null blocks everything. Defaults to DEFAULT_AFTER_BLOCK. */
  afterBlock?: Partial<AfterBlockPolicy> | null;
}

export class NftEgressFirewall implements EgressFirewall {
  private readonly nft: NftRunner;
  private readonly render: Readonly<RenderOptions>;
  /** Read-modify-write sequences must not interleave: every operation runs after the previous one. */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(opts: NftEgressFirewallOptions) {
    this.nft = opts.nft;
    const afterBlock = opts.afterBlock === null ? null : Object.freeze({ ...DEFAULT_AFTER_BLOCK, ...opts.afterBlock });
    const render: RenderOptions = { table: opts.table, priority: opts.priority ?? -500, afterBlock };
    validateRenderOptions(render);
    this.render = Object.freeze(render);
  }

  get table(): string {
    return this.render.table;
  }

  sync(instances: EgressInstance[]): Promise<EgressSyncResult> {
    return this.exclusive(async () => {
      const seen = new Set<string>();
      for (const inst of instances) {
        encodeInstanceId(inst.id);
        if (seen.has(inst.id)) throw new EgressConfigError(`instance ${inst.id} listed twice`);
        seen.add(inst.id);
      }
      const kernel = await this.readState();
      const plan: EgressPlan = { remove: [], upsert: [] };
      const result: EgressSyncResult = { created: [], removed: [], raised: [] };
      for (const inst of instances) {
        const k = kernel.get(inst.id);
        const u = planUpsert(inst, k, this.render);
        plan.upsert.push(u);
        if (!k?.quota) result.created.push(inst.id);
        else if (Object.keys(u.declare).length > 0) result.raised.push(inst.id);
      }
      for (const k of kernel.values()) {
        if (seen.has(k.id)) continue;
        plan.remove.push(planRemove(k));
        const s = sampleFromState(k);
        if (s) result.removed.push(s);
      }
      await this.apply(plan);
      return result;
    });
  }

  add(inst: EgressInstance): Promise<void> {
    return this.exclusive(async () => {
      encodeInstanceId(inst.id);
      const kernel = await this.readState();
      await this.apply({ remove: [], upsert: [planUpsert(inst, kernel.get(inst.id), this.render)] });
    });
  }

  remove(id: string): Promise<EgressSample | undefined> {
    return this.exclusive(async () => {
      encodeInstanceId(id);
      const k = (await this.readState()).get(id);
      if (!k) return undefined;
      await this.apply({ remove: [planRemove(k)], upsert: [] });
      return sampleFromState(k);
    });
  }

  sample(): Promise<Map<string, EgressSample>> {
    return this.exclusive(async () => {
      const out = new Map<string, EgressSample>();
      // One nft process, one kernel snapshot, objects only: printing every instance's rules as JSON
      // would more than double the time at 1,000 instances (see bench/egress-sample.bench.ts).
      // Two list commands in one argv (";"-separated), not `-j -f -`: with -j, nft 1.0.6 parses -f
      // input as JSON by reopening /dev/stdin, which fails on the socket Node gives a child as stdin.
      const t = ["table", EGRESS_FAMILY, this.render.table];
      let text: string;
      try {
        text = await this.nft.run(["-j", "list", "counters", ...t, ";", "list", "quotas", ...t]);
      } catch (err) {
        if (isNftNotFound(err)) return out;
        throw err;
      }
      for (const k of readEgressState(parseNftTableListing(text, EGRESS_FAMILY, this.render.table)).values()) {
        const s = sampleFromState(k);
        if (s) out.set(s.id, s);
      }
      return out;
    });
  }

  destroy(): Promise<void> {
    return this.exclusive(async () => {
      try {
        await this.nft.run(["delete", "table", EGRESS_FAMILY, this.render.table]);
      } catch (err) {
        if (!isNftNotFound(err)) throw err;
      }
    });
  }

  /** The table as the kernel has it now; a missing table reads as empty. */
  private async readListing(): Promise<NftTableListing | undefined> {
    let text: string;
    try {
      text = await this.nft.run(["-j", "list", "table", EGRESS_FAMILY, this.render.table]);
    } catch (err) {
      if (isNftNotFound(err)) return undefined;
      throw err;
    }
    return parseNftTableListing(text, EGRESS_FAMILY, this.render.table);
  }

  private async readState(): Promise<Map<string, KernelInstanceState>> {
    const listing = await this.readListing();
    return listing ? readEgressState(listing) : new Map();
  }

  private async apply(plan: EgressPlan): Promise<void> {
    await this.nft.run(["-f", "-"], renderEgressScript(plan, this.render));
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

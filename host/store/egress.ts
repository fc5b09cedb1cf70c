import type { Database } from "./db.js";

/** Persistable counter state of one instance; feed a stored sample back as `restored`. */
export interface EgressCounters {
  /** IP bytes the guest sent that were admitted under the cap (see the module doc of host/net/egress-firewall.ts). */
  bytes: number;
  packets: number;
  /**
   * What the kernel charged to the quota: admitted + after-block + dropped bytes, reported capped at
   * the limit (the kernel keeps charging past it but dumps min(used, limit)). Blocked once >= limit.
   */
  quotaUsedBytes: number;
  /** Bytes still accepted after the block, at the limited rates: SSH replies, ARP, neighbour discovery, DHCP. */
  afterBlockBytes: number;
  afterBlockPackets: number;
  /** Bytes the guest tried to send after the block and the host dropped. */
  droppedBytes: number;
  droppedPackets: number;
}

export interface EgressSample extends EgressCounters {
  id: string;
  limitBytes: number;
  blocked: boolean;
}

export interface EgressState extends EgressCounters {
  instanceId: string;
  limitBytes: number;
  blocked: boolean;
  blockAppliedAt: Date | null;
  observedAt: Date | null;
  guestBytes: number | null;
  guestPackets: number | null;
  guestSampledAt: Date | null;
}

interface Row {
  instance_id: string;
  limit_bytes: number;
  bytes: number;
  packets: number;
  quota_used_bytes: number;
  after_block_bytes: number;
  after_block_packets: number;
  dropped_bytes: number;
  dropped_packets: number;
  blocked: number;
  block_applied_at: number | null;
  observed_at: number | null;
  guest_bytes: number | null;
  guest_packets: number | null;
  guest_sampled_at: number | null;
}

const d = (ms: number | null) => (ms === null ? null : new Date(ms));
const toState = (r: Row): EgressState => ({
  instanceId: r.instance_id,
  limitBytes: r.limit_bytes,
  bytes: r.bytes,
  packets: r.packets,
  quotaUsedBytes: r.quota_used_bytes,
  afterBlockBytes: r.after_block_bytes,
  afterBlockPackets: r.after_block_packets,
  droppedBytes: r.dropped_bytes,
  droppedPackets: r.dropped_packets,
  blocked: r.blocked === 1,
  blockAppliedAt: d(r.block_applied_at),
  observedAt: d(r.observed_at),
  guestBytes: r.guest_bytes,
  guestPackets: r.guest_packets,
  guestSampledAt: d(r.guest_sampled_at),
});

/** Persisted egress: what lets a restart or a host reboot reinstate an instance's used bytes. */
export class EgressStore {
  private readonly signal = () => this.db.changes.instancesChanged();

  constructor(private readonly db: Database) {}

  async get(instanceId: string): Promise<EgressState | undefined> {
    const r = await this.db.get<Row>(`SELECT * FROM egress_state WHERE instance_id = ?`, [instanceId]);
    return r && toState(r);
  }

  /**
   * Inside the caller's transaction. Counters only move up (a stale sample never lowers them), and
   * the first sample that shows the quota exhausted fixes `block_applied_at`. Returns whether this
   * sample is the one that applied the block.
   */
  async recordHostSample(s: EgressSample, at: Date): Promise<{ newlyBlocked: boolean }> {
    const prior = await this.get(s.id);
    const newlyBlocked = s.blocked && !prior?.blocked;
    const max = (a: number, b: number | undefined) => Math.max(a, b ?? 0);
    await this.db.run(
      `INSERT INTO egress_state (instance_id, limit_bytes, bytes, packets, quota_used_bytes, after_block_bytes, after_block_packets, dropped_bytes, dropped_packets, blocked, block_applied_at, observed_at)
       VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
       ON CONFLICT (instance_id) DO UPDATE SET limit_bytes = excluded.limit_bytes, bytes = excluded.bytes, packets = excluded.packets,
         quota_used_bytes = excluded.quota_used_bytes, after_block_bytes = excluded.after_block_bytes, after_block_packets = excluded.after_block_packets,
         dropped_bytes = excluded.dropped_bytes, dropped_packets = excluded.dropped_packets, blocked = excluded.blocked,
         block_applied_at = excluded.block_applied_at, observed_at = excluded.observed_at`,
      [
        s.id,
        s.limitBytes,
        max(s.bytes, prior?.bytes),
        max(s.packets, prior?.packets),
        max(s.quotaUsedBytes, prior?.quotaUsedBytes),
        max(s.afterBlockBytes, prior?.afterBlockBytes),
        max(s.afterBlockPackets, prior?.afterBlockPackets),
        max(s.droppedBytes, prior?.droppedBytes),
        max(s.droppedPackets, prior?.droppedPackets),
        s.blocked || prior?.blocked ? 1 : 0,
        prior?.blockAppliedAt?.getTime() ?? (s.blocked ? at.getTime() : null),
        at.getTime(),
      ],
    );
    // The instance record shows egress_state: cached records must go.
    this.db.afterCommit(this.signal);
    await this.db.run(`INSERT INTO egress_samples (instance_id, at, source, bytes, packets) VALUES (?,?,?,?,?)`, [s.id, at.getTime(), "host", s.bytes, s.packets]);
    return { newlyBlocked };
  }

  /**
   * Inside the caller's transaction: the guest's own counter, stored beside the host's for cross-checks.
   * The history row is dated `at` (cvmd's clock, so pruning sees it); `guestSampledAt` is the guest's
   * own claim, already clamped by the caller, kept only on the state row.
   */
  async recordGuestSample(instanceId: string, limitBytes: number, bytes: number, packets: number, at: Date, guestSampledAt: Date): Promise<void> {
    await this.db.run(
      `INSERT INTO egress_state (instance_id, limit_bytes, guest_bytes, guest_packets, guest_sampled_at) VALUES (?,?,?,?,?)
       ON CONFLICT (instance_id) DO UPDATE SET guest_bytes = excluded.guest_bytes, guest_packets = excluded.guest_packets, guest_sampled_at = excluded.guest_sampled_at`,
      [instanceId, limitBytes, bytes, packets, guestSampledAt.getTime()],
    );
    this.db.afterCommit(this.signal);
    await this.db.run(`INSERT INTO egress_samples (instance_id, at, source, bytes, packets) VALUES (?,?,?,?,?)`, [instanceId, at.getTime(), "guest", bytes, packets]);
  }

  /** The contract's usage view: totals over the tenant's instances that are not terminated. */
  async tenantSummary(tenantId: number): Promise<{ bytes: number; observedAt: Date | null; blocked: boolean; blockAppliedAt: Date | null }> {
    const r = await this.db.get<{ bytes: number | null; observed_at: number | null; blocked: number | null; block_applied_at: number | null }>(
      `SELECT SUM(e.bytes + e.after_block_bytes) AS bytes, MAX(e.observed_at) AS observed_at, MAX(e.blocked) AS blocked,
              MAX(CASE WHEN e.blocked = 1 THEN e.block_applied_at END) AS block_applied_at
         FROM egress_state e JOIN instances i ON i.id = e.instance_id
        WHERE i.tenant_id = ? AND i.status != 'terminated'`,
      [tenantId],
    );
    return { bytes: r?.bytes ?? 0, observedAt: d(r?.observed_at ?? null), blocked: (r?.blocked ?? 0) === 1, blockAppliedAt: d(r?.block_applied_at ?? null) };
  }

  /** Host-wide figures for metrics, same definition as the tenant view: instances that are not terminated. */
  async hostTotals(): Promise<{ bytes: number; blockedInstances: number }> {
    const r = await this.db.get<{ bytes: number | null; blocked: number | null }>(
      `SELECT SUM(e.bytes + e.after_block_bytes) AS bytes, SUM(e.blocked) AS blocked
         FROM egress_state e JOIN instances i ON i.id = e.instance_id
        WHERE i.status != 'terminated'`,
    );
    return { bytes: r?.bytes ?? 0, blockedInstances: r?.blocked ?? 0 };
  }

  /**
   * Deletes history older than `before`, and any row dated after `notAfter`: cvmd now dates every row
   * with its own clock, but versions before it stored the guest's own `sampled_at`, and a guest could
   * say 9999-12-31, a row no age-based pruning would ever reach.
   */
  async pruneSamples(before: Date, notAfter: Date): Promise<number> {
    const { changes } = await this.db.run(`DELETE FROM egress_samples WHERE at < ? OR at > ?`, [before.getTime(), notAfter.getTime()]);
    return changes;
  }
}

import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { EgressFirewall, EgressSample } from "./egress-firewall.js";
import type { Database } from "../store/db.js";
import type { EgressStore } from "../store/egress.js";
import type { InstanceStore } from "../store/instances.js";

export interface EgressMonitorDeps {
  db: Database;
  firewall: EgressFirewall;
  egress: EgressStore;
  instances: InstanceStore;
  clock: Clock;
  logger: Logger;
  securityLog: Logger;
  /**
   * Rules that belong to no instance but must survive reconcile: the warm pool's unclaimed guests
   * (their counters are never billed and are dropped at the claim).
   */
  unbilled?: () => Promise<Array<{ id: string; tap: string; limitBytes: number }>>;
  /** Guest counts below host × (1 − tolerance) − slack are reported (the guest under-reports). */
  disagreement?: { tolerance: number; slackBytes: number };
}

type Instance = NonNullable<Awaited<ReturnType<InstanceStore["byId"]>>>;

/** A guest's own latest counter, as received; persisted on the next poll tick. */
interface GuestSample {
  bytes: number;
  packets: number;
  /** The guest's own clock: attacker input, kept only as an attribute and clamped to the tick. */
  sampledAt: Date;
}

/** How far before cvmd's clock a guest's own `sampled_at` may say it was taken (older is clamped). */
const GUEST_CLOCK_SKEW_MS = 24 * 3600_000;

/**
 * Samples every instance's host counters in one kernel read, persists them (so restarts and reboots
 * restore used bytes), and records the moment a quota is exhausted. Also the sink of the guests' own
 * samples, which are cross-checked against the host's.
 *
 * A guest sends samples whenever it likes (it is root in the VM), so they cost no database work when
 * they arrive: each only replaces that instance's latest value in memory, and the poll tick writes
 * every instance's host and guest sample in one transaction, stamped with cvmd's clock. One row per
 * instance and source per tick, however many samples the guest sent, and never a date the guest chose.
 */
export class EgressMonitor {
  private running: Promise<number> | null = null;
  private readonly guestLatest = new Map<string, GuestSample>();

  constructor(private readonly d: EgressMonitorDeps) {}

  /** One pass; concurrent callers share the pass in flight. Returns how many instances were sampled. */
  pollOnce(): Promise<number> {
    this.running ??= this.poll().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async poll(): Promise<number> {
    const samples = await this.d.firewall.sample();
    const guests = new Map(this.guestLatest);
    this.guestLatest.clear();
    const at = this.d.clock.now();
    const hosts: Array<{ s: EgressSample; inst: Instance }> = [];
    for (const s of samples.values()) {
      const inst = await this.d.instances.byId(s.id);
      if (inst) hosts.push({ s, inst }); // an entry cvmd did not create is left for reconcile to remove
    }
    const guestRows: Array<{ g: GuestSample; inst: Instance }> = [];
    for (const [id, g] of guests) {
      const inst = await this.d.instances.byId(id);
      if (inst) guestRows.push({ g, inst });
    }
    const blocked = await this.d.db.tx(async () => {
      const newly: Array<{ inst: Instance; limitBytes: number }> = [];
      for (const { s, inst } of hosts) {
        const r = await this.d.egress.recordHostSample(s, at);
        if (r.newlyBlocked) {
          await this.d.instances.appendEvent(inst.id, "egress_blocked", null, null, `egress cap of ${s.limitBytes} bytes reached; further egress blocked`, at);
          newly.push({ inst, limitBytes: s.limitBytes });
        }
      }
      for (const { g, inst } of guestRows) {
        const guestAt = new Date(Math.min(at.getTime(), Math.max(at.getTime() - GUEST_CLOCK_SKEW_MS, g.sampledAt.getTime() || 0)));
        await this.d.egress.recordGuestSample(inst.id, inst.egressLimitBytes, g.bytes, g.packets, at, guestAt);
      }
      return newly;
    });
    for (const { inst, limitBytes } of blocked) this.d.logger.warn({ instance: inst.name, limit_bytes: limitBytes }, "egress cap reached; instance blocked");
    for (const { g, inst } of guestRows) await this.crossCheck(inst, g.bytes);
    return hosts.length;
  }

  /**
   * At start-up, before guests are adopted: makes the kernel table hold exactly the live instances,
   * each with max(kernel, persisted) counters, so neither a cvmd restart nor a host reboot hands an
   * instance a fresh cap. Instances without a recorded tap have no rules to restore yet.
   */
  async reconcile(): Promise<void> {
    const live = await this.d.instances.list({ statuses: ["provisioning", "ready"] });
    const wanted = [];
    for (const inst of live) {
      const tap = inst.runtime?.tap;
      if (typeof tap !== "string") continue;
      const prior = await this.d.egress.get(inst.id);
      wanted.push({ id: inst.id, tap, limitBytes: inst.egressLimitBytes, restored: prior ?? undefined });
    }
    wanted.push(...((await this.d.unbilled?.()) ?? []));
    const res = await this.d.firewall.sync(wanted);
    if (res.created.length || res.removed.length || res.raised.length) {
      this.d.logger.info({ created: res.created.length, removed: res.removed.length, restored: res.raised.length }, "egress rules reconciled");
    }
    // Counters of instances that left the table are kept as their final sample.
    for (const s of res.removed) {
      if (await this.d.instances.byId(s.id)) await this.d.db.tx(() => this.d.egress.recordHostSample(s, this.d.clock.now()));
    }
  }

  /** Keeps the guest's latest own counter for the next poll tick; no I/O, whatever the guest sends. */
  recordGuestSample(instanceId: string, sample: GuestSample): void {
    if (!Number.isSafeInteger(sample.bytes) || !Number.isSafeInteger(sample.packets) || sample.bytes < 0 || sample.packets < 0) return;
    this.guestLatest.set(instanceId, sample);
  }

  private async crossCheck(inst: { id: string; name: string }, guestBytes: number): Promise<void> {
    const state = await this.d.egress.get(inst.id);
    const { tolerance, slackBytes } = this.d.disagreement ?? { tolerance: 0.1, slackBytes: 1 << 20 };
    const hostBytes = state ? state.bytes + state.afterBlockBytes : 0;
    // The host counts at the tap (L3 bytes); the guest counts at its own output hook, which sees at
    // least as much. A guest that reports clearly less is hiding traffic or has been tampered with.
    if (hostBytes > 0 && guestBytes < hostBytes * (1 - tolerance) - slackBytes) {
      this.d.securityLog.warn(
        { event: "egress_disagreement", instance: inst.name, instance_id: inst.id, host_bytes: hostBytes, guest_bytes: guestBytes },
        "guest reports less egress than the host counted",
      );
    }
  }

  async pruneHistory(olderThanMs: number): Promise<number> {
    const now = this.d.clock.now().getTime();
    return this.d.egress.pruneSamples(new Date(now - olderThanMs), new Date(now + GUEST_CLOCK_SKEW_MS));
  }
}

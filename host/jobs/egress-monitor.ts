import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { EgressFirewall } from "../net/egress-firewall.js";
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

/**
 * Samples every instance's host counters in one kernel read, persists them (so restarts and reboots
 * restore used bytes), and records the moment a quota is exhausted. Also the sink of the guests' own
 * samples, which are cross-checked against the host's.
 */
export class EgressMonitor {
  private running: Promise<number> | null = null;

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
    const at = this.d.clock.now();
    let n = 0;
    for (const s of samples.values()) {
      const inst = await this.d.instances.byId(s.id);
      if (!inst) continue; // a table entry cvmd did not create: left for reconcile to remove
      const { newlyBlocked } = await this.d.db.tx(async () => {
        const r = await this.d.egress.recordHostSample(s, at);
        if (r.newlyBlocked) {
          await this.d.instances.appendEvent(inst.id, "egress_blocked", null, null, `egress cap of ${s.limitBytes} bytes reached; further egress blocked`, at);
        }
        return r;
      });
      if (newlyBlocked) this.d.logger.warn({ instance: inst.name, limit_bytes: s.limitBytes }, "egress cap reached; instance blocked");
      n++;
    }
    return n;
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

  async recordGuestSample(instanceId: string, sample: { bytes: number; packets: number; sampledAt: Date }): Promise<void> {
    const inst = await this.d.instances.byId(instanceId);
    if (!inst) return;
    await this.d.db.tx(() => this.d.egress.recordGuestSample(instanceId, inst.egressLimitBytes, sample.bytes, sample.packets, sample.sampledAt));
    const state = await this.d.egress.get(instanceId);
    const { tolerance, slackBytes } = this.d.disagreement ?? { tolerance: 0.1, slackBytes: 1 << 20 };
    const hostBytes = state ? state.bytes + state.afterBlockBytes : 0;
    // The host counts at the tap (L3 bytes); the guest counts at its own output hook, which sees at
    // least as much. A guest that reports clearly less is hiding traffic or has been tampered with.
    if (hostBytes > 0 && sample.bytes < hostBytes * (1 - tolerance) - slackBytes) {
      this.d.securityLog.warn(
        { event: "egress_disagreement", instance: inst.name, instance_id: inst.id, host_bytes: hostBytes, guest_bytes: sample.bytes },
        "guest reports less egress than the host counted",
      );
    }
  }

  async pruneHistory(olderThanMs: number): Promise<number> {
    return this.d.egress.pruneSamples(new Date(this.d.clock.now().getTime() - olderThanMs));
  }
}

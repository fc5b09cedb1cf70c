import type { InstanceStatus } from "../../shared/api/schemas.js";
import type { Clock } from "../clock.js";
import type { LifecycleEngine } from "../instances/engine.js";
import { canTransition } from "../instances/state-machine.js";
import type { Database } from "../store/db.js";
import type { Instance, InstanceStore } from "../store/instances.js";
import type { TenantStore } from "../store/tenants.js";

export class OperatorActionError extends Error {
  override name = "OperatorActionError";
}

export interface InstanceSummary {
  tenant: string;
  name: string;
  status: InstanceStatus;
}

export interface OperatorActionDeps {
  db: Database;
  tenants: TenantStore;
  instances: InstanceStore;
  clock: Clock;
  /**
   * cvmd's engine. Without it (cvmctl while cvmd is down) an action only records the move to
   * `terminating`, guarded like every transition; the next cvmd start finishes the teardown.
   */
  engine?: LifecycleEngine;
}

const CLEANUP_PARALLELISM = 8;

/** Operator-initiated deletes, all through the lifecycle engine's delete path. */
export class OperatorActions {
  constructor(private readonly d: OperatorActionDeps) {}

  async deleteInstance(slug: string, name: string): Promise<InstanceSummary> {
    const tenant = await this.d.tenants.bySlug(slug);
    if (!tenant) throw new OperatorActionError(`no tenant ${slug}`);
    const inst = await this.d.instances.byName(tenant.id, name);
    if (!inst) throw new OperatorActionError(`tenant ${slug} has no instance ${name}`);
    return { tenant: slug, name, status: (await this.delete(inst)).status };
  }

  /** Deletes `failed` instances whose failure is at least `olderThanMs` old. */
  async cleanupFailed(olderThanMs: number): Promise<InstanceSummary[]> {
    const cutoff = this.d.clock.now().getTime() - olderThanMs;
    const slugs = new Map((await this.d.tenants.list()).map((t) => [t.id, t.slug]));
    const due = (await this.d.instances.list({ statuses: ["failed"] })).filter((i) => (i.failedAt ?? i.createdAt).getTime() <= cutoff);
    const out: InstanceSummary[] = [];
    for (let i = 0; i < due.length; i += CLEANUP_PARALLELISM) {
      const batch = await Promise.all(due.slice(i, i + CLEANUP_PARALLELISM).map((inst) => this.delete(inst)));
      for (const inst of batch) out.push({ tenant: slugs.get(inst.tenantId) ?? "?", name: inst.name, status: inst.status });
    }
    return out;
  }

  private async delete(inst: Instance): Promise<Instance> {
    if (this.d.engine) return this.d.engine.delete(inst);
    if (!canTransition(inst.status, "terminating")) return inst;
    const now = this.d.clock.now();
    // The same guarded transition and reason as the engine's delete, so the next cvmd's recover()
    // treats it exactly like an interrupted API delete.
    await this.d.db.tx(() =>
      this.d.instances.transition(inst.id, inst.status, "terminating", { terminating_at: now.getTime(), terminated_reason: "deleted_via_api" }, now, "delete requested by the operator (cvmd not running)"),
    );
    return (await this.d.instances.byId(inst.id))!;
  }
}

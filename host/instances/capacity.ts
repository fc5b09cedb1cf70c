import type { InstanceStore } from "../store/instances.js";

export interface CapacityBudget {
  /** Guest memory the host may hand out, in MiB (pool guests and instances together). */
  memoryMiB: number;
  /** Guest vCPUs the host may hand out. */
  vcpus: number;
}

export interface GuestSize {
  memoryMiB: number;
  vcpus: number;
}

export interface CapacityUsage {
  budget: CapacityBudget;
  guestSize: GuestSize;
  /** How many guests fit in the budget. */
  maxGuests: number;
  instances: number;
  poolGuests: number;
}

/**
 * The host's memory and CPU budget for guests. Every guest has the same size, so the budget is a
 * number of guests: instances that hold a VM (provisioning with resources, ready, terminating), plus
 * the warm pool's booting and warm guests, plus cold starts admitted but not yet recorded.
 * Decisions are serialised so two creates cannot both take the last slot.
 */
export class Capacity {
  readonly maxGuests: number;
  private readonly admitted = new Set<string>();
  private chain: Promise<unknown> = Promise.resolve();
  private poolGuests: () => Promise<number> = async () => 0;

  constructor(
    readonly budget: CapacityBudget,
    readonly guestSize: GuestSize,
    private readonly instances: InstanceStore,
  ) {
    this.maxGuests = Math.max(0, Math.min(Math.floor(budget.memoryMiB / guestSize.memoryMiB), Math.floor(budget.vcpus / guestSize.vcpus)));
  }

  /** The warm pool tells how many guests it holds. */
  countPoolWith(fn: () => Promise<number>): void {
    this.poolGuests = fn;
  }

  async usage(): Promise<CapacityUsage> {
    const held = await this.instancesHolding();
    return { budget: this.budget, guestSize: this.guestSize, maxGuests: this.maxGuests, instances: held, poolGuests: await this.poolGuests() };
  }

  /**
   * Reserves a slot for a cold start of instance `id` (or for a pool guest, when `id` is null and the
   * caller records the guest before releasing the lock). False when the budget is spent.
   */
  admit(id: string | null, onAdmitted?: () => Promise<void>): Promise<boolean> {
    const next = this.chain.then(async () => {
      const used = (await this.instancesHolding()) + (await this.poolGuests());
      if (used + 1 > this.maxGuests) return false;
      if (id !== null) this.admitted.add(id);
      await onAdmitted?.();
      return true;
    });
    this.chain = next.catch(() => undefined);
    return next;
  }

  /** Provisioning of `id` ended (ready, failed or aborted): from now on the store says what it holds. */
  settle(id: string): void {
    this.admitted.delete(id);
  }

  private async instancesHolding(): Promise<number> {
    const active = await this.instances.list({ statuses: ["provisioning", "ready", "terminating"] });
    const recorded = new Set(active.filter((i) => i.runtime !== null || i.status !== "provisioning").map((i) => i.id));
    let n = recorded.size;
    for (const id of this.admitted) if (!recorded.has(id)) n++;
    return n;
  }
}

import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { Database } from "../store/db.js";
import type { InstanceStore } from "../store/instances.js";
import type { PoolGuest, PoolGuestStore, SettingsStore } from "../store/pool-guests.js";
import type { BootQueue } from "./boot-queue.js";
import type { Capacity } from "./capacity.js";
import type { PoolGuestContext, WarmGuestDriver } from "../drivers/driver.js";

export interface WarmPoolOptions {
  db: Database;
  guests: PoolGuestStore;
  settings: SettingsStore;
  instances: InstanceStore;
  driver: WarmGuestDriver;
  capacity: Capacity;
  /** Pool boots take their turn here, behind instances' cold starts. */
  boots?: BootQueue;
  clock: Clock;
  logger: Logger;
  /** CVM_WARM_POOL_SIZE: the size of an image's pool until an operator sets one with `cvmctl pool resize`. */
  defaultSize: number;
  /** Reports the number of warm guests (metrics). */
  onWarmCount?(n: number): void;
}

export interface PoolImageStatus {
  image_id: string;
  current: boolean;
  size: number;
  size_source: "default" | "operator";
  warm: number;
  booting: number;
  claimed: number;
  failed: number;
}

export interface PoolStatus {
  current_image: string | null;
  images: PoolImageStatus[];
  capacity: { max_guests: number; instances: number; pool_guests: number; memory_mib: number; vcpus: number; guest_memory_mib: number; guest_vcpus: number };
  /** Why the last refill could not reach the target, if it could not. */
  refill_blocked: string | null;
}

export interface Claimed {
  guest: PoolGuest;
  /** How long it had been warm. */
  warmForMs: number;
}

/** Settings key prefix of an image's pool size (`pool_size:<image id>`). */
export const SIZE_KEY = "pool_size:";
export const MAX_POOL_SIZE = 64;
const RETRY_BASE_MS = 30_000;
const RETRY_MAX_MS = 10 * 60_000;
const CLAIM_PRIORITY_MS = 60_000;

/**
 * One row per image that has pool guests or is current: its size (operator-set in `sizes`, keyed
 * SIZE_KEY + id, else the default) and its guests by status.
 */
export function poolImageRows(
  counts: Array<{ imageId: string; status: string; n: number }>,
  sizes: Map<string, string>,
  current: string | null,
  defaultSize: number,
): PoolImageStatus[] {
  const ids = new Set(counts.map((c) => c.imageId));
  if (current) ids.add(current);
  return [...ids].sort().map((id) => {
    const n = (s: string) => counts.find((c) => c.imageId === id && c.status === s)?.n ?? 0;
    const set = sizes.get(SIZE_KEY + id);
    return {
      image_id: id,
      current: id === current,
      size: set === undefined ? defaultSize : Number(set),
      size_source: set === undefined ? "default" : "operator",
      warm: n("warm"),
      booting: n("booting"),
      claimed: n("claimed"),
      failed: n("failed"),
    };
  });
}

export class PoolSizeError extends Error {
  override name = "PoolSizeError";
}

/**
 * The warm pool: guests booted from the current image and prepared with no tenant, so a create only
 * runs claim-time setup. A guest is claimed once, by one instance, and never comes back. Guests of an
 * image that is no longer current are drained; the pool never grows past the host's capacity.
 */
export class WarmPool {
  /** Guests on their way to warm: aborting stops the wait (not the guest); `done` settles after. */
  private readonly booting = new Map<string, { ac: AbortController; done: Promise<void> }>();
  private readonly draining = new Set<string>();
  private readonly tasks = new Set<Promise<unknown>>();
  private refilling: Promise<void> | null = null;
  private again = false;
  private closed = false;
  private failures = 0;
  private retryAt = 0;
  private blocked: string | null = null;
  /** Claims in progress (instance id → start), which new boots wait for, up to CLAIM_PRIORITY_MS. */
  private readonly claiming = new Map<string, number>();
  private readonly log: Logger;

  constructor(private readonly o: WarmPoolOptions) {
    this.log = o.logger;
    o.capacity.countPoolWith(async () => (await o.guests.live()).length);
    o.driver.onExit((id, reason) => this.track(this.onGuestExit(id, reason)));
  }

  /** After a restart: re-attaches live pool guests (ending dead ones), then fills the pool. */
  async start(): Promise<void> {
    for (const g of await this.o.guests.live()) {
      const ac = new AbortController();
      const res = await this.o.driver.adopt({ id: g.id, runtime: g.runtime }, this.context(g.id, ac)).catch((err: unknown) => ({ alive: false as const, reason: String(err) }));
      if (!res.alive) {
        this.log.warn({ pool_guest: g.id, reason: res.reason }, "pool guest not running after restart");
        await this.end(g.id, "failed", `lost across a restart: ${res.reason}`, false);
        continue;
      }
      this.log.info({ pool_guest: g.id, status: g.status }, "adopted pool guest");
      this.follow(g.id, ac, res.prepared);
    }
    this.kick();
  }

  /** Takes the oldest warm guest of the current image for `instanceId`, or null (cold start). */
  async claim(instanceId: string): Promise<Claimed | null> {
    const imageId = await this.o.driver.currentImageId();
    if (imageId === null) return null;
    const now = this.o.clock.now();
    // The instance names the guest in the same transaction, so capacity never loses sight of it.
    const guest = await this.o.db.tx(async () => {
      const g = await this.o.guests.claimOldest(imageId, instanceId, now);
      if (g?.runtime) await this.o.instances.setRuntime(instanceId, { ...g.runtime, guestId: g.id });
      return g;
    });
    if (!guest) return null;
    this.log.info({ pool_guest: guest.id, instance_id: instanceId }, "pool guest claimed");
    // The refill waits for the claim to finish (claimSettled): a guest booting beside it would take
    // the CPU the claim-time setup needs (under TCG that doubled the claim).
    this.claiming.set(instanceId, Date.now());
    await this.reportWarm();
    return { guest, warmForMs: guest.warmAt ? now.getTime() - guest.warmAt.getTime() : 0 };
  }

  /** The claim-time setup of `instanceId` ended (ready, failed or aborted): refill now. */
  claimSettled(instanceId: string): void {
    if (this.claiming.delete(instanceId)) this.kick();
  }

  /** Starts a refill unless one is running (then it runs once more after it). */
  kick(): void {
    if (this.closed) return;
    if (this.refilling) {
      this.again = true;
      return;
    }
    this.refilling = this.refill()
      .catch((err: unknown) => this.log.error({ err }, "pool refill failed"))
      .finally(() => {
        this.refilling = null;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  /** Runs one refill and waits for it (the scheduled job and tests use it). */
  async refillNow(): Promise<void> {
    this.kick();
    while (this.refilling) await this.refilling;
  }

  async sizeOf(imageId: string): Promise<{ size: number; source: "default" | "operator" }> {
    const v = await this.o.settings.get(SIZE_KEY + imageId);
    return v === null ? { size: this.o.defaultSize, source: "default" } : { size: Number(v), source: "operator" };
  }

  /** Sets an image's pool size (default: the current image's) and refills or drains toward it now. */
  async resize(size: number, imageId?: string): Promise<{ image_id: string; size: number }> {
    if (!Number.isSafeInteger(size) || size < 0 || size > MAX_POOL_SIZE) throw new PoolSizeError(`pool size must be an integer from 0 to ${MAX_POOL_SIZE}`);
    const id = imageId ?? (await this.o.driver.currentImageId());
    if (!id) throw new PoolSizeError("there is no current image; name one with --image");
    await this.o.db.tx(() => this.o.settings.set(SIZE_KEY + id, String(size), this.o.clock.now()));
    this.log.info({ image_id: id, size }, "pool resized by the operator");
    this.kick();
    return { image_id: id, size };
  }

  async status(): Promise<PoolStatus> {
    const current = await this.o.driver.currentImageId().catch(() => null);
    const images = poolImageRows(await this.o.guests.counts(), await this.o.settings.all(SIZE_KEY), current, this.o.defaultSize);
    const u = await this.o.capacity.usage();
    return {
      current_image: current,
      images,
      capacity: { max_guests: u.maxGuests, instances: u.instances, pool_guests: u.poolGuests, memory_mib: u.budget.memoryMiB, vcpus: u.budget.vcpus, guest_memory_mib: u.guestSize.memoryMiB, guest_vcpus: u.guestSize.vcpus },
      refill_blocked: this.blocked,
    };
  }

  /** Stops booting guests' waits without touching the guests: the next cvmd adopts them. */
  async close(): Promise<void> {
    this.closed = true;
    for (const b of this.booting.values()) b.ac.abort(new Error("cvmd shutting down"));
    await this.refilling;
    await Promise.allSettled([...this.tasks]);
  }

  private async refill(): Promise<void> {
    const current = await this.o.driver.currentImageId();
    const live = await this.o.guests.live();
    // Drain what the current image no longer explains: other images' guests, and any excess.
    for (const g of live) {
      if (g.imageId !== current) await this.drain(g, current ? `image ${g.imageId} replaced by ${current}` : `image ${g.imageId} removed`);
    }
    if (!current) {
      this.blocked = "no current image";
      return;
    }
    const { size } = await this.sizeOf(current);
    // Booting ones go first: a warm guest has more work in it.
    const mine = live.filter((g) => g.imageId === current && !this.draining.has(g.id)).sort((a, b) => (a.status === b.status ? b.createdAt.getTime() - a.createdAt.getTime() : a.status === "booting" ? -1 : 1));
    while (mine.length > size) await this.drain(mine.shift()!, `pool resized to ${size}`);
    this.blocked = null;
    const oldestClaim = Math.min(Infinity, ...this.claiming.values());
    if (mine.length < size && this.claiming.size > 0 && Date.now() - oldestClaim < CLAIM_PRIORITY_MS) {
      this.blocked = `waiting for ${this.claiming.size} claim(s) to finish`;
      return;
    }
    let have = mine.length;
    while (have < size && !this.closed) {
      if (Date.now() < this.retryAt) {
        this.blocked = `retrying after ${this.failures} failed boot(s) at ${new Date(this.retryAt).toISOString()}`;
        return;
      }
      const id = `pool-${randomBytes(5).toString("hex")}`;
      const ok = await this.o.capacity.admit(null, () => this.o.db.tx(() => this.o.guests.insert({ id, imageId: current, createdAt: this.o.clock.now() })));
      if (!ok) {
        this.blocked = `capacity: ${this.o.capacity.maxGuests} guest(s) fit and all are in use`;
        this.log.info({ image_id: current, have, size }, "pool refill stopped at the capacity limit");
        return;
      }
      have++;
      this.bootOne(id);
    }
    await this.reportWarm();
  }

  private bootOne(id: string): void {
    const ac = new AbortController();
    const booted = (async () => {
      const slot = this.o.boots ? await this.o.boots.acquire("pool", ac.signal) : null;
      try {
        this.log.info({ pool_guest: id, queued_ms: slot?.waitedMs ?? 0 }, "booting pool guest");
        return await this.o.driver.boot({ id, runtime: null }, this.context(id, ac));
      } finally {
        slot?.release();
      }
    })();
    this.follow(id, ac, booted);
  }

  private follow(id: string, ac: AbortController, prepared: Promise<unknown>): void {
    const done = prepared
      .then(
        () => this.becameWarm(id),
        (err: unknown) => this.bootFailed(id, ac, err),
      )
      .finally(() => this.booting.delete(id));
    this.booting.set(id, { ac, done });
    this.track(done);
  }

  /** Stops waiting for a booting guest and lets its driver call unwind before it is torn down. */
  private async stopBooting(id: string, why: string): Promise<void> {
    const b = this.booting.get(id);
    if (!b) return;
    b.ac.abort(new Error(why));
    await b.done.catch(() => undefined);
  }

  private async becameWarm(id: string): Promise<void> {
    const moved = await this.o.db.tx(() => this.o.guests.markWarm(id, this.o.clock.now()));
    if (!moved) return;
    this.failures = 0;
    this.retryAt = 0;
    this.log.info({ pool_guest: id }, "pool guest warm");
    await this.reportWarm();
    // The image may have moved on while it booted.
    this.kick();
  }

  private async bootFailed(id: string, ac: AbortController, err: unknown): Promise<void> {
    if (ac.signal.aborted) return; // drained (the drain tears it down) or shutdown (the next cvmd adopts it)
    this.failures++;
    this.retryAt = Date.now() + Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** (this.failures - 1));
    this.log.warn({ pool_guest: id, err, failures: this.failures }, "pool guest failed to become warm");
    await this.end(id, "failed", err instanceof Error ? err.message : String(err), true);
  }

  private async onGuestExit(id: string, reason: string): Promise<void> {
    const g = await this.o.guests.byId(id);
    if (!g || (g.status !== "booting" && g.status !== "warm")) return;
    this.log.warn({ pool_guest: id, reason }, "pool guest exited");
    await this.stopBooting(id, reason);
    await this.end(id, "failed", reason, true);
    this.kick();
  }

  private async drain(g: PoolGuest, why: string): Promise<void> {
    if (this.draining.has(g.id)) return;
    this.draining.add(g.id);
    try {
      this.log.info({ pool_guest: g.id, image_id: g.imageId, why }, "draining pool guest");
      await this.stopBooting(g.id, why);
      await this.end(g.id, "gone", why, true);
    } finally {
      this.draining.delete(g.id);
    }
  }

  /** Marks the guest ended (unless an instance claimed it meanwhile) and tears it down. */
  private async end(id: string, status: "failed" | "gone", note: string, destroy: boolean): Promise<void> {
    const ended = await this.o.db.tx(() => this.o.guests.end(id, status, note, this.o.clock.now()));
    if (!ended) return;
    if (destroy) {
      // The runtime is re-read: a booting guest records it after the row was created.
      const g = await this.o.guests.byId(id);
      await this.o.driver.destroy({ id, runtime: g?.runtime ?? null }).catch((err: unknown) => this.log.error({ err, pool_guest: id }, "could not tear down pool guest"));
    }
    await this.reportWarm();
  }

  private context(id: string, ac: AbortController): PoolGuestContext {
    const log = this.log.child({ pool_guest: id });
    return {
      signal: ac.signal,
      event: (type, message) => log.info({ event: type }, message),
      saveRuntime: (runtime) => this.o.db.tx(() => this.o.guests.setRuntime(id, runtime)),
    };
  }

  private async reportWarm(): Promise<void> {
    if (!this.o.onWarmCount) return;
    this.o.onWarmCount((await this.o.guests.live()).filter((g) => g.status === "warm").length);
  }

  private track<T>(p: Promise<T>): void {
    this.tasks.add(p);
    p.catch(() => undefined).finally(() => this.tasks.delete(p));
  }
}

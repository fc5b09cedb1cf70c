import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import type { InstanceStatus } from "../../shared/api/schemas.js";
import type { Clock } from "../clock.js";
import type { Database } from "../store/db.js";
import { storageTrouble } from "../store/storage-trouble.js";
import type { IdempotencyStore } from "../store/idempotency.js";
import type { Instance, InstanceStore, TransitionFields } from "../store/instances.js";
import type { Tenant } from "../store/tenants.js";
import type { AdoptResult, AttestationEvidence, Driver, DriverContext, InstanceSpec, ReadyInfo } from "../drivers/driver.js";
import { FAILURE_CODES, ProvisionError, type FailureCode } from "../drivers/failure-codes.js";
import { newInstanceName } from "./names.js";
import { assertTransition } from "./state-machine.js";
import type { BootQueue } from "./boot-queue.js";
import type { Capacity } from "./capacity.js";
import type { WarmPool } from "./warm-pool.js";

export interface CreateInput {
  publicKey: string;
  agent: string;
  inferenceMode: string;
  inferenceModel: string;
}

export interface IdempotencyInput {
  key: string;
  requestHash: string;
  /** Builds the stored response from the created instance (kept in the same transaction). */
  render(inst: Instance): unknown;
}

export type CreateOutcome =
  | { kind: "created"; instance: Instance }
  | { kind: "replayed"; statusCode: number; response: unknown }
  | { kind: "idempotency_conflict" };

export interface EngineDeps {
  db: Database;
  instances: InstanceStore;
  idempotency: IdempotencyStore;
  driver: Driver;
  clock: Clock;
  logger: Logger;
  baseDomain: string;
  egressLimitBytes: number;
  tenantSlug(tenantId: number): Promise<string>;
  /** Per-instance DNS: published at ready, withdrawn at failure and before terminated. */
  dns?: { publish(hostname: string, sshHost: string): Promise<void>; withdraw(hostname: string): Promise<void> };
  /** The host's guest budget: a cold start that does not fit fails with capacity_exhausted. */
  capacity?: Capacity;
  /** Pre-booted guests to claim before cold-starting. */
  pool?: WarmPool;
  /** Cold boots beyond the host's concurrent-boot limit wait here instead of starving each other. */
  boots?: BootQueue;
}

const IDEMPOTENCY_WINDOW_MS = 24 * 3600_000;
const TERMINATED_RETENTION_MS = 30 * 24 * 3600_000;
const RETRY_BASE_MS = 1_000;
const RETRY_MAX_MS = 60_000;

/** The wait before retry `attempt` (1, 2, …): `firstMs` doubling, capped at RETRY_MAX_MS. */
function retryDelay(attempt: number, firstMs: number): number {
  return Math.min(RETRY_MAX_MS, firstMs * 2 ** Math.min(attempt - 1, 16));
}

/**
 * The lifecycle engine: the only code that changes an instance's status. Each change goes through
 * `transition()`, which checks the state machine, updates the row with the expected previous status
 * in the WHERE clause and appends the event, in one transaction.
 */
export class LifecycleEngine {
  private readonly inflight = new Map<string, AbortController>();
  private readonly tasks = new Set<Promise<unknown>>();
  private readonly teardowns = new Map<string, Promise<void>>();
  private closing = false;
  /** Aborted by close(): ends every retry wait at once. */
  private readonly stopping = new AbortController();

  constructor(private readonly d: EngineDeps) {
    d.driver.onExit?.((id, reason) => this.track(this.onGuestExit(id, reason)));
  }

  get retentionMs(): number {
    return TERMINATED_RETENTION_MS;
  }

  async create(tenant: Tenant, input: CreateInput, idem?: IdempotencyInput): Promise<CreateOutcome> {
    const now = this.d.clock.now();
    const outcome = await this.d.db.tx(async (): Promise<CreateOutcome> => {
      if (idem) {
        const prior = await this.d.idempotency.find(tenant.id, idem.key, new Date(now.getTime() - IDEMPOTENCY_WINDOW_MS));
        if (prior) {
          return prior.requestHash === idem.requestHash
            ? { kind: "replayed", statusCode: prior.statusCode, response: prior.response }
            : { kind: "idempotency_conflict" };
        }
      }
      const id = randomUUID();
      for (let attempt = 0; attempt < 20; attempt++) {
        const name = newInstanceName();
        const inserted = await this.d.instances.insert({
          id,
          tenantId: tenant.id,
          name,
          agent: input.agent,
          publicKey: input.publicKey,
          inferenceMode: input.inferenceMode,
          inferenceModel: input.inferenceModel,
          egressLimitBytes: this.d.egressLimitBytes,
          createdAt: now,
        });
        if (!inserted) continue;
        await this.d.instances.appendEvent(id, "status", null, "provisioning", "instance created", now);
        const inst = (await this.d.instances.byId(id))!;
        if (idem) await this.d.idempotency.save(tenant.id, idem.key, { requestHash: idem.requestHash, statusCode: 202, response: idem.render(inst), createdAt: now });
        return { kind: "created", instance: inst };
      }
      throw new Error("could not find a free instance name after 20 attempts");
    });
    if (outcome.kind === "created") this.track(this.provision(outcome.instance));
    return outcome;
  }

  /** Deletes (idempotently) and waits up to `waitMs` for teardown so fast drivers answer `terminated`. */
  async delete(inst: Instance, waitMs = 1500): Promise<Instance> {
    const now = this.d.clock.now();
    if (inst.status !== "terminated" && inst.status !== "terminating") {
      const moved = await this.transition(inst, "terminating", { terminating_at: now.getTime(), terminated_reason: "deleted_via_api" }, "delete requested via API");
      if (!moved) return this.delete((await this.d.instances.byId(inst.id))!, waitMs);
    }
    const current = (await this.d.instances.byId(inst.id))!;
    if (current.status === "terminating") {
      const teardown = this.teardownOnce(current);
      await Promise.race([teardown, new Promise((r) => setTimeout(r, waitMs).unref())]);
    }
    return (await this.d.instances.byId(inst.id))!;
  }

  /**
   * After a restart: re-attach live guests, fail the ones that died, finish interrupted teardowns.
   * Resolves once every guest's fate is known (dead ones already failed), so the API never serves a
   * stale `provisioning`/`ready` for a guest that is gone; waiting for a still-booting guest goes on after.
   */
  async recover(): Promise<void> {
    const open = await this.d.instances.list({ statuses: ["provisioning", "ready", "terminating"] });
    await Promise.all(
      open.map((inst) => {
        if (inst.status === "terminating") {
          this.teardownOnce(inst);
          return undefined;
        }
        return this.readopt(inst);
      }),
    );
  }

  async events(inst: Instance) {
    return this.d.instances.events(inst.id);
  }

  /**
   * Fresh attestation evidence of an instance from its driver; null when the driver's guests cannot
   * attest at all (the caller says so instead of inventing evidence). The caller checks readiness.
   */
  async attest(inst: Instance, nonce: Buffer): Promise<AttestationEvidence | null> {
    if (!this.d.driver.attest) return null;
    return this.d.driver.attest(await this.spec(inst), nonce);
  }

  get driverName(): string {
    return this.d.driver.name;
  }

  /** Stops waiting on guests without touching them: the next cvmd adopts them. */
  async close(): Promise<void> {
    this.closing = true;
    this.stopping.abort(new Error("cvmd shutting down"));
    for (const ac of this.inflight.values()) ac.abort(new Error("cvmd shutting down"));
    await Promise.allSettled([...this.tasks]);
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.tasks.add(p);
    p.finally(() => this.tasks.delete(p)).catch(() => undefined);
    return p;
  }

  private async spec(inst: Instance): Promise<InstanceSpec> {
    const slug = await this.d.tenantSlug(inst.tenantId);
    return {
      id: inst.id,
      name: inst.name,
      tenantSlug: slug,
      hostname: `${inst.name}.${slug}.${this.d.baseDomain}`,
      publicKey: inst.publicKey,
      agent: inst.agent,
      inferenceModel: inst.inferenceModel,
      egressLimitBytes: inst.egressLimitBytes,
      runtime: inst.runtime,
    };
  }

  private context(inst: Instance, ac: AbortController): DriverContext {
    const log = this.d.logger.child({ instance: inst.name, instance_id: inst.id });
    return {
      signal: ac.signal,
      event: (type, message) => {
        log.info({ event: type }, message);
        // An event is told, not relied on: lost to a full disk or a held lock it is a warning, not an error.
        this.d.db.tx(() => this.d.instances.appendEvent(inst.id, type, null, null, message, this.d.clock.now())).catch((err) => {
          const trouble = storageTrouble(err);
          if (trouble) log.warn({ code: trouble.code, event: type }, "could not record event");
          else log.error({ err }, "could not record event");
        });
      },
      // Without its runtime the instance's guest could be neither found after a restart nor torn down: worth waiting for.
      saveRuntime: (runtime) => this.durably("record the guest's runtime", inst.id, () => this.d.db.tx(() => this.d.instances.setRuntime(inst.id, runtime)), ac.signal),
    };
  }

  /**
   * Runs a store write the lifecycle cannot do without (a guest became ready, failed, was released),
   * retrying it through storage trouble (a full disk, a write lock held past the busy timeout, an I/O
   * error) until it lands. Dropping it would leave the instance `provisioning` or `terminating` with
   * nobody left to settle it. Any other error, and shutdown, end the retries.
   */
  private async durably<T>(what: string, id: string, op: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const stop = signal ? AbortSignal.any([this.stopping.signal, signal]) : this.stopping.signal;
    const started = Date.now();
    for (let attempt = 1; ; attempt++) {
      try {
        const result = await op();
        if (attempt > 1) this.d.logger.info({ instance_id: id, attempts: attempt, waited_ms: Date.now() - started }, `could ${what} after storage trouble`);
        return result;
      } catch (err) {
        const trouble = storageTrouble(err);
        if (!trouble || stop.aborted) throw err;
        // A full disk fails every write at once: one line when it starts, then one every ten attempts.
        if (attempt === 1 || attempt % 10 === 0) this.d.logger.warn({ instance_id: id, code: trouble.code, attempt }, `could not ${what} (${trouble.message}); retrying`);
        await sleep(retryDelay(attempt, RETRY_BASE_MS), undefined, { signal: stop });
      }
    }
  }

  private async provision(inst: Instance): Promise<void> {
    const ac = new AbortController();
    this.inflight.set(inst.id, ac);
    let info: ReadyInfo | undefined;
    try {
      const spec = await this.spec(inst);
      const ctx = this.context(inst, ac);
      info = await this.claimWarm(inst.id, spec, ctx);
      if (!info) {
        if (this.d.capacity && !(await this.d.capacity.admit(inst.id))) {
          const u = await this.d.capacity.usage();
          throw new ProvisionError("capacity_exhausted", FAILURE_CODES.capacity_exhausted, {
            cause: new Error(`${u.maxGuests} guest(s) fit the budget; ${u.instances} instance(s) and ${u.poolGuests} pool guest(s) hold them`),
          });
        }
        const slot = await this.bootSlot(ctx);
        try {
          // A pool guest may have become warm while this create waited for its turn: claiming it beats booting.
          if (slot.waitedMs > 0) info = await this.claimWarm(inst.id, spec, ctx);
          if (!info) {
            ctx.event("cold_start", this.d.pool ? "no warm guest available: cold start" : "no warm pool: cold start");
            info = await this.d.driver.create(spec, ctx);
          }
        } finally {
          slot.release();
        }
      }
      await this.markReady(inst.id, info);
    } catch (err) {
      await this.failProvisioning(inst, ac, err, info !== undefined);
    } finally {
      this.inflight.delete(inst.id);
      this.d.capacity?.settle(inst.id);
      this.d.pool?.claimSettled(inst.id);
    }
  }

  /** The claim-time setup of a warm guest, when the pool has one for this instance; undefined: cold start. */
  private async claimWarm(id: string, spec: InstanceSpec, ctx: DriverContext): Promise<ReadyInfo | undefined> {
    const pool = this.d.pool;
    // The claim is a write: a create must not fail `internal` because the disk was full at that moment.
    const claimed = pool && this.d.driver.warm ? await this.durably("claim a warm guest", id, () => pool.claim(id), ctx.signal) : null;
    if (!claimed) return undefined;
    const g = claimed.guest;
    ctx.event("claim", `claimed warm guest ${g.id} (image ${g.imageId}, warm for ${Math.round(claimed.warmForMs / 1000)} s): claim-time setup only`);
    return this.d.driver.warm!.claim({ ...spec, runtime: g.runtime }, { id: g.id, runtime: g.runtime }, ctx);
  }

  /** Waits for the boot queue's turn, saying so in the events when there is a wait. */
  private async bootSlot(ctx: DriverContext): Promise<{ waitedMs: number; release(): void }> {
    const q = this.d.boots;
    if (!q) return { waitedMs: 0, release: () => undefined };
    const pos = q.positionFor("instance");
    if (pos) ctx.event("queued", `waiting to boot: ${pos.running} boot(s) running, ${pos.ahead} waiting ahead (at most ${q.limit} at once, CVM_MAX_CONCURRENT_BOOTS); the boot's deadlines start when it does`);
    const slot = await q.acquire("instance", ctx.signal);
    if (pos) ctx.event("dequeued", `boot starts after ${Math.round(slot.waitedMs / 1000)} s in the queue`);
    return slot;
  }

  /** Resolves once adoption is decided; a guest still provisioning is then awaited in the background. */
  private async readopt(inst: Instance): Promise<void> {
    if (inst.status === "provisioning" && inst.runtime === null) {
      // No guest was ever started for it (it was queued or admitted when cvmd stopped): start it now.
      this.d.logger.info({ instance: inst.name, instance_id: inst.id }, "resuming a create that had not booted before the restart");
      this.track(this.provision(inst));
      return;
    }
    const ac = new AbortController();
    this.inflight.set(inst.id, ac);
    const log = this.d.logger.child({ instance: inst.name, instance_id: inst.id });
    const done = () => this.inflight.delete(inst.id);
    let res: AdoptResult;
    try {
      res = await this.d.driver.adopt(await this.spec(inst), this.context(inst, ac));
    } catch (err) {
      await this.failProvisioning(inst, ac, err, false);
      done();
      return;
    }
    if (!res.alive) {
      log.warn({ reason: res.reason }, "guest not running after restart");
      const code: FailureCode = inst.status === "ready" ? "vm_exited" : "host_restart_lost";
      await this.fail(inst.id, code, FAILURE_CODES[code]).catch((err) => log.error({ err }, "could not record the lost guest"));
      done();
      return;
    }
    log.info({ status: inst.status }, "adopted running guest");
    const ready = res.ready;
    this.track(
      (async () => {
        let info: ReadyInfo | undefined;
        try {
          info = await ready;
          if (inst.status === "provisioning") await this.markReady(inst.id, info);
        } catch (err) {
          await this.failProvisioning(inst, ac, err, info !== undefined);
        } finally {
          done();
        }
      })(),
    );
  }

  /**
   * Records why provisioning failed. The driver tears down what fails inside it; a failure after it
   * handed over a running guest (`handedOver`) leaves the teardown to us.
   */
  private async failProvisioning(inst: Instance, ac: AbortController, err: unknown, handedOver: boolean): Promise<void> {
    await this.recordProvisioningFailure(inst.id, ac, err);
    if (handedOver && !ac.signal.aborted) await this.destroyAfterFailure(inst);
  }

  private async recordProvisioningFailure(id: string, ac: AbortController, err: unknown): Promise<void> {
    const log = this.d.logger.child({ instance_id: id });
    try {
      await this.durably("record a provisioning failure", id, async () => {
        const current = await this.d.instances.byId(id);
        // A delete or shutdown aborted us: the delete path (or the next cvmd) owns the instance now.
        if (ac.signal.aborted || this.closing || !current || current.status !== "provisioning") return;
        const failure = err instanceof ProvisionError ? err : new ProvisionError("internal", FAILURE_CODES.internal, { cause: err });
        if (failure.code === "internal") {
          log.error({ instance: current.name, err: failure.cause ?? failure }, "provisioning failed unexpectedly");
          // Nobody can act on a bare "internal": the event says what broke (an error's name, code and message, no stack).
          await this.d.db.tx(() => this.d.instances.appendEvent(id, "error", null, null, `internal: ${describeCause(failure.cause)}`, this.d.clock.now()));
        } else {
          log.warn({ instance: current.name, failure_code: failure.code, err: failure.cause ?? failure }, "provisioning failed");
        }
        await this.failOnce(id, failure.code, failure.message);
      });
    } catch (e) {
      // Shutdown during storage trouble, or the store broken for good: the row stays provisioning and the next cvmd's recover() settles it.
      log.error({ err: e, cause: err }, "could not record the provisioning failure");
    }
  }

  private async destroyAfterFailure(inst: Instance): Promise<void> {
    const log = this.d.logger.child({ instance: inst.name, instance_id: inst.id });
    try {
      const current = (await this.d.instances.byId(inst.id).catch(() => null)) ?? inst;
      await this.d.driver.destroy(await this.spec(current));
    } catch (err) {
      log.error({ err }, "could not tear down the guest of a failed instance");
    }
  }

  private async markReady(id: string, info: ReadyInfo): Promise<void> {
    const moved = await this.durably("record that the guest is ready", id, async () => {
      const inst = await this.d.instances.byId(id);
      if (!inst || inst.status !== "provisioning") return null;
      const ok = await this.transition(inst, "ready", { ready_at: this.d.clock.now().getTime(), ssh_host: info.ssh.host, ssh_port: info.ssh.port, ssh_user: info.ssh.user }, "guest ready; SSH checked");
      return ok ? inst : null;
    });
    if (moved && this.d.dns) {
      const hostname = (await this.spec(moved)).hostname;
      await this.d.dns.publish(hostname, info.ssh.host).catch((err) => this.d.logger.error({ err, hostname }, "dns publish failed"));
    }
  }

  private fail(id: string, code: FailureCode, message: string): Promise<void> {
    return this.durably("record a failure", id, () => this.failOnce(id, code, message));
  }

  private async failOnce(id: string, code: FailureCode, message: string): Promise<void> {
    const inst = await this.d.instances.byId(id);
    if (!inst || (inst.status !== "provisioning" && inst.status !== "ready")) return;
    const moved = await this.transition(inst, "failed", { failure_code: code, failure_message: message, failed_at: this.d.clock.now().getTime() }, `${code}: ${message}`);
    if (moved && this.d.dns) {
      const hostname = (await this.spec(inst)).hostname;
      await this.d.dns.withdraw(hostname).catch((err) => this.d.logger.warn({ err, hostname }, "dns withdraw failed"));
    }
  }

  private async onGuestExit(id: string, reason: string): Promise<void> {
    const inst = await this.d.instances.byId(id);
    if (!inst || inst.status !== "ready") return;
    this.d.logger.warn({ instance: inst.name, reason }, "guest exited");
    await this.fail(id, "vm_exited", FAILURE_CODES.vm_exited).catch((err) => this.d.logger.error({ err, instance: inst.name }, "could not record the guest's exit"));
  }

  /** Concurrent deletes of one instance share a single teardown. */
  private teardownOnce(inst: Instance): Promise<void> {
    let p = this.teardowns.get(inst.id);
    if (!p) {
      p = this.track(this.teardown(inst)).finally(() => this.teardowns.delete(inst.id));
      this.teardowns.set(inst.id, p);
    }
    return p;
  }

  /**
   * Releases the guest and its DNS name, retrying with backoff until both are gone (a stuck QEMU, a
   * DNS primary that is down), then records `terminated`. Only shutdown stops the retries; the next
   * cvmd's recover() picks the teardown up again.
   */
  private async teardown(inst: Instance): Promise<void> {
    this.inflight.get(inst.id)?.abort(new Error("instance deleted"));
    const log = this.d.logger.child({ instance: inst.name, instance_id: inst.id });
    try {
      for (let attempt = 1; ; attempt++) {
        try {
          await this.release(inst);
          break;
        } catch (err) {
          const delay = retryDelay(attempt, 5 * RETRY_BASE_MS);
          log.error({ err, attempt, retry_in_ms: delay }, "teardown failed; retrying");
          if (attempt === 1) this.context(inst, new AbortController()).event("teardown_retry", `teardown failed (${describeCause(err)}); retrying with backoff`);
          await sleep(delay, undefined, { signal: this.stopping.signal });
        }
      }
      await this.durably("record that the instance's resources are released", inst.id, async () => {
        const current = await this.d.instances.byId(inst.id);
        if (current?.status === "terminating") await this.transition(current, "terminated", { terminated_at: this.d.clock.now().getTime() }, "resources released");
      });
    } catch (err) {
      // Shutdown (or a broken store): stays `terminating`, and the next cvmd's recover() finishes it.
      log.warn({ err }, "teardown not finished; the next start resumes it");
    }
  }

  private async release(inst: Instance): Promise<void> {
    await this.d.driver.destroy(await this.spec(inst));
    if (this.d.dns) await this.d.dns.withdraw((await this.spec(inst)).hostname);
  }

  private async transition(inst: Instance, to: InstanceStatus, fields: TransitionFields, message: string): Promise<boolean> {
    assertTransition(inst.status, to);
    return this.d.db.tx(() => this.d.instances.transition(inst.id, inst.status, to, fields, this.d.clock.now(), message));
  }
}

/** One line naming an unexpected error and its causes, for an instance event (no stack, bounded). */
export function describeCause(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 4; depth++) {
    if (e instanceof Error) {
      const code = (e as { code?: unknown }).code;
      parts.push(`${e.name}${typeof code === "string" ? ` (${code})` : ""}: ${e.message}`);
      e = e.cause;
    } else {
      parts.push(String(e));
      break;
    }
  }
  const line = (parts.join(" <- ") || "unknown cause").replace(/\s+/g, " ");
  return line.length > 500 ? `${line.slice(0, 499)}…` : line;
}

import type { InstanceStatus } from "../../shared/api/schemas.js";
import type { Database } from "./db.js";
import type { SqlValue } from "./sql-connection.js";
import { ReadCache, UNSIGNALLED_CHANGE_MAX_AGE_MS } from "./read-cache.js";

export interface Instance {
  id: string;
  tenantId: number;
  name: string;
  status: InstanceStatus;
  agent: string;
  publicKey: string;
  inferenceMode: string;
  inferenceModel: string;
  egressLimitBytes: number;
  failureCode: string | null;
  failureMessage: string | null;
  terminatedReason: string | null;
  createdAt: Date;
  readyAt: Date | null;
  failedAt: Date | null;
  terminatingAt: Date | null;
  terminatedAt: Date | null;
  ssh: { host: string; port: number; user: string } | null;
  runtime: Record<string, unknown> | null;
  /** Host-counted egress so far; null before the first sample. */
  egress: { bytes: number; observedAt: Date; blocked: boolean; blockAppliedAt: Date | null } | null;
}

interface InstanceRow {
  id: string;
  tenant_id: number;
  name: string;
  status: InstanceStatus;
  agent: string;
  public_key: string;
  inference_mode: string;
  inference_model: string;
  egress_limit_bytes: number;
  failure_code: string | null;
  failure_message: string | null;
  terminated_reason: string | null;
  created_at: number;
  ready_at: number | null;
  failed_at: number | null;
  terminating_at: number | null;
  terminated_at: number | null;
  ssh_host: string | null;
  ssh_port: number | null;
  ssh_user: string | null;
  runtime: string | null;
  egress_bytes: number | null;
  egress_observed_at: number | null;
  egress_blocked: number | null;
  egress_block_applied_at: number | null;
}

/** Instances joined with their latest egress view (absent until the first sample). */
const SELECT_INSTANCE = `SELECT i.*, e.bytes + e.after_block_bytes AS egress_bytes, e.observed_at AS egress_observed_at, e.blocked AS egress_blocked,
  e.block_applied_at AS egress_block_applied_at FROM instances i LEFT JOIN egress_state e ON e.instance_id = i.id`;

const date = (ms: number | null) => (ms === null ? null : new Date(ms));

function deepFreeze<T>(v: T): T {
  if (v && typeof v === "object" && !Object.isFrozen(v)) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

const toInstance = (r: InstanceRow): Instance => ({
  id: r.id,
  tenantId: r.tenant_id,
  name: r.name,
  status: r.status,
  agent: r.agent,
  publicKey: r.public_key,
  inferenceMode: r.inference_mode,
  inferenceModel: r.inference_model,
  egressLimitBytes: r.egress_limit_bytes,
  failureCode: r.failure_code,
  failureMessage: r.failure_message,
  terminatedReason: r.terminated_reason,
  createdAt: new Date(r.created_at),
  readyAt: date(r.ready_at),
  failedAt: date(r.failed_at),
  terminatingAt: date(r.terminating_at),
  terminatedAt: date(r.terminated_at),
  ssh: r.ssh_host !== null && r.ssh_port !== null ? { host: r.ssh_host, port: r.ssh_port, user: r.ssh_user ?? "azureuser" } : null,
  runtime: r.runtime ? (JSON.parse(r.runtime) as Record<string, unknown>) : null,
  egress:
    r.egress_observed_at === null || r.egress_observed_at === undefined
      ? null
      : { bytes: r.egress_bytes ?? 0, observedAt: new Date(r.egress_observed_at), blocked: r.egress_blocked === 1, blockAppliedAt: date(r.egress_block_applied_at) },
});

export interface NewInstance {
  id: string;
  tenantId: number;
  name: string;
  agent: string;
  publicKey: string;
  inferenceMode: string;
  inferenceModel: string;
  egressLimitBytes: number;
  createdAt: Date;
}

/** Where a page of a tenant's list ends: the sort keys of its last instance. */
export interface InstancePosition {
  createdAtMs: number;
  name: string;
}

export interface InstancePage {
  instances: Instance[];
  /** Whether a page follows this one. */
  more: boolean;
}

/** See InstanceStore.billable. */
export interface BillableAggregate {
  /** Billable milliseconds of the intervals that have ended, inside the window. */
  closedMs: number;
  /** Intervals still open (the instance is billed until now). */
  openCount: number;
  /** Sum of the open intervals' starts, each clipped to the window start (epoch ms). */
  openFromSumMs: number;
}

export interface EventRow {
  seq: number;
  type: string;
  from_status: InstanceStatus | null;
  to_status: InstanceStatus | null;
  message: string | null;
  at: number;
}

/** Columns a transition may set alongside the status; the names are the table's. */
export interface TransitionFields {
  failure_code?: string | null;
  failure_message?: string | null;
  terminated_reason?: string | null;
  ready_at?: number;
  failed_at?: number;
  terminating_at?: number;
  terminated_at?: number;
  ssh_host?: string | null;
  ssh_port?: number | null;
  ssh_user?: string | null;
}

/** What an observer of recorded events sees (metrics derive phases and failures from it). */
export interface InstanceEventNotice {
  instanceId: string;
  type: string;
  from: InstanceStatus | null;
  to: InstanceStatus | null;
  message: string | null;
  at: Date;
  /** The columns a status transition set alongside the status. */
  fields?: TransitionFields;
}

/** Instance records kept in memory for GET /v1/instances/{name}; beyond it the oldest is dropped. */
const CACHED_INSTANCES = 10_000;
/** List pages kept in memory (GET /v1/instances), each of at most CACHED_PAGE_MAX_LIMIT instances. */
const CACHED_PAGES = 200;
const CACHED_PAGE_MAX_LIMIT = 100;
const cacheKey = (tenantId: number, name: string) => `${tenantId}/${name}`;

export class InstanceStore {
  private readonly observers: Array<(e: InstanceEventNotice) => void> = [];
  private cache: ReadCache<string, Instance> | undefined;
  private billableCache: ReadCache<string, BillableAggregate> | undefined;
  private pageCache: ReadCache<string, InstancePage> | undefined;
  private readonly signal = () => this.db.changes.instancesChanged();

  constructor(private readonly db: Database) {}

  /**
   * Moves at every committed write to an instance row or its egress state: what a cache of
   * anything derived from them (the usage view's egress totals) compares against.
   */
  generation(): string | number {
    return this.db.changes.instancesGeneration();
  }

  /** The cached row of `byNameCached` without a read, or undefined when it is not cached (or no longer valid). */
  cachedByName(tenantId: number, name: string): Instance | undefined {
    return this.cache?.get(cacheKey(tenantId, name), this.db.changes.instancesGeneration());
  }

  /**
   * `byName` through an in-memory cache. Every write to an instance row or its egress state (this
   * store, EgressStore) moves the generation, which drops every cached record, so a status or
   * egress change shows on the next read. Misses are not cached. The record is shared and frozen.
   */
  async byNameCached(tenantId: number, name: string): Promise<Instance | undefined> {
    const hit = this.cachedByName(tenantId, name);
    if (hit) return hit;
    // Taken before the read: a write committed meanwhile makes the entry stale at once.
    const generation = this.db.changes.instancesGeneration();
    const inst = await this.byName(tenantId, name);
    if (inst) (this.cache ??= new ReadCache(CACHED_INSTANCES, UNSIGNALLED_CHANGE_MAX_AGE_MS)).set(cacheKey(tenantId, name), generation, deepFreeze(inst));
    return inst;
  }

  /**
   * Registers a synchronous observer of every recorded event. It runs inside the writing
   * transaction, so it must be cheap and must not write; a throwing observer is ignored.
   */
  observe(fn: (e: InstanceEventNotice) => void): void {
    this.observers.push(fn);
  }

  /** Instance rows per status (terminated rows are kept, so that count only grows). */
  async countByStatus(): Promise<Partial<Record<InstanceStatus, number>>> {
    const rows = await this.db.all<{ status: InstanceStatus; n: number }>(`SELECT status, COUNT(*) AS n FROM instances GROUP BY status`);
    return Object.fromEntries(rows.map((r) => [r.status, r.n]));
  }

  /** Inside the caller's transaction. Returns false when the name is taken for this tenant. */
  async insert(n: NewInstance): Promise<boolean> {
    try {
      await this.db.run(
        `INSERT INTO instances (id, tenant_id, name, status, agent, public_key, inference_mode, inference_model, egress_limit_bytes, created_at)
         VALUES (?,?,?,?,?,?,?,?,?,?)`,
        [n.id, n.tenantId, n.name, "provisioning", n.agent, n.publicKey, n.inferenceMode, n.inferenceModel, n.egressLimitBytes, n.createdAt.getTime()],
      );
      this.db.afterCommit(this.signal);
      return true;
    } catch (err) {
      if (this.db.isUniqueViolation(err, "instances", ["tenant_id", "name"])) return false;
      throw err;
    }
  }

  async byName(tenantId: number, name: string): Promise<Instance | undefined> {
    const r = await this.db.get<InstanceRow>(`${SELECT_INSTANCE} WHERE i.tenant_id = ? AND i.name = ?`, [tenantId, name]);
    return r && toInstance(r);
  }

  async byId(id: string): Promise<Instance | undefined> {
    const r = await this.db.get<InstanceRow>(`${SELECT_INSTANCE} WHERE i.id = ?`, [id]);
    return r && toInstance(r);
  }

  /**
   * One page of a tenant's instances in (created_at, name) order, terminated ones only while
   * `terminatedSince` has not passed, starting after `after`. Both keys are immutable and names are
   * never reused, so walking the pages yields every instance once even while others are created
   * (they sort after the ones already seen) or deleted. `more`: whether a page follows.
   */
  async pageForTenant(
    tenantId: number,
    terminatedSince: Date,
    after: InstancePosition | null,
    limit: number,
  ): Promise<InstancePage> {
    const rows = await this.db.all<InstanceRow>(
      `${SELECT_INSTANCE} WHERE i.tenant_id = ? AND (i.created_at, i.name) > (?, ?) AND (i.status != 'terminated' OR i.terminated_at >= ?)
       ORDER BY i.created_at, i.name LIMIT ?`,
      [tenantId, after?.createdAtMs ?? -1, after?.name ?? "", terminatedSince.getTime(), limit + 1],
    );
    const more = rows.length > limit;
    return { instances: (more ? rows.slice(0, limit) : rows).map(toInstance), more };
  }

  async list(filter: { tenantId?: number; statuses?: InstanceStatus[] } = {}): Promise<Instance[]> {
    const where: string[] = [];
    const params: SqlValue[] = [];
    if (filter.tenantId !== undefined) {
      where.push("i.tenant_id = ?");
      params.push(filter.tenantId);
    }
    if (filter.statuses?.length) {
      where.push(`i.status IN (${filter.statuses.map(() => "?").join(",")})`);
      params.push(...filter.statuses);
    }
    const rows = await this.db.all<InstanceRow>(
      `${SELECT_INSTANCE} ${where.length ? "WHERE " + where.join(" AND ") : ""} ORDER BY i.created_at, i.name`,
      params,
    );
    return rows.map(toInstance);
  }

  /**
   * `pageForTenant` through an in-memory cache of small pages, dropped at the next write to any
   * instance row, like `byNameCached`. An entry also expires after a few seconds, which bounds how
   * late a terminated instance leaves the list once its retention has passed (`terminatedSince`
   * is not part of the key). The page and its instances are shared and frozen.
   */
  async pageForTenantCached(tenantId: number, terminatedSince: Date, after: InstancePosition | null, limit: number): Promise<InstancePage> {
    const key = `${tenantId}/${limit}/${after ? `${after.createdAtMs}/${after.name}` : ""}`;
    const generation = this.db.changes.instancesGeneration();
    const hit = this.pageCache?.get(key, generation);
    if (hit) return hit;
    const page = await this.pageForTenant(tenantId, terminatedSince, after, limit);
    // Large pages are left out: a thousand-instance page is ~0.5 MB rendered, too much to keep many of.
    if (limit <= CACHED_PAGE_MAX_LIMIT) (this.pageCache ??= new ReadCache(CACHED_PAGES, UNSIGNALLED_CHANGE_MAX_AGE_MS)).set(key, generation, deepFreeze(page));
    return page;
  }

  /**
   * A tenant's billable time in the window [from, to) as of `now`, summed by the database over the
   * (tenant_id, ready_at) index. Billing runs from ready_at until the first of terminating_at /
   * failed_at (the tenant stops having the instance at the delete request). Closed intervals are
   * summed as milliseconds; open ones as a count and the sum of their clipped starts, so one
   * aggregate serves every `now` until an instance row changes (`billableCached`).
   */
  async billable(tenantId: number, from: Date, to: Date): Promise<BillableAggregate> {
    const db = this.db;
    const r = await db.get<{ closed_ms: number | null; open_n: number; open_from_sum: number | null }>(
      `SELECT SUM(CASE WHEN e IS NOT NULL THEN ${db.greatest("0", `${db.least("e", "?3")} - ${db.greatest("r", "?2")}`)} END) AS closed_ms,
              COUNT(*) - COUNT(e) AS open_n,
              SUM(CASE WHEN e IS NULL THEN ${db.greatest("r", "?2")} END) AS open_from_sum
         FROM (SELECT ready_at AS r, COALESCE(terminating_at, failed_at, terminated_at) AS e FROM instances
                WHERE tenant_id = ?1 AND ready_at IS NOT NULL AND ready_at < ?3) AS intervals
        WHERE e IS NULL OR e > ?2`,
      [tenantId, from.getTime(), to.getTime()],
    );
    return { closedMs: r?.closed_ms ?? 0, openCount: r?.open_n ?? 0, openFromSumMs: r?.open_from_sum ?? 0 };
  }

  /** `billable` kept per tenant and window until the next write to any instance row. */
  async billableCached(tenantId: number, from: Date, to: Date): Promise<BillableAggregate> {
    const key = `${tenantId}/${from.getTime()}/${to.getTime()}`;
    const generation = this.db.changes.instancesGeneration();
    const hit = this.billableCache?.get(key, generation);
    if (hit) return hit;
    const agg = await this.billable(tenantId, from, to);
    (this.billableCache ??= new ReadCache(CACHED_INSTANCES, UNSIGNALLED_CHANGE_MAX_AGE_MS)).set(key, generation, agg);
    return agg;
  }

  /**
   * Moves `id` from `from` to `to` and records the event, inside the caller's transaction.
   * The expected previous status is in the WHERE clause, so a concurrent transition loses cleanly.
   */
  async transition(id: string, from: InstanceStatus, to: InstanceStatus, fields: TransitionFields, at: Date, message: string | null): Promise<boolean> {
    const sets = ["status = ?"];
    const params: SqlValue[] = [to];
    for (const [k, v] of Object.entries(fields)) {
      sets.push(`${k} = ?`);
      params.push(v as SqlValue);
    }
    params.push(id, from);
    const { changes } = await this.db.run(`UPDATE instances SET ${sets.join(", ")} WHERE id = ? AND status = ?`, params);
    this.db.afterCommit(this.signal);
    if (changes !== 1) return false;
    await this.appendEvent(id, "status", from, to, message, at, fields);
    return true;
  }

  async setRuntime(id: string, runtime: Record<string, unknown> | null): Promise<void> {
    await this.db.run(`UPDATE instances SET runtime = ? WHERE id = ?`, [runtime ? JSON.stringify(runtime) : null, id]);
    this.db.afterCommit(this.signal);
  }

  /** Inside the caller's transaction: the sequence is per instance and gap-free. */
  async appendEvent(
    id: string,
    type: string,
    from: InstanceStatus | null,
    to: InstanceStatus | null,
    message: string | null,
    at: Date,
    fields?: TransitionFields,
  ): Promise<number> {
    const row = await this.db.get<{ next_event_seq: number }>(`SELECT next_event_seq FROM instances WHERE id = ?`, [id]);
    if (!row) throw new Error(`no instance ${id}`);
    const seq = row.next_event_seq;
    await this.db.run(`UPDATE instances SET next_event_seq = ? WHERE id = ?`, [seq + 1, id]);
    this.db.afterCommit(this.signal);
    await this.db.run(`INSERT INTO instance_events (instance_id, seq, type, from_status, to_status, message, at) VALUES (?,?,?,?,?,?,?)`, [
      id,
      seq,
      type,
      from,
      to,
      message,
      at.getTime(),
    ]);
    for (const fn of this.observers) {
      try {
        fn({ instanceId: id, type, from, to, message, at, fields });
      } catch {
        /* observers are best-effort by contract */
      }
    }
    return seq;
  }

  events(id: string): Promise<EventRow[]> {
    return this.db.all<EventRow>(`SELECT seq, type, from_status, to_status, message, at FROM instance_events WHERE instance_id = ? ORDER BY seq`, [id]);
  }
}

import type { InstanceStatus } from "../../shared/api/types.js";
import type { Database, SqlValue } from "./db.js";

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
}

const date = (ms: number | null) => (ms === null ? null : new Date(ms));

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

export class InstanceStore {
  constructor(private readonly db: Database) {}

  /** Inside the caller's transaction. Returns false when the name is taken for this tenant. */
  async insert(n: NewInstance): Promise<boolean> {
    try {
      await this.db.run(
        `INSERT INTO instances (id, tenant_id, name, status, agent, public_key, inference_mode, inference_model, egress_limit_bytes, created_at)
         VALUES (?,?,?,?,?,?,?,?,?,?)`,
        [n.id, n.tenantId, n.name, "provisioning", n.agent, n.publicKey, n.inferenceMode, n.inferenceModel, n.egressLimitBytes, n.createdAt.getTime()],
      );
      return true;
    } catch (err) {
      if ((err as { code?: string }).code === "SQLITE_CONSTRAINT" && /instances\.tenant_id, instances\.name/.test(String(err))) return false;
      throw err;
    }
  }

  async byName(tenantId: number, name: string): Promise<Instance | undefined> {
    const r = await this.db.get<InstanceRow>(`SELECT * FROM instances WHERE tenant_id = ? AND name = ?`, [tenantId, name]);
    return r && toInstance(r);
  }

  async byId(id: string): Promise<Instance | undefined> {
    const r = await this.db.get<InstanceRow>(`SELECT * FROM instances WHERE id = ?`, [id]);
    return r && toInstance(r);
  }

  /** A tenant's instances, terminated ones only while `terminatedSince` has not passed. */
  async listForTenant(tenantId: number, terminatedSince: Date): Promise<Instance[]> {
    const rows = await this.db.all<InstanceRow>(
      `SELECT * FROM instances WHERE tenant_id = ? AND (status != 'terminated' OR terminated_at >= ?) ORDER BY created_at, name`,
      [tenantId, terminatedSince.getTime()],
    );
    return rows.map(toInstance);
  }

  async list(filter: { tenantId?: number; statuses?: InstanceStatus[] } = {}): Promise<Instance[]> {
    const where: string[] = [];
    const params: SqlValue[] = [];
    if (filter.tenantId !== undefined) {
      where.push("tenant_id = ?");
      params.push(filter.tenantId);
    }
    if (filter.statuses?.length) {
      where.push(`status IN (${filter.statuses.map(() => "?").join(",")})`);
      params.push(...filter.statuses);
    }
    const rows = await this.db.all<InstanceRow>(
      `SELECT * FROM instances ${where.length ? "WHERE " + where.join(" AND ") : ""} ORDER BY created_at, name`,
      params,
    );
    return rows.map(toInstance);
  }

  /**
   * Instances whose billable interval overlaps [from, to). Billing runs from ready_at until the first
   * of terminating_at / failed_at (the tenant stops having the instance at the delete request).
   */
  async billableOverlapping(tenantId: number, from: Date, to: Date): Promise<Instance[]> {
    const rows = await this.db.all<InstanceRow>(
      `SELECT * FROM instances WHERE tenant_id = ? AND ready_at IS NOT NULL AND ready_at < ?
         AND (COALESCE(terminating_at, failed_at, terminated_at) IS NULL OR COALESCE(terminating_at, failed_at, terminated_at) > ?)`,
      [tenantId, to.getTime(), from.getTime()],
    );
    return rows.map(toInstance);
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
    if (changes !== 1) return false;
    await this.appendEvent(id, "status", from, to, message, at);
    return true;
  }

  async setRuntime(id: string, runtime: Record<string, unknown> | null): Promise<void> {
    await this.db.run(`UPDATE instances SET runtime = ? WHERE id = ?`, [runtime ? JSON.stringify(runtime) : null, id]);
  }

  /** Inside the caller's transaction: the sequence is per instance and gap-free. */
  async appendEvent(id: string, type: string, from: InstanceStatus | null, to: InstanceStatus | null, message: string | null, at: Date): Promise<number> {
    const row = await this.db.get<{ next_event_seq: number }>(`SELECT next_event_seq FROM instances WHERE id = ?`, [id]);
    if (!row) throw new Error(`no instance ${id}`);
    const seq = row.next_event_seq;
    await this.db.run(`UPDATE instances SET next_event_seq = ? WHERE id = ?`, [seq + 1, id]);
    await this.db.run(`INSERT INTO instance_events (instance_id, seq, type, from_status, to_status, message, at) VALUES (?,?,?,?,?,?,?)`, [
      id,
      seq,
      type,
      from,
      to,
      message,
      at.getTime(),
    ]);
    return seq;
  }

  events(id: string): Promise<EventRow[]> {
    return this.db.all<EventRow>(`SELECT seq, type, from_status, to_status, message, at FROM instance_events WHERE instance_id = ? ORDER BY seq`, [id]);
  }
}

import type { Database } from "./db.js";

export interface IdempotencyRecord {
  requestHash: string;
  statusCode: number;
  response: unknown;
  createdAt: Date;
}

export class IdempotencyStore {
  constructor(private readonly db: Database) {}

  async find(tenantId: number, key: string, notBefore: Date): Promise<IdempotencyRecord | undefined> {
    const r = await this.db.get<{ request_hash: string; status_code: number; response: string; created_at: number }>(
      `SELECT request_hash, status_code, response, created_at FROM idempotency_keys WHERE tenant_id = ? AND key = ? AND created_at >= ?`,
      [tenantId, key, notBefore.getTime()],
    );
    return r && { requestHash: r.request_hash, statusCode: r.status_code, response: JSON.parse(r.response), createdAt: new Date(r.created_at) };
  }

  /** Inside the caller's transaction; replaces an expired record with the same key. */
  async save(tenantId: number, key: string, rec: IdempotencyRecord): Promise<void> {
    await this.db.run(
      `INSERT INTO idempotency_keys (tenant_id, key, request_hash, status_code, response, created_at) VALUES (?,?,?,?,?,?)
       ON CONFLICT (tenant_id, key) DO UPDATE SET request_hash = excluded.request_hash, status_code = excluded.status_code,
         response = excluded.response, created_at = excluded.created_at`,
      [tenantId, key, rec.requestHash, rec.statusCode, JSON.stringify(rec.response), rec.createdAt.getTime()],
    );
  }

  async expire(before: Date): Promise<number> {
    const { changes } = await this.db.run(`DELETE FROM idempotency_keys WHERE created_at < ?`, [before.getTime()]);
    return changes;
  }
}

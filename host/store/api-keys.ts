import type { Database } from "./db.js";

export interface ApiKeyRow {
  prefix: string;
  tenant_id: number;
  secret_hash: Buffer;
  created_at: number;
  revoked_at: number | null;
  expires_at: number | null;
}

export interface ApiKeyInfo {
  prefix: string;
  tenantId: number;
  createdAt: Date;
  revokedAt: Date | null;
  expiresAt: Date | null;
}

const toInfo = (r: ApiKeyRow): ApiKeyInfo => ({
  prefix: r.prefix,
  tenantId: r.tenant_id,
  createdAt: new Date(r.created_at),
  revokedAt: r.revoked_at === null ? null : new Date(r.revoked_at),
  expiresAt: r.expires_at === null ? null : new Date(r.expires_at),
});

export class ApiKeyStore {
  constructor(private readonly db: Database) {}

  async insert(k: { prefix: string; tenantId: number; secretHash: Buffer; createdAt: Date }): Promise<void> {
    await this.db.run(`INSERT INTO api_keys (prefix, tenant_id, secret_hash, created_at) VALUES (?,?,?,?)`, [
      k.prefix,
      k.tenantId,
      k.secretHash,
      k.createdAt.getTime(),
    ]);
  }

  byPrefix(prefix: string): Promise<ApiKeyRow | undefined> {
    return this.db.get<ApiKeyRow>(`SELECT * FROM api_keys WHERE prefix = ?`, [prefix]);
  }

  async listForTenant(tenantId: number): Promise<ApiKeyInfo[]> {
    return (await this.db.all<ApiKeyRow>(`SELECT * FROM api_keys WHERE tenant_id = ? ORDER BY created_at`, [tenantId])).map(toInfo);
  }

  /** Revokes at `at` (a future time gives a grace period); an earlier revocation is kept. */
  async revoke(prefix: string, at: Date): Promise<boolean> {
    const { changes } = await this.db.run(
      `UPDATE api_keys SET revoked_at = ? WHERE prefix = ? AND (revoked_at IS NULL OR revoked_at > ?)`,
      [at.getTime(), prefix, at.getTime()],
    );
    return changes === 1;
  }
}

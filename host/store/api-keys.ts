import type { Database } from "./db.js";
import { ReadCache, UNSIGNALLED_CHANGE_MAX_AGE_MS } from "./read-cache.js";
import type { Tenant } from "./tenants.js";

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

/** Keys whose rows stay in memory; beyond it the oldest is dropped. */
const CACHED_KEYS = 10_000;

export class ApiKeyStore {
  private cache: ReadCache<string, { key: ApiKeyRow; tenant: Tenant }> | undefined;
  private readonly signal = () => this.db.changes.authChanged();

  constructor(private readonly db: Database) {}

  /**
   * The cached entry of `withTenantCached` without a read, or undefined when it is not cached (or
   * no longer valid): lets the caller skip an await when the answer is already in memory.
   */
  cachedWithTenant(prefix: string): { key: ApiKeyRow; tenant: Tenant } | undefined {
    return this.cache?.get(prefix, this.db.changes.authGeneration());
  }

  /**
   * `withTenant` through an in-memory cache, for the authentication of every request. A key or
   * tenant change committed by any process (revocation, rotation, suspension) is seen by the very
   * next call: each call compares the change generation with the one taken before the cached read.
   * Unknown prefixes are not cached, so guessing cannot fill the cache. The returned rows are
   * shared between requests and frozen.
   */
  async withTenantCached(prefix: string): Promise<{ key: ApiKeyRow; tenant: Tenant } | undefined> {
    return this.cachedWithTenant(prefix) ?? this.readIntoCache(prefix);
  }

  private async readIntoCache(prefix: string): Promise<{ key: ApiKeyRow; tenant: Tenant } | undefined> {
    // Taken before the read: a change committed meanwhile makes the entry stale at once.
    const generation = this.db.changes.authGeneration();
    const found = await this.withTenant(prefix);
    if (found) {
      Object.freeze(found.key);
      Object.freeze(found.tenant);
      (this.cache ??= new ReadCache(CACHED_KEYS, UNSIGNALLED_CHANGE_MAX_AGE_MS)).set(prefix, generation, Object.freeze(found));
    }
    return found;
  }

  async insert(k: { prefix: string; tenantId: number; secretHash: Buffer; createdAt: Date }): Promise<void> {
    await this.db.run(`INSERT INTO api_keys (prefix, tenant_id, secret_hash, created_at) VALUES (?,?,?,?)`, [
      k.prefix,
      k.tenantId,
      k.secretHash,
      k.createdAt.getTime(),
    ]);
    this.db.afterCommit(this.signal);
  }

  /** The key and its tenant in one read: authentication is on every request's path. */
  async withTenant(prefix: string): Promise<{ key: ApiKeyRow; tenant: Tenant } | undefined> {
    const r = await this.db.get<ApiKeyRow & { t_slug: string; t_created_at: number; t_sub: string; t_hours: number; t_over: string; t_susp: number | null }>(
      `SELECT k.*, t.slug AS t_slug, t.created_at AS t_created_at, t.subscription_cost_usd AS t_sub, t.instance_hours_included AS t_hours,
              t.overage_per_hour_usd AS t_over, t.suspended_at AS t_susp
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.prefix = ?`,
      [prefix],
    );
    if (!r) return undefined;
    return {
      key: { prefix: r.prefix, tenant_id: r.tenant_id, secret_hash: r.secret_hash, created_at: r.created_at, revoked_at: r.revoked_at, expires_at: r.expires_at },
      tenant: {
        id: r.tenant_id,
        slug: r.t_slug,
        createdAt: new Date(r.t_created_at),
        subscriptionCostUsd: r.t_sub,
        instanceHoursIncluded: r.t_hours,
        overagePerHourUsd: r.t_over,
        suspendedAt: r.t_susp === null ? null : new Date(r.t_susp),
      },
    };
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
    this.db.afterCommit(this.signal);
    return changes === 1;
  }
}

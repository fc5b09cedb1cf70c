import type { Database } from "./db.js";

export interface Tenant {
  id: number;
  slug: string;
  createdAt: Date;
  subscriptionCostUsd: string;
  instanceHoursIncluded: number;
  overagePerHourUsd: string;
  suspendedAt: Date | null;
}

interface TenantRow {
  id: number;
  slug: string;
  created_at: number;
  subscription_cost_usd: string;
  instance_hours_included: number;
  overage_per_hour_usd: string;
  suspended_at: number | null;
}

const toTenant = (r: TenantRow): Tenant => ({
  id: r.id,
  slug: r.slug,
  createdAt: new Date(r.created_at),
  subscriptionCostUsd: r.subscription_cost_usd,
  instanceHoursIncluded: r.instance_hours_included,
  overagePerHourUsd: r.overage_per_hour_usd,
  suspendedAt: r.suspended_at === null ? null : new Date(r.suspended_at),
});

export interface NewTenant {
  slug: string;
  createdAt: Date;
  subscriptionCostUsd: string;
  instanceHoursIncluded: number;
  overagePerHourUsd: string;
}

export class TenantStore {
  /** Authentication caches tenants with their keys (ApiKeyStore.withTenantCached). */
  private readonly signal = () => this.db.changes.authChanged();

  constructor(private readonly db: Database) {}

  /** Inserts inside the caller's transaction. */
  async insert(t: NewTenant): Promise<Tenant> {
    const row = await this.db.get<{ id: number }>(
      `INSERT INTO tenants (slug, created_at, subscription_cost_usd, instance_hours_included, overage_per_hour_usd) VALUES (?,?,?,?,?) RETURNING id`,
      [t.slug, t.createdAt.getTime(), t.subscriptionCostUsd, t.instanceHoursIncluded, t.overagePerHourUsd],
    );
    this.db.afterCommit(this.signal);
    return { id: row!.id, suspendedAt: null, ...t };
  }

  async bySlug(slug: string): Promise<Tenant | undefined> {
    const r = await this.db.get<TenantRow>(`SELECT * FROM tenants WHERE slug = ?`, [slug]);
    return r && toTenant(r);
  }

  async byId(id: number): Promise<Tenant | undefined> {
    const r = await this.db.get<TenantRow>(`SELECT * FROM tenants WHERE id = ?`, [id]);
    return r && toTenant(r);
  }

  async list(): Promise<Tenant[]> {
    return (await this.db.all<TenantRow>(`SELECT * FROM tenants ORDER BY slug`)).map(toTenant);
  }

  async setSuspended(slug: string, at: Date | null): Promise<boolean> {
    const { changes } = await this.db.run(`UPDATE tenants SET suspended_at = ? WHERE slug = ?`, [at ? at.getTime() : null, slug]);
    this.db.afterCommit(this.signal);
    return changes === 1;
  }
}

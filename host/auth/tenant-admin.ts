import type { Clock } from "../clock.js";
import type { Config } from "../config.js";
import type { ApiKeyStore } from "../store/api-keys.js";
import type { Database } from "../store/db.js";
import type { Tenant, TenantStore } from "../store/tenants.js";
import { newApiKey } from "./api-keys.js";

/** Tenant slugs become DNS labels in every instance hostname. */
export const TENANT_SLUG = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export class TenantAdminError extends Error {
  override name = "TenantAdminError";
}

export interface TenantAdminDeps {
  db: Database;
  tenants: TenantStore;
  keys: ApiKeyStore;
  clock: Clock;
  pricing: Config["pricing"];
}

export async function createTenant(d: TenantAdminDeps, slug: string): Promise<{ tenant: Tenant; apiKey: string }> {
  if (!TENANT_SLUG.test(slug)) throw new TenantAdminError(`invalid slug "${slug}": use a lowercase DNS label (a-z, 0-9, -; at most 63 characters)`);
  return d.db.tx(async () => {
    if (await d.tenants.bySlug(slug)) throw new TenantAdminError(`tenant ${slug} already exists`);
    const tenant = await d.tenants.insert({ slug, createdAt: d.clock.now(), ...d.pricing });
    const apiKey = await insertKey(d, tenant.id);
    return { tenant, apiKey };
  });
}

export async function createKey(d: TenantAdminDeps, slug: string): Promise<string> {
  return d.db.tx(async () => {
    const tenant = await d.tenants.bySlug(slug);
    if (!tenant) throw new TenantAdminError(`no tenant ${slug}`);
    return insertKey(d, tenant.id);
  });
}

async function insertKey(d: TenantAdminDeps, tenantId: number): Promise<string> {
  for (;;) {
    const k = newApiKey();
    if (await d.keys.byPrefix(k.prefix)) continue;
    await d.keys.insert({ prefix: k.prefix, tenantId, secretHash: k.secretHash, createdAt: d.clock.now() });
    return k.key;
  }
}

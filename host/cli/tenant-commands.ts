import { createKey, createTenant, TenantAdminError, type TenantAdminDeps } from "../auth/tenant-admin.js";
import { systemClock } from "../clock.js";
import { ApiKeyStore } from "../store/api-keys.js";
import type { Database } from "../store/db.js";
import { InstanceStore } from "../store/instances.js";
import { TenantStore } from "../store/tenants.js";
import { isoSeconds } from "../../shared/api/schemas.js";
import { CliError, table, withDb, type CliContext } from "./context.js";

interface Json {
  json?: boolean;
}

function stores(ctx: CliContext, fn: (s: { db: Database; tenants: TenantStore; keys: ApiKeyStore; admin: TenantAdminDeps }) => Promise<void>): Promise<number> {
  const config = ctx.config();
  return withDb(config, ctx.dbFile, async (db) => {
    const tenants = new TenantStore(db);
    const keys = new ApiKeyStore(db);
    try {
      await fn({ db, tenants, keys, admin: { db, tenants, keys, clock: systemClock, pricing: config.pricing } });
    } catch (err) {
      if (err instanceof TenantAdminError) throw new CliError(err.message, 1);
      throw err;
    }
    return 0;
  });
}

export function tenantCreate(ctx: CliContext, slug: string, o: Json): Promise<number> {
  return stores(ctx, async ({ admin }) => {
    const { tenant, apiKey } = await createTenant(admin, slug);
    if (o.json) ctx.io.out(JSON.stringify({ slug: tenant.slug, api_key: apiKey }));
    else ctx.io.out(`tenant ${tenant.slug} created\napi key (shown once): ${apiKey}`);
  });
}

export function tenantList(ctx: CliContext, o: Json): Promise<number> {
  return stores(ctx, async ({ tenants }) => {
    const list = await tenants.list();
    if (o.json) ctx.io.out(JSON.stringify(list.map((t) => ({ slug: t.slug, created_at: isoSeconds(t.createdAt), suspended: t.suspendedAt !== null }))));
    else ctx.io.out(table([["SLUG", "CREATED", "SUSPENDED"], ...list.map((t) => [t.slug, isoSeconds(t.createdAt), t.suspendedAt ? "yes" : "no"])]));
  });
}

export function tenantSuspend(ctx: CliContext, slug: string, suspend: boolean): Promise<number> {
  return stores(ctx, async ({ db, tenants }) => {
    const ok = await db.tx(() => tenants.setSuspended(slug, suspend ? systemClock.now() : null));
    if (!ok) throw new TenantAdminError(`no tenant ${slug}`);
    ctx.io.out(`tenant ${slug} ${suspend ? "suspended" : "resumed"}`);
  });
}

export function keyCreate(ctx: CliContext, slug: string, o: Json): Promise<number> {
  return stores(ctx, async ({ admin }) => {
    const key = await createKey(admin, slug);
    if (o.json) ctx.io.out(JSON.stringify({ slug, api_key: key }));
    else ctx.io.out(`api key (shown once): ${key}`);
  });
}

export function keyList(ctx: CliContext, slug: string, o: Json): Promise<number> {
  return stores(ctx, async ({ tenants, keys }) => {
    const tenant = await tenants.bySlug(slug);
    if (!tenant) throw new TenantAdminError(`no tenant ${slug}`);
    const list = await keys.listForTenant(tenant.id);
    const state = (k: (typeof list)[number]) => (k.revokedAt && k.revokedAt <= systemClock.now() ? "revoked" : k.revokedAt ? `valid until ${isoSeconds(k.revokedAt)}` : "active");
    if (o.json) ctx.io.out(JSON.stringify(list.map((k) => ({ prefix: k.prefix, created_at: isoSeconds(k.createdAt), state: state(k) }))));
    else ctx.io.out(table([["PREFIX", "CREATED", "STATE"], ...list.map((k) => [k.prefix, isoSeconds(k.createdAt), state(k)])]));
  });
}

export function keyRevoke(ctx: CliContext, prefix: string): Promise<number> {
  return stores(ctx, async ({ db, keys }) => {
    const ok = await db.tx(() => keys.revoke(prefix, systemClock.now()));
    if (!ok) throw new TenantAdminError(`no active key with prefix ${prefix}`);
    ctx.io.out(`key ${prefix} revoked`);
  });
}

export function instancesList(ctx: CliContext, o: Json & { tenant?: string }): Promise<number> {
  return stores(ctx, async ({ db, tenants }) => {
    let tenantId: number | undefined;
    if (o.tenant) {
      const t = await tenants.bySlug(o.tenant);
      if (!t) throw new TenantAdminError(`no tenant ${o.tenant}`);
      tenantId = t.id;
    }
    const list = await new InstanceStore(db).list({ tenantId });
    const slugs = new Map((await tenants.list()).map((t) => [t.id, t.slug]));
    const rows = list.map((i) => ({
      tenant: slugs.get(i.tenantId) ?? "?",
      name: i.name,
      status: i.status,
      created_at: isoSeconds(i.createdAt),
      failure_code: i.failureCode,
      ssh: i.ssh ? `${i.ssh.user}@${i.ssh.host}:${i.ssh.port}` : null,
    }));
    if (o.json) ctx.io.out(JSON.stringify(rows));
    else ctx.io.out(table([["TENANT", "NAME", "STATUS", "CREATED", "FAILURE", "SSH"], ...rows.map((r) => [r.tenant, r.name, r.status, r.created_at, r.failure_code ?? "-", r.ssh ?? "-"])]));
  });
}

import { join } from "node:path";
import { parseArgs } from "node:util";
import { createKey, createTenant, TenantAdminError } from "../auth/tenant-admin.js";
import { systemClock } from "../clock.js";
import { ConfigError, loadConfig, type Config } from "../config.js";
import { DB_FILE } from "../daemon.js";
import { ApiKeyStore } from "../store/api-keys.js";
import { Database } from "../store/db.js";
import { InstanceStore } from "../store/instances.js";
import { TenantStore } from "../store/tenants.js";
import { isoSeconds } from "../../shared/api/types.js";
import { OPS_OPTIONS, OPS_USAGE, runOpsCommand } from "../ops/cli.js";
import { tellDaemonAuthChanged } from "../ops/control-socket.js";
import { VM_OPTIONS, VM_USAGE, runVmCommand } from "./vm-commands.js";
import { POOL_OPTIONS, POOL_USAGE, runPoolCommand } from "./pool-commands.js";
import { NETNS_USAGE, runNetnsCommand } from "./netns-commands.js";

const USAGE = `usage: cvmctl <command>

  tenant create SLUG [--json]     create a tenant and print its first API key
  tenant list [--json]            list tenants
  tenant suspend|resume SLUG      block / unblock a tenant's API access (instances keep running)
  key create SLUG [--json]        create another API key for a tenant (printed once)
  key list SLUG [--json]          list a tenant's keys (prefixes only, never secrets)
  key revoke PREFIX               revoke a key at once
  instances [--tenant SLUG] [--json]
                                  list instances (all tenants by default)
${OPS_USAGE}
${VM_USAGE}
${POOL_USAGE}
${NETNS_USAGE}

Environment: CVM_DATA_DIR (default ./var) selects the database; cvmctl works while cvmd runs.`;

class UsageError extends Error {}

interface Io {
  out(line: string): void;
  err(line: string): void;
}

function table(rows: string[][]): string {
  if (rows.length === 0) return "";
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ")).join("\n");
}

export async function run(argv: string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { json: { type: "boolean", default: false }, tenant: { type: "string" }, help: { type: "boolean", short: "h" }, ...OPS_OPTIONS, ...VM_OPTIONS, ...POOL_OPTIONS },
  });
  if (values.help || positionals.length === 0) {
    io.out(USAGE);
    return positionals.length === 0 && !values.help ? 2 : 0;
  }
  let config: Config;
  try {
    config = loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) {
      io.err(`cvmctl: configuration error: ${err.message}`);
      return 78;
    }
    throw err;
  }
  const ops = await runOpsCommand(positionals, values, config, io, DB_FILE);
  if (ops !== undefined) return ops;
  const vm = await runVmCommand(positionals, values, config, io);
  if (vm !== undefined) return vm;
  const pool = await runPoolCommand(positionals, values, config, DB_FILE, io);
  if (pool !== undefined) return pool;
  const netns = await runNetnsCommand(positionals, config, io);
  if (netns !== undefined) return netns;
  const { mkdirSync } = await import("node:fs");
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const db = await Database.open(join(config.dataDir, DB_FILE));
  try {
    await db.migrate();
    const tenants = new TenantStore(db);
    const keys = new ApiKeyStore(db);
    const instances = new InstanceStore(db);
    const admin = { db, tenants, keys, clock: systemClock, pricing: config.pricing };
    const [cmd, sub, arg] = positionals;
    const need = (v: string | undefined, what: string): string => {
      if (!v) throw new UsageError(`missing ${what}`);
      return v;
    };

    if (cmd === "tenant" && sub === "create") {
      const { tenant, apiKey } = await createTenant(admin, need(arg, "SLUG"));
      if (values.json) io.out(JSON.stringify({ slug: tenant.slug, api_key: apiKey }));
      else io.out(`tenant ${tenant.slug} created\napi key (shown once): ${apiKey}`);
      return 0;
    }
    if (cmd === "tenant" && sub === "list") {
      const list = await tenants.list();
      if (values.json) io.out(JSON.stringify(list.map((t) => ({ slug: t.slug, created_at: isoSeconds(t.createdAt), suspended: t.suspendedAt !== null }))));
      else io.out(table([["SLUG", "CREATED", "SUSPENDED"], ...list.map((t) => [t.slug, isoSeconds(t.createdAt), t.suspendedAt ? "yes" : "no"])]));
      return 0;
    }
    if (cmd === "tenant" && (sub === "suspend" || sub === "resume")) {
      const slug = need(arg, "SLUG");
      const ok = await db.tx(() => tenants.setSuspended(slug, sub === "suspend" ? systemClock.now() : null));
      if (!ok) throw new TenantAdminError(`no tenant ${slug}`);
      io.out(`tenant ${slug} ${sub === "suspend" ? "suspended" : "resumed"}`);
      return 0;
    }
    if (cmd === "key" && sub === "create") {
      const key = await createKey(admin, need(arg, "SLUG"));
      if (values.json) io.out(JSON.stringify({ slug: arg, api_key: key }));
      else io.out(`api key (shown once): ${key}`);
      return 0;
    }
    if (cmd === "key" && sub === "list") {
      const tenant = await tenants.bySlug(need(arg, "SLUG"));
      if (!tenant) throw new TenantAdminError(`no tenant ${arg}`);
      const list = await keys.listForTenant(tenant.id);
      const state = (k: (typeof list)[number]) => (k.revokedAt && k.revokedAt <= systemClock.now() ? "revoked" : k.revokedAt ? `valid until ${isoSeconds(k.revokedAt)}` : "active");
      if (values.json) io.out(JSON.stringify(list.map((k) => ({ prefix: k.prefix, created_at: isoSeconds(k.createdAt), state: state(k) }))));
      else io.out(table([["PREFIX", "CREATED", "STATE"], ...list.map((k) => [k.prefix, isoSeconds(k.createdAt), state(k)])]));
      return 0;
    }
    if (cmd === "key" && sub === "revoke") {
      const prefix = need(arg, "PREFIX");
      const ok = await db.tx(() => keys.revoke(prefix, systemClock.now()));
      if (!ok) throw new TenantAdminError(`no active key with prefix ${prefix}`);
      io.out(`key ${prefix} revoked`);
      return 0;
    }
    if (cmd === "instances") {
      let tenantId: number | undefined;
      if (values.tenant) {
        const t = await tenants.bySlug(values.tenant);
        if (!t) throw new TenantAdminError(`no tenant ${values.tenant}`);
        tenantId = t.id;
      }
      const list = await instances.list({ tenantId });
      const slugs = new Map((await tenants.list()).map((t) => [t.id, t.slug]));
      const rows = list.map((i) => ({
        tenant: slugs.get(i.tenantId) ?? "?",
        name: i.name,
        status: i.status,
        created_at: isoSeconds(i.createdAt),
        failure_code: i.failureCode,
        ssh: i.ssh ? `${i.ssh.user}@${i.ssh.host}:${i.ssh.port}` : null,
      }));
      if (values.json) io.out(JSON.stringify(rows));
      else io.out(table([["TENANT", "NAME", "STATUS", "CREATED", "FAILURE", "SSH"], ...rows.map((r) => [r.tenant, r.name, r.status, r.created_at, r.failure_code ?? "-", r.ssh ?? "-"])]));
      return 0;
    }
    throw new UsageError(`unknown command: ${positionals.join(" ")}`);
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`cvmctl: ${err.message}\n\n${USAGE}`);
      return 2;
    }
    if (err instanceof TenantAdminError) {
      io.err(`cvmctl: ${err.message}`);
      return 1;
    }
    throw err;
  } finally {
    try {
      // A running cvmd caches credentials: it must drop them before we report success.
      if (db.changes.authWritten) await tellDaemonAuthChanged(config.dataDir);
    } finally {
      await db.close();
    }
  }
}


import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino, { type Logger } from "pino";
import { createKey, createTenant } from "../../host/auth/tenant-admin.js";
import { systemClock, type Clock } from "../../host/clock.js";
import { loadConfig, type Config } from "../../host/config.js";
import { startDaemon, type RunningDaemon } from "../../host/daemon.js";
import type { Driver } from "../../host/drivers/driver.js";
import type { EgressFirewall } from "../../host/net/egress-firewall.js";
import { ApiKeyStore } from "../../host/store/api-keys.js";
import { TenantStore } from "../../host/store/tenants.js";
import type { QuoteVerifier } from "../../shared/tdx/index.js";
import { testDatabaseEnv } from "./test-database.js";

export function tempDir(prefix = "cvm-test-"): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export interface TestDaemon extends RunningDaemon {
  config: Config;
  /** Creates a tenant through the same code path as `cvmctl tenant create`. */
  tenant(slug: string): Promise<{ slug: string; apiKey: string }>;
  key(slug: string): Promise<string>;
  fetch(path: string, init?: RequestInit & { key?: string }): Promise<{ status: number; headers: Headers; body: any }>;
}

/**
 * The real daemon (real database: the data dir's SQLite file, or its PostgreSQL database in the
 * "postgres" project, see test-database.ts; real HTTP on a loopback port) with a driver of the test's choice.
 */
export async function startTestDaemon(opts: {
  dataDir: string;
  driver: Driver;
  clock?: Clock;
  env?: Record<string, string>;
  egressFirewall?: EgressFirewall;
  quoteVerifier?: QuoteVerifier;
  /** Where the security stream goes (tests that assert on it capture it). */
  securityLog?: Logger;
}): Promise<TestDaemon> {
  // Test-double guests use no memory and no CPU: a budget and a boot limit no API test reaches, unless the test sets them.
  const env = { CVM_DATA_DIR: opts.dataDir, CVM_LISTEN: "127.0.0.1:0", CVM_LOG_LEVEL: "silent", CVM_CAPACITY_MEMORY_MIB: "1000000000", CVM_CAPACITY_VCPUS: "1000000", CVM_MAX_CONCURRENT_BOOTS: "1000", ...opts.env };
  const config = loadConfig({ ...(await testDatabaseEnv(env)), ...env });
  const clock = opts.clock ?? systemClock;
  const logger = pino({ level: process.env.CVM_TEST_LOG ?? "silent" });
  const d = await startDaemon(config, {
    driver: opts.driver,
    logger,
    securityLog: opts.securityLog,
    clock,
    egressFirewall: opts.egressFirewall,
    quoteVerifier: opts.quoteVerifier,
  });
  const admin = () => ({ db: d.db, tenants: new TenantStore(d.db), keys: new ApiKeyStore(d.db), clock, pricing: config.pricing });
  return {
    ...d,
    config,
    tenant: async (slug) => ({ slug, apiKey: (await createTenant(admin(), slug)).apiKey }),
    key: (slug) => createKey(admin(), slug),
    fetch: async (path, init = {}) => {
      const headers = new Headers(init.headers);
      if (init.key) headers.set("Authorization", `Bearer ${init.key}`);
      const res = await fetch(d.url + path, { ...init, headers });
      const text = await res.text();
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        /* left as text */
      }
      return { status: res.status, headers: res.headers, body };
    },
  };
}

import { Writable } from "node:stream";
import pino from "pino";
import { createKey, createTenant } from "../../host/auth/tenant-admin.js";
import { systemClock, type Clock } from "../../host/clock.js";
import { loadConfig, type Config } from "../../host/config.js";
import { startDaemon, type RunningDaemon } from "../../host/daemon.js";
import type { Driver } from "../../host/instances/driver.js";
import { ApiKeyStore } from "../../host/store/api-keys.js";
import { TenantStore } from "../../host/store/tenants.js";

export interface OpsDaemon extends RunningDaemon {
  config: Config;
  /** Every security-log record written so far (JSON objects). */
  security: Array<Record<string, unknown>>;
  tenant(slug: string): Promise<string>;
  key(slug: string): Promise<string>;
  fetch(path: string, init?: RequestInit & { key?: string }): Promise<{ status: number; headers: Headers; body: any }>;
}

/**
 * The real daemon in-process (real SQLite, real HTTP on loopback), like test/support's, but with
 * the security log captured so tests can assert what it recorded.
 */
export async function startOpsDaemon(opts: { dataDir: string; driver: Driver; clock?: Clock; env?: Record<string, string> }): Promise<OpsDaemon> {
  const config = loadConfig({ CVM_DATA_DIR: opts.dataDir, CVM_LISTEN: "127.0.0.1:0", CVM_LOG_LEVEL: "silent", ...opts.env });
  const clock = opts.clock ?? systemClock;
  const security: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split("\n")) if (line.trim()) security.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const d = await startDaemon(config, {
    driver: opts.driver,
    logger: pino({ level: process.env.CVM_TEST_LOG ?? "silent" }),
    securityLog: pino({ level: "info" }, sink),
    clock,
  });
  const admin = () => ({ db: d.db, tenants: new TenantStore(d.db), keys: new ApiKeyStore(d.db), clock, pricing: config.pricing });
  return {
    ...d,
    config,
    security,
    tenant: async (slug) => (await createTenant(admin(), slug)).apiKey,
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

export async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 25));
  }
}

export const jsonPost = (body: unknown, headers: Record<string, string> = {}) => ({
  method: "POST",
  headers: { "Content-Type": "application/json", ...headers },
  body: JSON.stringify(body),
});

import { Writable } from "node:stream";
import pino, { type Logger } from "pino";
import type { Clock } from "../../host/clock.js";
import type { Driver } from "../../host/drivers/driver.js";
import type { EgressFirewall } from "../../host/net/egress-firewall.js";
import { startTestDaemon, type TestDaemon } from "../support/daemon.js";

export interface OpsDaemon extends Omit<TestDaemon, "tenant"> {
  /** Every security-log record written so far (JSON objects). */
  security: Array<Record<string, unknown>>;
  /** The logger behind `security`, for components a test builds beside the daemon (as main.ts does). */
  securityLog: Logger;
  /** Creates a tenant and returns its first API key. */
  tenant(slug: string): Promise<string>;
}

/** startTestDaemon with the security log captured, so tests can assert what it recorded. */
export async function startOpsDaemon(opts: { dataDir: string; driver: Driver; clock?: Clock; env?: Record<string, string>; egressFirewall?: EgressFirewall }): Promise<OpsDaemon> {
  const security: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split("\n")) if (line.trim()) security.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const securityLog = pino({ level: "info" }, sink);
  const d = await startTestDaemon({ ...opts, securityLog });
  const createTenant = d.tenant;
  return { ...d, security, securityLog, tenant: async (slug: string) => (await createTenant(slug)).apiKey };
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

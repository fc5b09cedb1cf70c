import { mkdirSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import type { Logger } from "pino";
import { buildApp } from "./api/app.js";
import { systemClock, type Clock } from "./clock.js";
import type { Config } from "./config.js";
import type { Driver } from "./instances/driver.js";
import { LifecycleEngine } from "./instances/engine.js";
import { ApiKeyStore } from "./store/api-keys.js";
import { Database } from "./store/db.js";
import { IdempotencyStore } from "./store/idempotency.js";
import { InstanceStore } from "./store/instances.js";
import { TenantStore } from "./store/tenants.js";

export interface DaemonDeps {
  driver: Driver;
  logger: Logger;
  securityLog?: Logger;
  clock?: Clock;
}

export interface RunningDaemon {
  url: string;
  port: number;
  db: Database;
  engine: LifecycleEngine;
  /** Drains HTTP, stops waiting on guests (they keep running), closes the database. */
  close(): Promise<void>;
}

export const DB_FILE = "cvm.sqlite";

/** Version from our package.json, found by walking up (the same code runs from host/ and dist/host/). */
export function packageVersion(): string {
  for (let url = new URL("./package.json", import.meta.url), i = 0; i < 4; i++, url = new URL("../package.json", url)) {
    try {
      const pkg = JSON.parse(readFileSync(url, "utf8")) as { name?: string; version?: string };
      if (pkg.name === "cvm" && pkg.version) return pkg.version;
    } catch {
      /* keep walking */
    }
  }
  return "0.0.0";
}

export async function startDaemon(config: Config, deps: DaemonDeps): Promise<RunningDaemon> {
  const clock = deps.clock ?? systemClock;
  const log = deps.logger;
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const db = await Database.open(join(config.dataDir, DB_FILE));
  const version = await db.migrate();
  log.info({ schema_version: version, data_dir: config.dataDir }, "database ready");

  const tenants = new TenantStore(db);
  const keys = new ApiKeyStore(db);
  const instances = new InstanceStore(db);
  const idempotency = new IdempotencyStore(db);
  const engine = new LifecycleEngine({
    db,
    instances,
    idempotency,
    driver: deps.driver,
    clock,
    logger: log.child({ component: "engine" }),
    baseDomain: config.baseDomain,
    egressLimitBytes: config.egressLimitBytes,
    tenantSlug: async (id) => (await tenants.byId(id))?.slug ?? "unknown",
  });

  let draining = false;
  const { app } = buildApp({
    logger: log.child({ component: "api" }),
    securityLog: deps.securityLog ?? log.child({ stream: "security" }),
    clock,
    tenants,
    keys,
    instances,
    engine,
    catalogue: config.catalogue,
    baseDomain: config.baseDomain,
    version: packageVersion(),
    draining: () => draining,
    usage: {
      egressLimitBytes: config.egressLimitBytes,
      inferenceCostUsd: async () => "0.00",
      egress: async () => ({ bytes: 0, observedAt: null, blocked: false, blockAppliedAt: null }),
    },
  });

  await engine.recover();

  const server: Server = createServer(app.callback());
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.listen.port, config.listen.host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : config.listen.port;
  const host = config.listen.host.includes(":") ? `[${config.listen.host}]` : config.listen.host;
  const url = `http://${host}:${port}`;
  log.info({ url, driver: deps.driver.name }, "cvmd listening");

  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= (async () => {
      draining = true;
      const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      await Promise.race([serverClosed, new Promise((r) => setTimeout(r, config.shutdownGraceMs).unref())]);
      server.closeAllConnections();
      await engine.close();
      await deps.driver.close?.();
      await db.close();
      log.info("cvmd stopped; guests left running for the next start to adopt");
    })());

  return { url, port, db, engine, close };
}

import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "pino";
import { buildApp } from "./api/app.js";
import { systemClock, type Clock } from "./clock.js";
import { ConfigError, type Config } from "./config.js";
import type { Driver } from "./drivers/driver.js";
import { LifecycleEngine } from "./instances/engine.js";
import { BootQueue } from "./instances/boot-queue.js";
import { Capacity } from "./instances/capacity.js";
import { WarmPool } from "./instances/warm-pool.js";
import { UnavailableDriver } from "./drivers/unavailable-driver.js";
import { PoolGuestStore, SettingsStore } from "./store/pool-guests.js";
import { AttestationService, buildCollateralProvider, type ConfiguredCollateralProvider } from "./attest/index.js";
import { QuoteVerifier } from "../shared/tdx/index.js";
import { ImageCatalog } from "./images/image-catalog.js";
import { ApiKeyStore } from "./store/api-keys.js";
import { Database, withoutPassword } from "./store/db.js";
import { IdempotencyStore } from "./store/idempotency.js";
import { InstanceStore } from "./store/instances.js";
import { TenantStore } from "./store/tenants.js";
import { EgressStore } from "./store/egress.js";
import { InferenceGateway } from "./gateway/index.js";
import { EgressMonitor } from "./net/egress-monitor.js";
import { Scheduler } from "./jobs/scheduler.js";
import { startDns } from "./dns/dns-service.js";
import type { EgressFirewall } from "./net/egress-firewall.js";
import { TrustedProxies } from "./api/middleware/client-address.js";
import { startControlSocket } from "./ops/control-socket.js";
import { acquireDaemonLock } from "./ops/daemon-lock.js";
import { Metrics } from "./ops/metrics.js";
import { OperatorActions } from "./ops/operator-actions.js";
import { startOperatorListener } from "./ops/operator-listener.js";
import { RateLimiter } from "./api/middleware/rate-limit.js";
import { createTenantServer, readTlsPair, type TlsPair } from "./api/server.js";
import { AsyncDisposableStack } from "../shared/util/async-disposable-stack.js";

export interface DaemonDeps {
  driver: Driver;
  logger: Logger;
  securityLog?: Logger;
  clock?: Clock;
  /** Given by main.ts so that components it builds (driver, pool, attestation) report into the same registry. */
  metrics?: Metrics;
  /** The host's egress enforcement (shared with the driver, which installs each instance's rules). */
  egressFirewall?: EgressFirewall;
  /** Quote verifier; tests give one that pins a test PKI root. Default: Intel's root, one warm cache. */
  quoteVerifier?: QuoteVerifier;
}

export interface RunningDaemon {
  url: string;
  port: number;
  db: Database;
  engine: LifecycleEngine;
  /** Null when the driver cannot keep pre-booted guests. */
  pool: WarmPool | null;
  metrics: Metrics;
  /** Port of the embedded DNS server, when CVM_DNS_LISTEN is set. */
  dnsPort: number | null;
  /** Egress sampling; null when the host has no firewall (CVM_DRIVER=none). */
  egress: EgressMonitor | null;
  /** The operator listener (`/metrics`), when CVM_METRICS_LISTEN is set. */
  metricsUrl: string | null;
  /** Re-reads CVM_TLS_CERT/CVM_TLS_KEY (SIGHUP); rejects, keeping the old pair, when they are bad. */
  reloadTls(): Promise<void>;
  /** Drains HTTP, stops waiting on guests (they keep running), closes the database. */
  close(): Promise<void>;
}

export const DB_FILE = "cvm.sqlite";

/**
 * The database `config` names: PostgreSQL at CVM_DATABASE_URL, else the SQLite file `dbFile` in the
 * data dir. On PostgreSQL, key and tenant changes are signalled through a file in the data dir,
 * which cvmd and cvmctl share as they share the SQLite file's (see ChangeTracker).
 */
export function openDatabase(config: Config, opts: { dbFile?: string; readonly?: boolean; busyTimeoutMs?: number } = {}): Promise<Database> {
  const { dbFile, ...open } = opts;
  if (config.databaseUrl) return Database.openPostgres(config.databaseUrl, { changeFile: join(config.dataDir, "postgres-authgen"), ...open });
  return Database.open(join(config.dataDir, dbFile ?? DB_FILE), open);
}

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

/**
 * Starts cvmd in two stages. First everything that can refuse without changing anything (the TLS
 * pair, the attestation collateral), so that an operator's mistake there exits before the data dir
 * is locked or a guest is adopted. Then each resource that is started goes onto one stack, which a
 * failure at any later step unwinds, releasing all that came before it, and which close() unwinds
 * the same way.
 */
export async function startDaemon(config: Config, deps: DaemonDeps): Promise<RunningDaemon> {
  const prepared = await prepare(config, deps);
  const stack = new AsyncDisposableStack();
  try {
    return await launch(config, deps, prepared, stack);
  } catch (err) {
    // The start-up error is what the operator must see (and what picks the exit code); a release
    // that fails as well is only logged.
    await stack.disposeAsync().catch((releaseErr: unknown) => deps.logger.error({ err: releaseErr }, "start-up failed, and releasing what it had started failed too"));
    throw err;
  }
}

interface Prepared {
  tls: TlsPair | null;
  collateral: ConfiguredCollateralProvider;
}

/** Stage one: reads and checks, no side effects; a refusal here leaves nothing to release. */
async function prepare(config: Config, deps: DaemonDeps): Promise<Prepared> {
  const clock = deps.clock ?? systemClock;
  const log = deps.logger;
  const tls = config.tls
    ? await readTlsPair(config.tls).catch((err: Error) => Promise.reject(new ConfigError(/CVM_TLS_KEY/.test(err.message) ? "CVM_TLS_KEY" : "CVM_TLS_CERT", err.message)))
    : null;
  const collateral = await buildCollateralProvider(config.attestation, { now: () => clock.now().getTime(), logger: log.child({ component: "attest" }) });
  log.info({ collateral_file: config.attestation.collateralFile, pccs_host: config.attestation.pccsUrl ? new URL(config.attestation.pccsUrl).host : null, accept_tcb_status: config.attestation.acceptTcbStatuses }, collateral.configured ? "attestation collateral source" : "no attestation collateral source configured");
  return { tls, collateral };
}

/** Runs `fn`; a failure with one of `codes` becomes a ConfigError that names the setting at fault. */
async function namingSetting<T>(setting: string, value: string, codes: string[], fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code && codes.includes(code)) throw new ConfigError(setting, `${setting}=${value}: ${(err as Error).message}`);
    throw err;
  }
}

/**
 * Stage two: starts the resources in order, each put on `stack` as soon as it holds something.
 * The stack unwinds last to first, so the order of registration is the order of shutdown reversed:
 * tenant HTTP drains first, then the operator's listeners, the jobs, the pool and the engine (which
 * stop waiting on guests and leave them running), the gateway, the driver's channels, DNS, the
 * database, and last the data dir lock.
 */
async function launch(config: Config, deps: DaemonDeps, { tls, collateral }: Prepared, stack: AsyncDisposableStack): Promise<RunningDaemon> {
  const clock = deps.clock ?? systemClock;
  const log = deps.logger;
  // One cvmd per data dir: two would adopt, and fight over, the same guests.
  const lock = await namingSetting("CVM_DATA_DIR", config.dataDir, ["EROFS", "EACCES", "EPERM", "ENOTDIR", "ENOSPC"], async () => {
    mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
    return acquireDaemonLock(config.dataDir);
  });
  stack.defer(() => lock.release());
  // What no restart mends: a file SQLite may not open or write; a PostgreSQL password, role or
  // database that is wrong (28P01, 28000, 3D000), a role without the right to create the tables
  // (42501), a host name that does not resolve.
  const dbSettingCodes = ["SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "EROFS", "EACCES", "28P01", "28000", "3D000", "42501", "ENOTFOUND"];
  const [dbSetting, dbValue] = config.databaseUrl ? ["CVM_DATABASE_URL", withoutPassword(config.databaseUrl)] : ["CVM_DATA_DIR", config.dataDir];
  const db = await namingSetting(dbSetting, dbValue, dbSettingCodes, () => openDatabase(config));
  stack.defer(() => db.close());
  const version = await namingSetting(dbSetting, dbValue, dbSettingCodes, () => db.migrate());
  log.info({ schema_version: version, data_dir: config.dataDir, database: db.dialect === "postgres" ? db.path : join(config.dataDir, DB_FILE) }, "database ready");

  const tenants = new TenantStore(db);
  const keys = new ApiKeyStore(db);
  const instances = new InstanceStore(db);
  const idempotency = new IdempotencyStore(db);
  const egressStore = new EgressStore(db);
  const securityLog = deps.securityLog ?? log.child({ stream: "security" });
  const gateway = new InferenceGateway({ db, catalogue: config.catalogue, clock, logger: log.child({ component: "gateway" }), securityLog, limits: config.gatewayLimits });
  const cvmdVersion = packageVersion();
  const metrics = deps.metrics ?? new Metrics({ processMetrics: config.metricsListen !== null, version: cvmdVersion });
  instances.observe((e) => metrics.onInstanceEvent(e));
  metrics.countInstancesWith(() => instances.countByStatus());
  metrics.egressWith(() => egressStore.hostTotals());
  const dns = await startDns(config.dns, { baseDomain: config.baseDomain, tenants, instances, logger: log.child({ component: "dns" }), now: () => clock.now() });
  stack.defer(() => dns.close());
  if (dns.server) log.info({ listen: `${config.dns.listen?.host}:${dns.server.port}` }, "dns server up");
  // A driver that cannot provision holds nothing: its creates fail with driver_unavailable, not for capacity.
  const capacity = deps.driver instanceof UnavailableDriver ? undefined : new Capacity(config.capacity, { memoryMiB: config.vm.memoryMiB, vcpus: config.vm.vcpus }, instances);
  const poolGuests = new PoolGuestStore(db);
  const boots = new BootQueue(config.maxConcurrentBoots);
  const pool =
    deps.driver.warm && capacity
    ? new WarmPool({
        db,
        guests: poolGuests,
        settings: new SettingsStore(db),
        instances,
        driver: deps.driver.warm,
        capacity,
        boots,
        clock,
        logger: log.child({ component: "pool" }),
        egressLimitBytes: config.egressLimitBytes,
        defaultSize: config.warmPool.defaultSize,
        onWarmCount: (n) => metrics.setWarmPoolSize(n),
      })
    : null;
  if (!pool && config.warmPool.defaultSize > 0) log.warn({ driver: deps.driver.name }, "CVM_WARM_POOL_SIZE is set but this driver cannot keep a warm pool; every create cold-starts");
  const engine = new LifecycleEngine({
    db,
    dns,
    capacity,
    pool: pool ?? undefined,
    boots,
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
    securityLog,
    clock,
    keys,
    instances,
    engine,
    catalogue: config.catalogue,
    baseDomain: config.baseDomain,
    version: cvmdVersion,
    draining: () => draining,
    metrics,
    rateLimiter: new RateLimiter(config.rateLimit, { securityLog, metrics }),
    trustedProxies: new TrustedProxies(config.trustedProxies),
    images: new ImageCatalog({ dir: config.vm.imageDir, logger: log.child({ component: "images" }) }),
    attestation: new AttestationService({
      verifier: deps.quoteVerifier ?? new QuoteVerifier(),
      collateral,
      clock,
      metrics,
      acceptTcbStatuses: config.attestation.acceptTcbStatuses,
    }),
    usage: {
      egressLimitBytes: config.egressLimitBytes,
      inferenceCostUsd: (tenantId, from, to) => gateway.costUsd(tenantId, from, to),
      egress: (tenantId) => egressStore.tenantSummary(tenantId),
    },
  });

  const egress = deps.egressFirewall
    ? new EgressMonitor({
        db,
        firewall: deps.egressFirewall,
        egress: egressStore,
        instances,
        clock,
        logger: log.child({ component: "egress" }),
        securityLog,
        unbilled: async () =>
          (await poolGuests.live()).flatMap((g) => (typeof g.runtime?.tap === "string" ? [{ id: g.id, tap: g.runtime.tap, limitBytes: config.egressLimitBytes }] : [])),
      })
    : null;
  deps.driver.bindHostServices?.({
    gateway,
    onGuestEgress: (id, s) => egress?.recordGuestSample(id, s),
    securityLog,
  });
  // Registered before the gateway so that it closes after it: the gateway's last answers, cut short
  // by its close, still have a channel to reach their guests on.
  stack.defer(() => deps.driver.close?.());
  stack.defer(() => gateway.close());
  // Egress rules first: an adopted guest must never run a moment without its cap.
  await egress?.reconcile();
  stack.defer(() => engine.close());
  await engine.recover();
  // Pool guests after instances: a guest an instance claimed is the instance's, and adoption of the
  // rest must see the capacity the instances already hold.
  if (pool) {
    stack.defer(() => pool.close());
    await pool.start();
  }
  dns.sync().then(
    (r) => r.failed.forEach((f) => log.warn({ hostname: f.hostname, err: f.error.message }, "dns record not repaired")),
    (err) => log.error({ err }, "dns sync failed"),
  );
  const scheduler = new Scheduler(log.child({ component: "jobs" }));
  stack.defer(() => scheduler.stop());
  if (egress) {
    scheduler.add({ name: "egress-poll", schedule: `*/${config.egressPollSeconds} * * * * *`, run: () => egress.pollOnce() });
    scheduler.add({ name: "egress-history-prune", schedule: "17 3 * * *", run: () => egress.pruneHistory(30 * 24 * 3600_000) });
  }
  if (pool) {
    scheduler.add({ name: "warm-pool-refill", schedule: `*/${config.warmPool.refillSeconds} * * * * *`, run: () => pool.refillNow() });
    scheduler.add({ name: "warm-pool-history-prune", schedule: "27 3 * * *", run: () => poolGuests.pruneEnded(new Date(clock.now().getTime() - 7 * 24 * 3600_000)) });
  }
  scheduler.add({ name: "idempotency-expiry", schedule: "7 * * * *", run: () => idempotency.expire(new Date(clock.now().getTime() - 24 * 3600_000)) });

  const control = await startControlSocket(config.dataDir, {
    actions: new OperatorActions({ db, tenants, instances, clock, engine }),
    pool,
    logger: log.child({ component: "control" }),
    version: cvmdVersion,
    authChanged: () => db.changes.externalAuthChange(),
  });
  // cvmctl now reports its key and tenant changes here before it exits (tellDaemonAuthChanged):
  // authentication no longer needs to look at the change file on every request.
  if (control) {
    stack.defer(() => control.close());
    db.changes.notifiedByOthers();
  }
  const operator = config.metricsListen ? await startOperatorListener(config.metricsListen, { metrics, logger: log.child({ component: "metrics" }) }) : null;
  if (operator) {
    stack.defer(() => operator.close());
    log.info({ url: operator.url }, "metrics listener up");
  }

  const tenantServer = createTenantServer(tls, app.callback());
  const server = tenantServer.server;
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.listen.port, config.listen.host, () => resolve());
  }).catch((err: unknown) => {
    // An address this host does not have, a name that does not resolve, a port it may not bind:
    // no restart mends those. (EADDRINUSE may pass, a previous cvmd still closing; left as is.)
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EADDRNOTAVAIL" || code === "ENOTFOUND" || code === "EACCES" || code === "EAFNOSUPPORT") {
      throw new ConfigError("CVM_LISTEN", `CVM_LISTEN=${config.listen.host}:${config.listen.port}: ${(err as Error).message}`);
    }
    throw err;
  });
  stack.defer(async () => {
    draining = true;
    const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    await Promise.race([serverClosed, new Promise((r) => setTimeout(r, config.shutdownGraceMs).unref())]);
    server.closeAllConnections();
  });
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : config.listen.port;
  const host = config.listen.host.includes(":") ? `[${config.listen.host}]` : config.listen.host;
  const url = `${tenantServer.scheme}://${host}:${port}`;
  log.info({ url, driver: deps.driver.name }, "cvmd listening");

  // From here the running daemon owns what was started; close() is its one way out.
  const owned = stack.move();
  let closed: Promise<void> | undefined;
  const close = () => (closed ??= owned.disposeAsync().then(() => log.info("cvmd stopped; guests left running for the next start to adopt")));

  return { url, port, db, engine, pool, metrics, egress, dnsPort: dns.server?.port ?? null, metricsUrl: operator?.url ?? null, reloadTls: tenantServer.reloadTls, close };
}

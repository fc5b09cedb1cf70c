import { existsSync } from "node:fs";
import { join } from "node:path";
import { systemClock } from "../clock.js";
import type { Config } from "../config.js";
import { backupDatabase, BackupError, restoreDatabase } from "../ops/backup.js";
import { controlRequest, controlSocketPath, socketAnswers } from "../ops/control-socket.js";
import { acquireDataDirLock, DataDirBusyError } from "../ops/daemon-lock.js";
import { parseDuration } from "../ops/durations.js";
import { rotateKey } from "../ops/key-rotation.js";
import { OperatorActionError, OperatorActions, type InstanceSummary } from "../ops/operator-actions.js";
import { ApiKeyStore } from "../store/api-keys.js";
import { Database } from "../store/db.js";
import { InstanceStore } from "../store/instances.js";
import { TenantStore } from "../store/tenants.js";
import { isoSeconds } from "../../shared/api/schemas.js";
import { UsageError, withDb, type CliContext } from "./context.js";

// The operator commands of issue 10: key rotation, instance teardown, backup and restore.

function duration(text: string, flag: string): number {
  try {
    return parseDuration(text);
  } catch (err) {
    throw new UsageError(`${flag}: ${(err as Error).message}`);
  }
}

export function keyRotate(ctx: CliContext, prefix: string, o: { grace?: string; json?: boolean }): Promise<number> {
  const graceMs = o.grace === undefined ? 24 * 3_600_000 : duration(o.grace, "--grace");
  return withDb(ctx.config(), ctx.dbFile, async (db) => {
    const r = await rotateKey({ db, keys: new ApiKeyStore(db), clock: systemClock }, prefix, graceMs);
    if (o.json) ctx.io.out(JSON.stringify({ api_key: r.apiKey, old_prefix: prefix, old_key_valid_until: r.oldKeyValidUntil.toISOString() }));
    else ctx.io.out(`new api key (shown once): ${r.apiKey}\nkey ${prefix} stays valid until ${isoSeconds(r.oldKeyValidUntil)}`);
    return 0;
  });
}

export async function instanceDelete(ctx: CliContext, name: string, o: { tenant: string; json?: boolean }): Promise<number> {
  const r = await operatorAction<{ instance: InstanceSummary }>(ctx, "/v1/instances/delete", { tenant: o.tenant, name }, (a) =>
    a.deleteInstance(o.tenant, name).then((instance) => ({ instance })),
  );
  report(ctx, [r.value.instance], r.via, o.json === true, false);
  return 0;
}

export async function instanceCleanup(ctx: CliContext, o: { olderThan?: string; json?: boolean }): Promise<number> {
  const olderThanMs = o.olderThan === undefined ? 0 : duration(o.olderThan, "--older-than");
  const r = await operatorAction<{ instances: InstanceSummary[] }>(ctx, "/v1/instances/cleanup-failed", { older_than_ms: olderThanMs }, (a) =>
    a.cleanupFailed(olderThanMs).then((instances) => ({ instances })),
  );
  report(ctx, r.value.instances, r.via, o.json === true, true);
  return 0;
}

function report(ctx: CliContext, result: InstanceSummary[], via: "cvmd" | "offline", json: boolean, cleanup: boolean): void {
  if (json) {
    ctx.io.out(JSON.stringify(result));
    return;
  }
  for (const i of result) ctx.io.out(`${i.tenant}/${i.name}: ${i.status}`);
  if (cleanup) ctx.io.out(`${result.length} failed instance(s) deleted`);
  if (via === "offline") ctx.io.out("cvmd is not running: marked terminating; cvmd finishes the teardown when it starts");
}

/** `cvmctl backup` and `restore` copy the SQLite file; a PostgreSQL database has its own tools. */
function refusePostgres(config: Config, command: "backup" | "restore"): void {
  if (config.databaseUrl) throw new BackupError(`CVM_DATABASE_URL names a PostgreSQL database, which cvmctl ${command} does not handle (it copies the SQLite file): use PostgreSQL's own tools (pg_dump, pg_restore)`);
}

export async function backup(ctx: CliContext, file: string): Promise<number> {
  const config = ctx.config();
  refusePostgres(config, "backup");
  if (!existsSync(join(config.dataDir, ctx.dbFile))) throw new BackupError(`no database in ${config.dataDir}`);
  // Our own connection to the same file: the backup API reads a consistent snapshot even while
  // cvmd (another process) keeps writing.
  const db = await Database.open(join(config.dataDir, ctx.dbFile));
  try {
    const s = await backupDatabase(db, file);
    ctx.io.out(`backup written to ${file}: schema ${s.schemaVersion}, ${s.tenants} tenants, ${s.instances} instances`);
    return 0;
  } finally {
    await db.close();
  }
}

export async function restore(ctx: CliContext, file: string): Promise<number> {
  const config = ctx.config();
  refusePostgres(config, "restore");
  const r = await restoreDatabase(config.dataDir, ctx.dbFile, file, systemClock.now());
  ctx.io.out(`restored ${file}: schema ${r.schemaVersion}, ${r.tenants} tenants, ${r.instances} instances`);
  if (r.previous) ctx.io.out(`previous database kept as ${r.previous}`);
  ctx.io.out("on its next start cvmd adopts the guests that still run and fails or cleans the rest");
  return 0;
}

/**
 * Runs an action through the running cvmd (its control socket, so the engine does the teardown),
 * or, when no cvmd runs on this data dir, records the transition directly for the next start.
 */
async function operatorAction<T>(ctx: CliContext, path: string, body: unknown, offline: (a: OperatorActions) => Promise<T>): Promise<{ value: T; via: "cvmd" | "offline" }> {
  const config: Config = ctx.config();
  const socket = controlSocketPath(config.dataDir);
  if (await socketAnswers(socket)) return { value: await controlRequest<T>(socket, "POST", path, body), via: "cvmd" };
  let lock: { release(): void };
  try {
    // Held while we write, so a cvmd starting meanwhile waits and its recover() sees our change.
    lock = acquireDataDirLock(config.dataDir, "cvmctl");
  } catch (err) {
    if (!(err instanceof DataDirBusyError)) throw err;
    throw new OperatorActionError(`${err.holder.role} (pid ${err.holder.pid}) holds ${config.dataDir} but its control socket ${socket} does not answer`);
  }
  try {
    return {
      value: await withDb(config, ctx.dbFile, (db) => offline(new OperatorActions({ db, tenants: new TenantStore(db), instances: new InstanceStore(db), clock: systemClock }))),
      via: "offline",
    };
  } finally {
    lock.release();
  }
}

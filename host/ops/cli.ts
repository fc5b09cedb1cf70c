import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { systemClock } from "../clock.js";
import type { Config } from "../config.js";
import { Database } from "../store/db.js";
import { ApiKeyStore } from "../store/api-keys.js";
import { InstanceStore } from "../store/instances.js";
import { TenantStore } from "../store/tenants.js";
import { isoSeconds } from "../../shared/api/types.js";
import { backupDatabase, BackupError, restoreDatabase } from "./backup.js";
import { controlRequest, controlSocketPath, socketAnswers, tellDaemonAuthChanged } from "./control-socket.js";
import { acquireDataDirLock, DataDirBusyError } from "./daemon-lock.js";
import { parseDuration } from "./durations.js";
import { KeyRotationError, rotateKey } from "./key-rotation.js";
import { OperatorActionError, OperatorActions, type InstanceSummary } from "./operator-actions.js";

export const OPS_USAGE = `  key rotate PREFIX [--grace 24h] [--json]
                                  new key for the same tenant (printed once); the old one
                                  stays valid for the grace period (default 24h; 0s = now)
  instance delete --tenant SLUG NAME
                                  delete an instance, as DELETE /v1/instances/NAME does
  instance cleanup --failed [--older-than D]
                                  delete failed instances whose failure is older than D (default 0s)
  backup FILE                     consistent copy of the database, safe while cvmd runs
  restore FILE                    replace the database with a backup (cvmd must be stopped)`;

/** parseArgs option definitions these commands need (merged into cvmctl's). */
export const OPS_OPTIONS = {
  grace: { type: "string" },
  failed: { type: "boolean", default: false },
  "older-than": { type: "string" },
} as const;

export interface OpsIo {
  out(line: string): void;
  err(line: string): void;
}

export interface OpsValues {
  json?: boolean;
  tenant?: string;
  grace?: string;
  failed?: boolean;
  "older-than"?: string;
}

class OpsUsageError extends Error {}

/**
 * cvmctl's operator commands from issue 10. Returns an exit code, or undefined when the command is
 * not one of these (cvmctl's own dispatcher handles it).
 */
export async function runOpsCommand(positionals: string[], values: OpsValues, config: Config, io: OpsIo, dbFile: string): Promise<number | undefined> {
  const [cmd, sub, arg] = positionals;
  const known =
    (cmd === "key" && sub === "rotate") || (cmd === "instance" && (sub === "delete" || sub === "cleanup")) || cmd === "backup" || cmd === "restore";
  if (!known) return undefined;
  try {
    if (cmd === "backup" || cmd === "restore") {
      const file = sub;
      if (!file || positionals.length > 2) throw new OpsUsageError(`usage: cvmctl ${cmd} FILE`);
      if (cmd === "backup") return await backup(config, dbFile, file, io);
      const r = await restoreDatabase(config.dataDir, dbFile, file, systemClock.now());
      io.out(`restored ${file}: schema ${r.schemaVersion}, ${r.tenants} tenants, ${r.instances} instances`);
      if (r.previous) io.out(`previous database kept as ${r.previous}`);
      io.out("on its next start cvmd adopts the guests that still run and fails or cleans the rest");
      return 0;
    }
    if (cmd === "key") {
      if (!arg) throw new OpsUsageError("missing PREFIX");
      const graceMs = values.grace === undefined ? 24 * 3_600_000 : duration(values.grace, "--grace");
      return await withDb(config, dbFile, async (db) => {
        const r = await rotateKey({ db, keys: new ApiKeyStore(db), clock: systemClock }, arg, graceMs);
        if (values.json) io.out(JSON.stringify({ api_key: r.apiKey, old_prefix: arg, old_key_valid_until: r.oldKeyValidUntil.toISOString() }));
        else io.out(`new api key (shown once): ${r.apiKey}\nkey ${arg} stays valid until ${isoSeconds(r.oldKeyValidUntil)}`);
        return 0;
      });
    }
    // instance delete | cleanup
    let result: InstanceSummary[];
    let via: string;
    if (sub === "delete") {
      if (!values.tenant || !arg || positionals.length > 3) throw new OpsUsageError("usage: cvmctl instance delete --tenant SLUG NAME");
      const r = await operatorAction<{ instance: InstanceSummary }>(config, dbFile, "/v1/instances/delete", { tenant: values.tenant, name: arg }, (a) =>
        a.deleteInstance(values.tenant!, arg).then((instance) => ({ instance })),
      );
      result = [r.value.instance];
      via = r.via;
    } else {
      if (!values.failed) throw new OpsUsageError("usage: cvmctl instance cleanup --failed [--older-than D]");
      const olderThanMs = values["older-than"] === undefined ? 0 : duration(values["older-than"], "--older-than");
      const r = await operatorAction<{ instances: InstanceSummary[] }>(config, dbFile, "/v1/instances/cleanup-failed", { older_than_ms: olderThanMs }, (a) =>
        a.cleanupFailed(olderThanMs).then((instances) => ({ instances })),
      );
      result = r.value.instances;
      via = r.via;
    }
    if (values.json) io.out(JSON.stringify(result));
    else {
      for (const i of result) io.out(`${i.tenant}/${i.name}: ${i.status}`);
      if (sub === "cleanup") io.out(`${result.length} failed instance(s) deleted`);
      if (via === "offline") io.out("cvmd is not running: marked terminating; cvmd finishes the teardown when it starts");
    }
    return 0;
  } catch (err) {
    if (err instanceof OpsUsageError) {
      io.err(`cvmctl: ${err.message}`);
      return 2;
    }
    if (err instanceof BackupError || err instanceof KeyRotationError || err instanceof OperatorActionError) {
      io.err(`cvmctl: ${err.message}`);
      return 1;
    }
    throw err;
  }
}

function duration(text: string, flag: string): number {
  try {
    return parseDuration(text);
  } catch (err) {
    throw new OpsUsageError(`${flag}: ${(err as Error).message}`);
  }
}

/** Opens (and migrates) the data dir's database for one offline operation. */
export async function withDb<T>(config: Config, dbFile: string, fn: (db: Database) => Promise<T>): Promise<T> {
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const db = await Database.open(join(config.dataDir, dbFile));
  try {
    await db.migrate();
    return await fn(db);
  } finally {
    try {
      // A running cvmd caches credentials (key rotate): it must drop them before we report success.
      if (db.changes.authWritten) await tellDaemonAuthChanged(config.dataDir);
    } finally {
      await db.close();
    }
  }
}

async function backup(config: Config, dbFile: string, file: string, io: OpsIo): Promise<number> {
  if (!existsSync(join(config.dataDir, dbFile))) throw new BackupError(`no database in ${config.dataDir}`);
  // Our own connection to the same file: the backup API reads a consistent snapshot even while
  // cvmd (another process) keeps writing.
  const db = await Database.open(join(config.dataDir, dbFile));
  try {
    const s = await backupDatabase(db, file);
    io.out(`backup written to ${file}: schema ${s.schemaVersion}, ${s.tenants} tenants, ${s.instances} instances`);
    return 0;
  } finally {
    await db.close();
  }
}

/**
 * Runs an action through the running cvmd (its control socket, so the engine does the teardown),
 * or, when no cvmd runs on this data dir, records the transition directly for the next start.
 */
async function operatorAction<T>(config: Config, dbFile: string, path: string, body: unknown, offline: (a: OperatorActions) => Promise<T>): Promise<{ value: T; via: "cvmd" | "offline" }> {
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
      value: await withDb(config, dbFile, (db) => offline(new OperatorActions({ db, tenants: new TenantStore(db), instances: new InstanceStore(db), clock: systemClock }))),
      via: "offline",
    };
  } finally {
    lock.release();
  }
}

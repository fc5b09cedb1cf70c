import { copyFileSync, existsSync, fsyncSync, openSync, closeSync, renameSync, rmSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { Database, makeDatabasePrivate } from "../store/db.js";
import { MIGRATIONS } from "../store/migrations.js";
import { controlSocketPath, socketAnswers } from "./control-socket.js";
import { acquireDataDirLock, DataDirBusyError, lockHolder } from "./daemon-lock.js";

export class BackupError extends Error {
  override name = "BackupError";
}

export interface DatabaseSummary {
  schemaVersion: number;
  tenants: number;
  instances: number;
}

function fsyncPath(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Makes a copy self-contained: a WAL-mode file needs its -wal/-shm beside it, even to be read, so
 * backups are stored in rollback-journal mode (cvmd switches its database back to WAL on open).
 */
async function detachFromWal(path: string): Promise<void> {
  const db = await Database.open(path);
  try {
    await db.exec("PRAGMA journal_mode = DELETE");
  } finally {
    await db.close();
  }
  for (const suffix of ["-wal", "-shm"]) rmSync(path + suffix, { force: true });
}

/** Opens a database file read-only and checks that it is whole and a cvm database this build can run. */
export async function inspectDatabase(path: string): Promise<DatabaseSummary> {
  if (!existsSync(path)) throw new BackupError(`${path}: no such file`);
  let db: Database;
  try {
    db = await Database.open(path, { readonly: true });
  } catch (err) {
    throw new BackupError(`${path}: cannot open as SQLite: ${(err as Error).message}`);
  }
  try {
    const check = await db.get<{ integrity_check: string }>("PRAGMA integrity_check").catch((err: Error) => ({ integrity_check: err.message }));
    if (check?.integrity_check !== "ok") throw new BackupError(`${path}: integrity check failed: ${check?.integrity_check}`);
    const version = (await db.get<{ user_version: number }>("PRAGMA user_version"))?.user_version ?? 0;
    if (version < 1 || version > MIGRATIONS.length) throw new BackupError(`${path}: schema version ${version} is not one this cvmd knows (1..${MIGRATIONS.length})`);
    const count = async (table: string) => (await db.get<{ n: number }>(`SELECT COUNT(*) AS n FROM ${table}`))!.n;
    return { schemaVersion: version, tenants: await count("tenants"), instances: await count("instances") };
  } finally {
    await db.close();
  }
}

/**
 * Consistent online copy of the live database through SQLite's backup API (one step, under a read
 * transaction, so writers in cvmd are neither blocked for long nor seen half-way). Written beside
 * the destination first, checked, and renamed into place, so FILE is either the old file or a whole
 * backup.
 */
export async function backupDatabase(source: Database, destination: string): Promise<DatabaseSummary> {
  const dest = resolve(destination);
  if (dest === resolve(source.path)) throw new BackupError("the backup file cannot be the live database");
  if (existsSync(dest) && statSync(dest).isDirectory()) throw new BackupError(`${dest} is a directory; name a file`);
  const tmp = join(dirname(dest), `.${basename(dest)}.partial-${process.pid}`);
  try {
    // A backup holds everything the live database does: private from its first byte, like the database.
    makeDatabasePrivate(tmp);
    await source.backupTo(tmp);
    await detachFromWal(tmp);
    fsyncPath(tmp);
    const summary = await inspectDatabase(tmp);
    renameSync(tmp, dest);
    fsyncPath(dirname(dest));
    return summary;
  } finally {
    for (const suffix of ["", "-wal", "-shm", "-journal"]) rmSync(tmp + suffix, { force: true });
  }
}

/**
 * Replaces the data dir's database with a backup. Refuses while cvmd runs (the data dir lock, or
 * an answering control socket) and holds the lock itself meanwhile, so cvmd cannot start half-way.
 * The current database (with its WAL) is kept beside it as `<db>.before-restore-<time>`.
 */
export async function restoreDatabase(dataDir: string, dbFile: string, backupFile: string, now: Date): Promise<DatabaseSummary & { previous: string | null }> {
  const live = join(dataDir, dbFile);
  const src = resolve(backupFile);
  if (src === resolve(live)) throw new BackupError("the backup file is the live database");
  const refuse = (why: string) => new BackupError(`refusing to restore while cvmd runs (${why}); stop it first, e.g. systemctl stop cvmd`);
  const holder = lockHolder(dataDir);
  if (holder) throw refuse(`${holder.role}, pid ${holder.pid}`);
  if (await socketAnswers(controlSocketPath(dataDir))) throw refuse("its control socket answers");
  let lock: { release(): void };
  try {
    lock = acquireDataDirLock(dataDir, "cvmctl restore");
  } catch (err) {
    if (err instanceof DataDirBusyError) throw refuse(`${err.holder.role}, pid ${err.holder.pid}`);
    throw err;
  }
  const incoming = join(dataDir, `.${dbFile}.restoring`);
  try {
    if (!existsSync(src)) throw new BackupError(`${src}: no such file`);
    // Checked on our own copy, so nothing is written beside the operator's file.
    copyFileSync(src, incoming);
    // copyFile keeps the source's mode; the live database is private whatever the backup file was.
    makeDatabasePrivate(incoming);
    await detachFromWal(incoming).catch((err: Error) => Promise.reject(new BackupError(`${src}: cannot open as SQLite: ${err.message}`)));
    const summary = await inspectDatabase(incoming).catch((err: Error) => Promise.reject(new BackupError(err.message.replace(incoming, src))));
    fsyncPath(incoming);
    const aside = `${live}.before-restore-${now.toISOString().replace(/[:.]/g, "-")}`;
    // The WAL belongs to the database it was written for: it moves with it, and it moves even when
    // the database itself is gone (a restore killed between these renames and run again), because
    // an old WAL left beside the restored file would be replayed into it. Until the last rename
    // the data dir has no database, and cvmd refuses to start on that (refuseLostDatabase).
    let previous: string | null = null;
    for (const suffix of ["", "-wal", "-shm"]) {
      if (!existsSync(live + suffix)) continue;
      renameSync(live + suffix, aside + suffix);
      if (suffix === "") previous = aside;
    }
    renameSync(incoming, live);
    fsyncPath(dataDir);
    return { ...summary, previous };
  } finally {
    for (const suffix of ["", "-wal", "-shm", "-journal"]) rmSync(incoming + suffix, { force: true });
    lock.release();
  }
}

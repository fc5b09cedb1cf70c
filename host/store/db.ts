import { chmodSync, closeSync, existsSync, openSync, readdirSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import sqlite3 from "sqlite3";
import { ChangeTracker } from "./change-tracker.js";
import { MIGRATIONS } from "./migrations.js";

/**
 * The database is gone (missing or 0 bytes) while the data dir still holds what only a database
 * that existed leaves behind. Opening would create an empty one: every tenant gone, no warning.
 * `exitCode` 78 (EX_CONFIG): the operator has to act, a restart by the unit cannot help.
 */
export class DatabaseLostError extends Error {
  override name = "DatabaseLostError";
  readonly exitCode = 78;
}

/** Size of `path` in bytes, or null when there is nothing there. */
function sizeOf(path: string): number | null {
  try {
    return statSync(path).size;
  } catch {
    return null;
  }
}

/**
 * Refuses to let SQLite initialise `path` afresh when its data dir shows the database existed:
 * its write-ahead log with content, its change file, a run dir of a VM, or the files an
 * interrupted `cvmctl restore` leaves. Anything else (the lock file, the guest network's state)
 * is also present on a first start, so it does not count.
 */
export function refuseLostDatabase(path: string): void {
  const size = sizeOf(path);
  if (size !== null && size > 0) return;
  const dir = dirname(path);
  const file = basename(path);
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return; // no dir yet: a first start
  }
  const evidence: string[] = [];
  if ((sizeOf(`${path}-wal`) ?? 0) > 0) evidence.push(`${file}-wal`);
  if (entries.includes(`${file}-authgen`)) evidence.push(`${file}-authgen`);
  const restoring = entries.filter((e) => e === `.${file}.restoring` || e.startsWith(`${file}.before-restore-`));
  evidence.push(...restoring);
  try {
    if (readdirSync(join(dir, "vms")).length > 0) evidence.push("vms/");
  } catch {
    /* no VMs were ever started here */
  }
  if (evidence.length === 0) return;
  const hint = restoring.length
    ? "a restore was interrupted: run `cvmctl restore BACKUP` again, or move the previous database back"
    : "restore it from a backup with `cvmctl restore BACKUP`";
  throw new DatabaseLostError(
    `${path} is ${size === null ? "missing" : "empty (0 bytes)"} but ${dir} holds state of an existing one (${evidence.join(", ")}); refusing to initialise a new database: ${hint}`,
  );
}

export type SqlValue = string | number | bigint | null | Buffer;

/** Files SQLite keeps beside a database; they hold the same rows (API key hashes, tenants, quotes). */
export const DATABASE_SIDE_FILES = ["-wal", "-shm", "-journal"] as const;

/**
 * Makes a database file private (0600) before SQLite touches it. SQLite creates a new database 0644 (less the umask)
 * and gives its -wal/-shm/-journal the database file's own mode, so creating the file ourselves with 0600 covers
 * them all from their first byte; files left 0644 by an older cvmd or copied in by a restore are narrowed here too.
 */
export function makeDatabasePrivate(path: string): void {
  if (!existsSync(path)) closeSync(openSync(path, "a", 0o600));
  for (const f of [path, ...DATABASE_SIDE_FILES.map((s) => path + s)]) if (existsSync(f)) chmodSync(f, 0o600);
}

/**
 * The one SQLite connection of a process, promisified. Writes go through `tx()`, which serialises
 * transactions in-process and opens them with BEGIN IMMEDIATE so that another process (cvmctl, a
 * second cvmd during a restart) waits on the busy timeout instead of failing halfway through.
 */
export class Database {
  private chain: Promise<unknown> = Promise.resolve();
  /** Set while a transaction is open: what to run once it has committed or rolled back. */
  private afterTx: Array<() => void> | null = null;
  /** Generations of the rows that read caches hold; writers signal through `afterCommit`. */
  readonly changes: ChangeTracker;

  private constructor(private readonly db: sqlite3.Database, readonly path: string) {
    // Beside the database, so every process that opens the same file signals through the same one.
    this.changes = new ChangeTracker(path === ":memory:" || path === "" ? null : `${path}-authgen`);
  }

  static async open(path: string, opts: { busyTimeoutMs?: number; readonly?: boolean } = {}): Promise<Database> {
    const mode = opts.readonly ? sqlite3.OPEN_READONLY : sqlite3.OPEN_READWRITE | sqlite3.OPEN_CREATE;
    if (!opts.readonly && path !== ":memory:" && path !== "") {
      refuseLostDatabase(path);
      makeDatabasePrivate(path);
    }
    const raw = await new Promise<sqlite3.Database>((resolve, reject) => {
      const d = new sqlite3.Database(path, mode, (err) => (err ? reject(err) : resolve(d)));
    });
    const db = new Database(raw, path);
    raw.configure("busyTimeout", opts.busyTimeoutMs ?? 10_000);
    if (!opts.readonly) {
      await db.exec("PRAGMA journal_mode = WAL");
      // FULL, not NORMAL: in WAL mode NORMAL skips the fsync at each commit, so a power cut can
      // take back a create already answered 202 (and its idempotency record), and the client's
      // retry would then make a second instance. FULL syncs the WAL before COMMIT returns.
      await db.exec("PRAGMA synchronous = FULL");
    }
    await db.exec("PRAGMA foreign_keys = ON");
    return db;
  }

  exec(sql: string): Promise<void> {
    return new Promise((resolve, reject) => this.db.exec(sql, (err) => (err ? reject(err) : resolve())));
  }

  run(sql: string, params: SqlValue[] = []): Promise<{ changes: number; lastID: number }> {
    return new Promise((resolve, reject) =>
      this.db.run(sql, params, function (this: sqlite3.RunResult, err: Error | null) {
        if (err) reject(err);
        else resolve({ changes: this.changes, lastID: this.lastID });
      }),
    );
  }

  get<T>(sql: string, params: SqlValue[] = []): Promise<T | undefined> {
    return new Promise((resolve, reject) => this.db.get(sql, params, (err, row) => (err ? reject(err) : resolve(row as T | undefined))));
  }

  all<T>(sql: string, params: SqlValue[] = []): Promise<T[]> {
    return new Promise((resolve, reject) => this.db.all(sql, params, (err, rows) => (err ? reject(err) : resolve(rows as T[]))));
  }

  /**
   * For a writer that just awaited its statement: runs `fn` now and, when a transaction is open,
   * again once it has ended, because a statement issued while one is open runs inside it (one
   * connection) and is only visible to other readers after its COMMIT. The second run also
   * follows a rollback: a reader on this same connection may have seen the uncommitted rows.
   */
  afterCommit(fn: () => void): void {
    fn();
    if (this.afterTx) this.afterTx.push(fn);
  }

  /** Runs `fn` inside one IMMEDIATE transaction; concurrent callers queue behind each other. */
  tx<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(async () => {
      await this.exec("BEGIN IMMEDIATE");
      const hooks: Array<() => void> = (this.afterTx = []);
      let out: T;
      try {
        out = await fn();
        await this.exec("COMMIT");
      } catch (err) {
        await this.exec("ROLLBACK").catch(() => undefined);
        this.runHooks(hooks);
        throw err;
      }
      // A hook that cannot signal (the change file is not writable) must not pass silently: a
      // cache in another process would keep serving the old rows.
      const failure = this.runHooks(hooks);
      if (failure !== undefined) throw failure;
      return out;
    });
    this.chain = next.catch(() => undefined);
    return next;
  }

  private runHooks(hooks: Array<() => void>): unknown {
    this.afterTx = null;
    let failure: unknown;
    for (const h of hooks) {
      try {
        h();
      } catch (err) {
        failure ??= err;
      }
    }
    return failure;
  }

  async migrate(): Promise<number> {
    const row = await this.get<{ user_version: number }>("PRAGMA user_version");
    let version = row?.user_version ?? 0;
    if (version > MIGRATIONS.length) {
      throw new Error(`database schema version ${version} is newer than this cvmd (${MIGRATIONS.length}); refusing to start`);
    }
    for (let i = version; i < MIGRATIONS.length; i++) {
      await this.tx(async () => {
        await this.exec(MIGRATIONS[i]!);
        await this.exec(`PRAGMA user_version = ${i + 1}`);
      });
      version = i + 1;
    }
    return version;
  }

  /** Online copy through SQLite's backup API: consistent even while another connection writes. */
  backupTo(destPath: string): Promise<void> {
    return new Promise((resolve, reject) => {
      // sqlite3 ships the backup API without typings.
      type Backup = { step(pages: number, cb: (err: Error | null) => void): void; finish(cb: (err: Error | null) => void): void; completed: boolean; failed: boolean };
      const raw = this.db as unknown as { backup(dest: string, cb: (err: Error | null) => void): Backup };
      const backup = raw.backup(destPath, (err: Error | null) => {
        if (err) return reject(err);
        const step = () =>
          backup.step(-1, (stepErr: Error | null) => {
            if (stepErr) return reject(stepErr);
            if (backup.completed || backup.failed) {
              backup.finish((finishErr: Error | null) => (finishErr ? reject(finishErr) : backup.failed ? reject(new Error("backup failed")) : resolve()));
            } else step();
          });
        step();
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve, reject) => this.db.close((err) => (err ? reject(err) : resolve())));
  }
}

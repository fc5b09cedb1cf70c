import { chmodSync, closeSync, existsSync, openSync, readdirSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { ChangeTracker } from "./change-tracker.js";
import { MIGRATIONS } from "./migrations.js";
import { PostgresConnection } from "./postgres-connection.js";
import type { Dialect, SqlConnection, SqlValue, TransactionKind } from "./sql-connection.js";
import { SqliteConnection } from "./sqlite-connection.js";

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
 * The database of cvm: SQLite in the data dir (the default), or PostgreSQL (CVM_DATABASE_URL), over
 * one connection either way. Writes go through `tx()`, which serialises transactions in-process and
 * opens each so that it behaves as if it ran alone (see `SqlConnection.begin`); a statement issued
 * while one is open runs inside it. The stores' SQL is written once; `greatest`/`least` and
 * `isUniqueViolation` cover what the two dialects spell differently.
 */
export class Database {
  private chain: Promise<unknown> = Promise.resolve();
  /** Set while a transaction is open: what to run once it has committed or rolled back. */
  private afterTx: Array<() => void> | null = null;
  /** Generations of the rows that read caches hold; writers signal through `afterCommit`. */
  readonly changes: ChangeTracker;

  /** `path`: the SQLite file, or the PostgreSQL URL without its password. */
  private constructor(private readonly conn: SqlConnection, readonly path: string, changeFile: string | null) {
    this.changes = new ChangeTracker(changeFile);
  }

  /** A SQLite file; its change file lies beside it, so every process that opens it signals through the same one. */
  static async open(path: string, opts: { busyTimeoutMs?: number; readonly?: boolean } = {}): Promise<Database> {
    const memory = path === ":memory:" || path === "";
    if (!opts.readonly && !memory) {
      refuseLostDatabase(path);
      makeDatabasePrivate(path);
    }
    return new Database(await SqliteConnection.open(path, opts), path, memory ? null : `${path}-authgen`);
  }

  /**
   * A PostgreSQL database. `changeFile` does for its key and tenant changes what the file beside a
   * SQLite database does (see ChangeTracker): it lies in the data dir, which cvmd and cvmctl share.
   */
  static async openPostgres(url: string, opts: { changeFile: string | null; busyTimeoutMs?: number; readonly?: boolean }): Promise<Database> {
    return new Database(await PostgresConnection.open(url, opts), withoutPassword(url), opts.changeFile);
  }

  get dialect(): Dialect {
    return this.conn.dialect;
  }

  exec(sql: string): Promise<void> {
    return this.conn.exec(sql);
  }

  run(sql: string, params: SqlValue[] = []): Promise<{ changes: number }> {
    return this.conn.run(sql, params);
  }

  get<T>(sql: string, params: SqlValue[] = []): Promise<T | undefined> {
    return this.conn.get<T>(sql, params);
  }

  all<T>(sql: string, params: SqlValue[] = []): Promise<T[]> {
    return this.conn.all<T>(sql, params);
  }

  /** SQL for the largest of its arguments: SQLite's scalar MAX, PostgreSQL's GREATEST. */
  greatest(...args: string[]): string {
    return `${this.conn.dialect === "postgres" ? "GREATEST" : "MAX"}(${args.join(", ")})`;
  }

  /** SQL for the smallest of its arguments: SQLite's scalar MIN, PostgreSQL's LEAST. */
  least(...args: string[]): string {
    return `${this.conn.dialect === "postgres" ? "LEAST" : "MIN"}(${args.join(", ")})`;
  }

  isUniqueViolation(err: unknown, table: string, columns: readonly string[]): boolean {
    return this.conn.isUniqueViolation(err, table, columns);
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

  /** Runs `fn` inside one write transaction; concurrent callers queue behind each other. */
  tx<T>(fn: () => Promise<T>): Promise<T> {
    return this.transaction("write", fn);
  }

  private transaction<T>(kind: TransactionKind, fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(async () => {
      await this.conn.begin(kind);
      const hooks: Array<() => void> = (this.afterTx = []);
      let out: T;
      try {
        out = await fn();
        await this.conn.commit();
      } catch (err) {
        await this.conn.rollback().catch(() => undefined);
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

  schemaVersion(): Promise<number> {
    return this.conn.schemaVersion();
  }

  /**
   * Applies the migrations this database has not had, each in its own transaction, and returns the
   * schema version. Each transaction reads the version again, so two processes starting on one
   * PostgreSQL database apply every migration once.
   */
  async migrate(): Promise<number> {
    const newer = (v: number) => new Error(`database schema version ${v} is newer than this cvmd (${MIGRATIONS.length}); refusing to start`);
    let version = await this.conn.schemaVersion();
    if (version > MIGRATIONS.length) throw newer(version);
    while (version < MIGRATIONS.length) {
      version = await this.transaction("migration", async () => {
        const v = await this.conn.schemaVersion();
        if (v > MIGRATIONS.length) throw newer(v);
        if (v === MIGRATIONS.length) return v;
        await this.conn.exec(this.conn.migrationSql(MIGRATIONS[v]!));
        await this.conn.setSchemaVersion(v + 1);
        return v + 1;
      });
    }
    return version;
  }

  /** Online copy through SQLite's backup API: consistent even while another connection writes. */
  backupTo(destPath: string): Promise<void> {
    if (!(this.conn instanceof SqliteConnection)) return Promise.reject(new Error("only a SQLite database is copied by cvm; back PostgreSQL up with its own tools (pg_dump)"));
    return this.conn.backupTo(destPath);
  }

  close(): Promise<void> {
    return this.conn.close();
  }
}

/** A connection URL as it may be logged or shown: its password, in the authority or as a parameter, replaced by `***`. */
export function withoutPassword(url: string): string {
  return url.replace(/^([a-z]+:\/\/[^:@/?]*):[^@/?]*@/i, "$1:***@").replace(/([?&]password=)[^&]*/gi, "$1***");
}

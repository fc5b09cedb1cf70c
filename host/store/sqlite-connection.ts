import sqlite3 from "sqlite3";
import type { SqlConnection, SqlValue, TransactionKind } from "./sql-connection.js";

/** The one SQLite connection of a process, promisified; the stores' SQL is SQLite's, so it runs as written. */
export class SqliteConnection implements SqlConnection {
  readonly dialect = "sqlite" as const;

  private constructor(private readonly db: sqlite3.Database) {}

  static async open(path: string, opts: { busyTimeoutMs?: number; readonly?: boolean }): Promise<SqliteConnection> {
    const mode = opts.readonly ? sqlite3.OPEN_READONLY : sqlite3.OPEN_READWRITE | sqlite3.OPEN_CREATE;
    const raw = await new Promise<sqlite3.Database>((resolve, reject) => {
      const d = new sqlite3.Database(path, mode, (err) => (err ? reject(err) : resolve(d)));
    });
    const conn = new SqliteConnection(raw);
    raw.configure("busyTimeout", opts.busyTimeoutMs ?? 10_000);
    if (!opts.readonly) {
      await conn.exec("PRAGMA journal_mode = WAL");
      // FULL, not NORMAL: in WAL mode NORMAL skips the fsync at each commit, so a power cut can
      // take back a create already answered 202 (and its idempotency record), and the client's
      // retry would then make a second instance. FULL syncs the WAL before COMMIT returns.
      await conn.exec("PRAGMA synchronous = FULL");
    }
    await conn.exec("PRAGMA foreign_keys = ON");
    return conn;
  }

  exec(sql: string): Promise<void> {
    return new Promise((resolve, reject) => this.db.exec(sql, (err) => (err ? reject(err) : resolve())));
  }

  run(sql: string, params: SqlValue[]): Promise<{ changes: number }> {
    return new Promise((resolve, reject) =>
      this.db.run(sql, params, function (this: sqlite3.RunResult, err: Error | null) {
        if (err) reject(err);
        else resolve({ changes: this.changes });
      }),
    );
  }

  get<T>(sql: string, params: SqlValue[]): Promise<T | undefined> {
    return new Promise((resolve, reject) => this.db.get(sql, params, (err, row) => (err ? reject(err) : resolve(row as T | undefined))));
  }

  all<T>(sql: string, params: SqlValue[]): Promise<T[]> {
    return new Promise((resolve, reject) => this.db.all(sql, params, (err, rows) => (err ? reject(err) : resolve(rows as T[]))));
  }

  /** IMMEDIATE for both kinds: the write lock is taken at BEGIN, so another process (cvmctl, a second cvmd during a restart) waits on the busy timeout instead of failing halfway through. */
  begin(_kind: TransactionKind): Promise<void> {
    return this.exec("BEGIN IMMEDIATE");
  }

  commit(): Promise<void> {
    return this.exec("COMMIT");
  }

  rollback(): Promise<void> {
    return this.exec("ROLLBACK");
  }

  async schemaVersion(): Promise<number> {
    return (await this.get<{ user_version: number }>("PRAGMA user_version", []))?.user_version ?? 0;
  }

  setSchemaVersion(version: number): Promise<void> {
    return this.exec(`PRAGMA user_version = ${Math.trunc(version)}`);
  }

  migrationSql(sql: string): string {
    return sql;
  }

  isUniqueViolation(err: unknown, table: string, columns: readonly string[]): boolean {
    const e = err as { code?: unknown; message?: unknown };
    return e?.code === "SQLITE_CONSTRAINT" && String(e.message).includes(`UNIQUE constraint failed: ${columns.map((c) => `${table}.${c}`).join(", ")}`);
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

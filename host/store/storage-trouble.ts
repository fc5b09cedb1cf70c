export interface StorageTrouble {
  code: string;
  message: string;
  /** How long a client should wait before trying again. */
  retryAfterS: number;
}

/** The same three troubles on both databases: SQLite's result codes, PostgreSQL's SQLSTATEs, and the filesystem's errnos. */
const FULL = new Set([
  "SQLITE_FULL",
  "ENOSPC",
  "EDQUOT",
  "53100", // disk_full
]);
const BUSY = new Set([
  "SQLITE_BUSY",
  "SQLITE_LOCKED",
  "40001", // serialization_failure: a concurrent transaction won; running again passes
  "40P01", // deadlock_detected
  "55P03", // lock_not_available: a lock held past lock_timeout (the busy timeout)
  "53300", // too_many_connections
]);
const IO = new Set([
  "SQLITE_IOERR",
  "SQLITE_READONLY",
  "EIO",
  "EROFS",
  "58030", // io_error
  "25006", // read_only_sql_transaction: a standby, or a server made read-only
  "57P01", // admin_shutdown
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now: starting up or shutting down
]);
/** PostgreSQL's class 08, connection exceptions (and DatabaseConnectionError's 08006: unreachable or cut). */
const CONNECTION_EXCEPTION = /^08[0-9A-Z]{3}$/;

/**
 * Database and filesystem failures that pass once the operator (or the other process) is done: a full
 * disk, a lock held past the busy timeout or a transaction that lost to a concurrent one, an I/O error
 * of a failing or remounted device or a database server that went away. Found on the error itself or
 * a cause up its chain. The API answers them 503 with Retry-After; the lifecycle engine retries the
 * writes it cannot do without.
 */
export function storageTrouble(err: unknown): StorageTrouble | null {
  for (let e = err, depth = 0; e && typeof e === "object" && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code !== "string") continue;
    if (FULL.has(code)) return { code, message: "the server's storage is full; retry later", retryAfterS: 30 };
    if (BUSY.has(code)) return { code, message: "the database is busy; retry shortly", retryAfterS: 5 };
    if (IO.has(code) || CONNECTION_EXCEPTION.test(code)) return { code, message: "the server's storage failed; retry later", retryAfterS: 30 };
  }
  return null;
}

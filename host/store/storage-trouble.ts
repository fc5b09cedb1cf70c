export interface StorageTrouble {
  code: string;
  message: string;
  /** How long a client should wait before trying again. */
  retryAfterS: number;
}

/**
 * SQLite and filesystem failures that pass once the operator (or the other process) is done: a full
 * disk, a write lock held past the busy timeout, an I/O error of a failing or remounted device. Found on
 * the error itself or a cause up its chain. The API answers them 503 with Retry-After; the lifecycle
 * engine retries the writes it cannot do without.
 */
export function storageTrouble(err: unknown): StorageTrouble | null {
  for (let e = err, depth = 0; e && typeof e === "object" && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (code === "SQLITE_FULL" || code === "ENOSPC" || code === "EDQUOT") return { code, message: "the server's storage is full; retry later", retryAfterS: 30 };
    if (code === "SQLITE_BUSY" || code === "SQLITE_LOCKED") return { code, message: "the database is busy; retry shortly", retryAfterS: 5 };
    if (code === "SQLITE_IOERR" || code === "SQLITE_READONLY" || code === "EIO" || code === "EROFS") return { code, message: "the server's storage failed; retry later", retryAfterS: 30 };
  }
  return null;
}

import { appendFileSync, statSync } from "node:fs";

/**
 * Tells in-memory read caches (see `ReadCache`) that rows they may hold have changed.
 *
 * Two kinds of rows are cached, with different writers:
 * - API keys and tenants are written by cvmd and, while it runs, by `cvmctl` (another process:
 *   `key revoke`, `key rotate`, `tenant suspend|resume`). A writer appends one byte to a file beside
 *   the database after its commit; readers compare the file's identity and length (one `statSync`,
 *   under a microsecond) with the ones they saw before their read. Appending makes the length grow
 *   strictly with every change, so, unlike a timestamp with the kernel's coarse granularity, two
 *   changes in a row can never look like none. `PRAGMA data_version` would tell the same but costs a
 *   round trip through the SQLite connection, the very cost the cache is there to save; watching
 *   the file (inotify) is asynchronous, so a request could overtake the event. The file only grows
 *   on key and tenant changes, which are rare.
 * - Instance rows (and their egress state) are written only by the cvmd that holds the data-dir
 *   lock: cvmctl's instance commands go through its control socket, and write directly only when
 *   no cvmd runs. An in-process counter is enough for them.
 */
export class ChangeTracker {
  private authLocal = 0;
  private instancesLocal = 0;

  /** `authFile` null: no other process can open this database (`:memory:`). */
  constructor(readonly authFile: string | null) {}

  /** After the commit of a key or tenant change. Throws when other processes cannot be told. */
  authChanged(): void {
    this.authLocal++;
    if (this.authFile) appendFileSync(this.authFile, ".", { mode: 0o600 });
  }

  /** After the commit (or rollback) of an instance or egress-state change. */
  instancesChanged(): void {
    this.instancesLocal++;
  }

  /**
   * The generation of key and tenant rows, to take before a read and compare later: equal strings
   * mean no change was committed in between, by this process or another.
   */
  authGeneration(): string {
    if (!this.authFile) return String(this.authLocal);
    const s = statSync(this.authFile, { throwIfNoEntry: false });
    return s ? `${this.authLocal}:${s.ino}:${s.size}:${s.mtimeMs}` : `${this.authLocal}:-`;
  }

  instancesGeneration(): string {
    return String(this.instancesLocal);
  }
}

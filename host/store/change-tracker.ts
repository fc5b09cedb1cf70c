import { appendFileSync, statSync } from "node:fs";

/**
 * Tells in-memory read caches (see `ReadCache`) that rows they may hold have changed.
 *
 * Two kinds of rows are cached, with different writers:
 * - API keys and tenants are written by cvmd and, while it runs, by `cvmctl` (another process:
 *   `key revoke`, `key rotate`, `tenant suspend|resume`). After its commit a writer appends one
 *   byte to a file beside the database, and cvmctl also tells the running cvmd through its control
 *   socket and waits for the answer before it exits (host/ops/control-socket.ts). A cvmd that can
 *   be told that way (`notifiedByOthers`) compares in-process counters only; one that cannot (no
 *   control socket) compares the file's identity and length with the ones it saw before its read,
 *   one `statSync` per request. Appending makes the length grow with every change, so, unlike a
 *   timestamp with the kernel's coarse granularity, two changes can never look like none.
 *   Why not simply stat always: measured on the 2-core test VM, the syscall was ~5 us of ~45 us of
 *   cvmd's CPU per authenticated GET. `PRAGMA data_version` would cost a round trip through the
 *   SQLite connection, the very cost the cache saves; inotify is asynchronous, so a request could
 *   overtake the event.
 * - Instance rows (and their egress state) are written only by the cvmd that holds the data-dir
 *   lock: cvmctl's instance commands go through its control socket, and write directly only when
 *   no cvmd runs. An in-process counter is enough for them.
 */
export class ChangeTracker {
  private authLocal = 0;
  private instancesLocal = 0;
  private statFile = true;
  private wroteAuth = false;

  /** `authFile` null: no other process can open this database (`:memory:`). */
  constructor(readonly authFile: string | null) {}

  /** After the commit of a key or tenant change. Throws when the change file cannot be written. */
  authChanged(): void {
    this.authLocal++;
    this.wroteAuth = true;
    if (this.authFile) appendFileSync(this.authFile, ".", { mode: 0o600 });
  }

  /** Whether this process changed keys or tenants: cvmctl then tells a running cvmd. */
  get authWritten(): boolean {
    return this.wroteAuth;
  }

  /**
   * For cvmd once its control socket listens: from then on every other writer reports its key and
   * tenant changes there (`externalAuthChange`) before it returns, so the file need not be checked.
   */
  notifiedByOthers(): void {
    this.statFile = false;
  }

  /** Another process reported (over the control socket) that it committed a key or tenant change. */
  externalAuthChange(): void {
    this.authLocal++;
  }

  /** After the commit (or rollback) of an instance or egress-state change. */
  instancesChanged(): void {
    this.instancesLocal++;
  }

  /**
   * The generation of key and tenant rows, to take before a read and compare later: equal values
   * mean no change was committed in between, by this process or another.
   */
  authGeneration(): string | number {
    if (!this.authFile || !this.statFile) return this.authLocal;
    const s = statSync(this.authFile, { throwIfNoEntry: false });
    return s ? `${this.authLocal}:${s.ino}:${s.size}:${s.mtimeMs}` : `${this.authLocal}:-`;
  }

  instancesGeneration(): number {
    return this.instancesLocal;
  }
}

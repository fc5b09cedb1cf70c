import { open, rename, unlink, type FileHandle } from "node:fs/promises";
import net from "node:net";

/** The smallest cap accepted: below it a single socket read could span more than a few rotations. */
export const MIN_SERIAL_LOG_BYTES = 64 * 1024;
export const DEFAULT_SERIAL_LOG_BYTES = 4 * 1024 * 1024;
/** Kernel and systemd boot logs are tens of KiB; a guest writing faster than this is flooding. */
export const DEFAULT_SERIAL_BYTES_PER_SEC = 1024 * 1024;
/** Guest output queued for a slow console client before it is skipped (it stays in the log). */
const CONSOLE_BACKLOG_BYTES = 256 * 1024;
/** How long serial bytes gather in memory before cvmd writes them to the log in one go. */
const BATCH_MS = 25;
/** Gathered bytes beyond this pause reading until the file write catches up. */
const MAX_PENDING_BYTES = 256 * 1024;

export interface SerialFlood {
  /** Bytes the guest sent in the window that went over the budget. */
  bytesInWindow: number;
  bytesPerSec: number;
}

export interface SerialCaptureOptions {
  /** QEMU's serial chardev (QEMU is the server). */
  serialSocket: string;
  /** Where `cvmctl console` connects; served here and relayed to the serial socket. */
  consoleSocket: string;
  logPath: string;
  /** Cap on `logPath` plus its one rotated predecessor `logPath.1` together. */
  maxBytes?: number;
  bytesPerSec?: number;
  /** Once per flood episode: from the first window over budget until a window under it. */
  onFlood?: (f: SerialFlood) => void;
  onError?: (err: Error) => void;
}

/**
 * cvmd's end of a guest's serial port. QEMU's own `logfile=` has no size limit, so cvmd reads the chardev itself and
 * writes the log: `serial.log` is rotated to `serial.log.1` when it reaches half the cap, so the two together never
 * exceed it, by construction and with no overshoot (each write is cut at the boundary). Writes are gathered to one per
 * batch interval; reading pauses while the guest is over its byte budget (or the gathered bytes outrun the disk), and
 * the pause pushes back into QEMU (its 16550 waits for the socket to drain), so a flooding guest slows its own
 * console, not cvmd. Memory per guest is bounded by MAX_PENDING_BYTES plus one socket read. While cvmd is down QEMU discards serial output (an unconnected socket chardev drops it), so the
 * log has a gap then, never unbounded growth. QEMU 7.2 serves one client per socket chardev, so cvmd also serves the
 * console socket and relays one interactive client, which keeps working beside the capture.
 */
export class SerialCapture {
  private readonly maxHalf: number;
  private readonly bytesPerSec: number;
  private serial: net.Socket | null = null;
  private consoleServer: net.Server | null = null;
  private client: net.Socket | null = null;
  private fh: FileHandle | null = null;
  private size = 0;
  private windowStart = 0;
  private windowBytes = 0;
  private flooding = false;
  private resumeTimer: NodeJS.Timeout | null = null;
  private writing = false;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private batchTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private chain: Promise<void> = Promise.resolve();
  private endedResolve: () => void = () => undefined;
  /** Resolves once the serial connection has ended (QEMU exited or `close()`). */
  readonly ended: Promise<void> = new Promise((r) => (this.endedResolve = r));

  private constructor(private readonly o: SerialCaptureOptions) {
    const max = o.maxBytes ?? DEFAULT_SERIAL_LOG_BYTES;
    if (!Number.isSafeInteger(max) || max < MIN_SERIAL_LOG_BYTES) throw new Error(`serial log cap ${max} must be an integer >= ${MIN_SERIAL_LOG_BYTES}`);
    this.maxHalf = Math.floor(max / 2);
    this.bytesPerSec = o.bytesPerSec ?? DEFAULT_SERIAL_BYTES_PER_SEC;
  }

  /** Connects to the guest's serial chardev and starts serving the console socket. */
  static async start(o: SerialCaptureOptions): Promise<SerialCapture> {
    const c = new SerialCapture(o);
    try {
      await c.openLog();
      await c.connect();
      await c.serveConsole();
    } catch (err) {
      await c.close();
      throw err;
    }
    return c;
  }

  /** Bytes in the current log file (not counting the rotated one). */
  get logBytes(): number {
    return this.size;
  }


  private async openLog(): Promise<void> {
    this.fh = await open(this.o.logPath, "a", 0o600);
    this.size = (await this.fh.stat()).size;
  }

  private connect(): Promise<void> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection(this.o.serialSocket);
      s.once("connect", () => {
        s.off("error", reject);
        this.serial = s;
        s.on("error", (err) => this.o.onError?.(err));
        s.on("close", () => {
          this.serial = null;
          this.client?.end();
          this.endedResolve();
        });
        s.on("data", (chunk: Buffer) => this.onGuestData(chunk));
        resolve();
      });
      s.once("error", reject);
    });
  }

  private onGuestData(chunk: Buffer): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    this.account(chunk.length);
    // Reading never waits for the batch: QEMU's 16550 sends a byte per write, each its own socket buffer, so a
    // reader that paused would cap the guest's console at a few KiB/s. Reads come as often as the loop turns (a busy
    // cvmd gets bigger reads), and writes to the file are gathered to one per batch interval.
    if (this.pendingBytes >= MAX_PENDING_BYTES || this.windowBytes > this.bytesPerSec) this.serial?.pause();
    if (!this.batchTimer && !this.writing) this.batchTimer = setTimeout(() => this.flush(), BATCH_MS);
  }

  private flush(): void {
    this.batchTimer = null;
    if (this.pending.length === 0) return this.maybeResume();
    const data = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
    const c = this.client;
    if (c && c.writableLength < CONSOLE_BACKLOG_BYTES) c.write(data);
    this.writing = true;
    this.chain = this.chain
      .then(() => this.append(data))
      .catch((err: Error) => this.o.onError?.(err))
      .finally(() => {
        this.writing = false;
        if (this.pending.length > 0 && !this.batchTimer) this.batchTimer = setTimeout(() => this.flush(), BATCH_MS);
        this.maybeResume();
      });
  }

  /** One-second windows: over budget pauses reading until the window ends; the first such window opens an episode. */
  private account(n: number): void {
    const now = Date.now();
    if (now - this.windowStart >= 1000) {
      // A whole window under budget ends the episode.
      if (this.flooding && this.windowBytes <= this.bytesPerSec) this.flooding = false;
      this.windowStart = now;
      // The last read of a window may overshoot by one socket chunk; the next window pays for it.
      this.windowBytes = Math.max(0, this.windowBytes - this.bytesPerSec);
    }
    this.windowBytes += n;
    if (this.windowBytes > this.bytesPerSec && !this.flooding) {
      this.flooding = true;
      this.o.onFlood?.({ bytesInWindow: this.windowBytes, bytesPerSec: this.bytesPerSec });
    }
  }

  private maybeResume(): void {
    if (this.closed || !this.serial || this.resumeTimer || this.pendingBytes >= MAX_PENDING_BYTES) return;
    const left = 1000 - (Date.now() - this.windowStart);
    if (this.windowBytes > this.bytesPerSec && left > 0) {
      this.resumeTimer = setTimeout(() => {
        this.resumeTimer = null;
        this.account(0); // opens the next window even when no byte arrives to do it
        this.maybeResume();
      }, left);
      return;
    }
    this.serial.resume();
  }

  private async append(chunk: Buffer): Promise<void> {
    let off = 0;
    while (off < chunk.length && this.fh) {
      if (this.size >= this.maxHalf) await this.rotate();
      const n = Math.min(chunk.length - off, this.maxHalf - this.size);
      await this.fh.write(chunk, off, n);
      this.size += n;
      off += n;
    }
  }

  private async rotate(): Promise<void> {
    await this.fh?.close();
    this.fh = null;
    await rename(this.o.logPath, `${this.o.logPath}.1`);
    await this.openLog();
  }

  private async serveConsole(): Promise<void> {
    await unlink(this.o.consoleSocket).catch(() => undefined);
    const server = net.createServer((c) => this.onConsoleClient(c));
    // The run dir is 0700, so the socket is private from the moment it exists whatever its own mode.
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.o.consoleSocket, () => {
        server.off("error", reject);
        resolve();
      });
    });
    server.on("error", (err) => this.o.onError?.(err));
    this.consoleServer = server;
  }

  private onConsoleClient(c: net.Socket): void {
    if (this.client || !this.serial) {
      c.end(this.serial ? "cvmd: another client holds this console\r\n" : "cvmd: the guest's serial port is closed\r\n");
      return;
    }
    this.client = c;
    c.on("error", () => c.destroy());
    c.on("close", () => {
      if (this.client === c) this.client = null;
    });
    c.on("data", (b: Buffer) => {
      const s = this.serial;
      if (!s) return void c.end();
      // The operator's keystrokes wait for QEMU rather than pile up here.
      if (!s.write(b)) {
        c.pause();
        s.once("drain", () => c.resume());
      }
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.resumeTimer) clearTimeout(this.resumeTimer);
    if (this.batchTimer) {
      clearTimeout(this.batchTimer);
      this.flush();
    }
    this.client?.destroy();
    this.serial?.destroy();
    const server = this.consoleServer;
    if (server) await new Promise<void>((r) => server.close(() => r()));
    await this.chain;
    await this.fh?.close();
    this.fh = null;
    this.endedResolve();
  }
}

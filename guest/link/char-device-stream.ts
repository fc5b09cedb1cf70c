import { close, open, read, write } from "node:fs";
import { Duplex } from "node:stream";
import type { Logger } from "pino";

const RETRYABLE = new Set(["EAGAIN", "EINTR", "EIO", "EPIPE", "ENXIO", "ECONNRESET"]);

/**
 * A duplex over a character device opened read+write (the virtio-serial port
 * /dev/virtio-ports/org.cvm.agent.0). A serial-like port has no connection state the guest can
 * observe: while no host is attached reads return end-of-file or an error and writes fail. Neither
 * ends this stream: reads are retried after a pause and writes that cannot be delivered are dropped,
 * exactly as bytes sent down an unplugged serial line would be. The protocol layer (host hello,
 * frame resync) makes sense of whatever arrives.
 */
export class CharDeviceStream extends Duplex {
  readonly opened: Promise<void>;
  private fd: number | null = null;
  private readonly buf = Buffer.alloc(64 * 1024);
  private retryTimer: NodeJS.Timeout | null = null;
  private droppedWrites = 0;

  constructor(
    readonly path: string,
    private readonly logger: Logger,
    private readonly idleRetryMs = 200,
  ) {
    super({ allowHalfOpen: true });
    this.opened = new Promise((resolve, reject) => {
      open(path, "r+", (err, fd) => {
        if (err) {
          reject(err);
          this.destroy(err);
          return;
        }
        this.fd = fd;
        resolve();
      });
    });
    this.opened.catch(() => undefined);
  }

  override _read(): void {
    if (this.fd === null) {
      this.opened.then(() => this._read(), () => undefined);
      return;
    }
    read(this.fd, this.buf, 0, this.buf.length, null, (err, n) => {
      if (this.destroyed) return;
      if (err && !RETRYABLE.has(err.code ?? "")) {
        this.destroy(err);
        return;
      }
      if (err || n === 0) {
        // No host attached (or it just left): poll again shortly rather than ending the stream.
        this.retryTimer = setTimeout(() => this._read(), this.idleRetryMs);
        return;
      }
      this.push(Buffer.from(this.buf.subarray(0, n)));
    });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    const fd = this.fd;
    if (fd === null) {
      this.opened.then(() => this._write(chunk, _enc, cb), (e: Error) => cb(e));
      return;
    }
    const writeFrom = (off: number) => {
      write(fd, chunk, off, chunk.length - off, null, (err, n) => {
        if (err) {
          if (RETRYABLE.has(err.code ?? "")) {
            if (this.droppedWrites++ % 100 === 0) this.logger.debug({ code: err.code }, "virtio-serial write dropped (no host attached?)");
            cb();
            return;
          }
          cb(err);
          return;
        }
        if (off + n < chunk.length) writeFrom(off + n);
        else cb();
      });
    };
    writeFrom(0);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const fd = this.fd;
    this.fd = null;
    if (fd === null) cb(err);
    else close(fd, () => cb(err));
  }
}

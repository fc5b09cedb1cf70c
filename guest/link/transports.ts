import { spawn, type ChildProcess } from "node:child_process";
import { chmod, rm } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import { CharDeviceStream } from "./char-device-stream.js";

export interface HostConnection {
  stream: Duplex;
  /**
   * True for a pipe that outlives host connections (virtio-serial): the agent cannot see the host
   * come and go, so sessions restart on each host hello instead of on each connection.
   */
  persistent: boolean;
  label: string;
}

/** Where host connections come from. */
export interface HostTransport {
  readonly description: string;
  start(onConnection: (c: HostConnection) => void): Promise<void>;
  close(): Promise<void>;
}

/** The agent listens on a Unix socket (tests; and the far end of the vsock bridge). */
export class UnixSocketHostTransport implements HostTransport {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();

  constructor(
    private readonly path: string,
    private readonly mode = 0o600,
  ) {}

  get description(): string {
    return `unix:${this.path}`;
  }

  async start(onConnection: (c: HostConnection) => void): Promise<void> {
    await rm(this.path, { force: true });
    const server = createServer((s) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
      onConnection({ stream: s, persistent: false, label: this.description });
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.path, () => resolve());
    });
    await chmod(this.path, this.mode);
    this.server = server;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    this.server = null;
    if (server) await new Promise<void>((r) => server.close(() => r()));
    await rm(this.path, { force: true });
  }
}

/** QEMU virtio-serial: a character device the agent keeps open for its whole life. */
export class VirtioSerialHostTransport implements HostTransport {
  private stream: CharDeviceStream | null = null;

  constructor(
    private readonly devicePath: string,
    private readonly logger: Logger,
  ) {}

  get description(): string {
    return `virtio-serial:${this.devicePath}`;
  }

  async start(onConnection: (c: HostConnection) => void): Promise<void> {
    const stream = new CharDeviceStream(this.devicePath, this.logger);
    await stream.opened;
    this.stream = stream;
    onConnection({ stream, persistent: true, label: this.description });
  }

  async close(): Promise<void> {
    this.stream?.destroy();
    this.stream = null;
  }
}

export interface SocatVsockOptions {
  port: number;
  /** Unix socket the bridge forwards each vsock connection to. */
  socketPath: string;
  socat?: string;
  /**
   * The listening address handed to socat. Defaults to `VSOCK-LISTEN:<port>,reuseaddr,fork`; tests
   * substitute a UNIX-LISTEN address to drive the same bridge without a vsock transport.
   */
  listenAddress?: string;
  logger: Logger;
}

/** socat's argv for the guest-side bridge (vsock → the agent's Unix socket). */
export function socatVsockListenArgs(o: Pick<SocatVsockOptions, "port" | "socketPath" | "listenAddress">): string[] {
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 0xffffffff) throw new RangeError(`bad vsock port ${o.port}`);
  return ["-d", "-d", o.listenAddress ?? `VSOCK-LISTEN:${o.port},reuseaddr,fork`, `UNIX-CONNECT:${o.socketPath}`];
}

/**
 * AF_VSOCK in production. Node cannot wrap an AF_VSOCK fd (net.Socket rejects it with
 * ERR_INVALID_FD_TYPE), so socat accepts on the vsock port and forwards each connection to the
 * agent's Unix socket; the agent then treats it like any socket connection. socat is restarted with
 * backoff if it dies.
 */
export class SocatVsockHostTransport implements HostTransport {
  private readonly unix: UnixSocketHostTransport;
  private child: ChildProcess | null = null;
  private closing = false;
  private restartTimer: NodeJS.Timeout | null = null;
  private failures = 0;

  constructor(private readonly o: SocatVsockOptions) {
    this.unix = new UnixSocketHostTransport(o.socketPath);
  }

  get description(): string {
    return `vsock:${this.o.port} via socat → unix:${this.o.socketPath}`;
  }

  get args(): string[] {
    return socatVsockListenArgs(this.o);
  }

  async start(onConnection: (c: HostConnection) => void): Promise<void> {
    await this.unix.start((c) => onConnection({ ...c, label: this.description }));
    await this.spawnBridge();
  }

  private spawnBridge(): Promise<void> {
    return new Promise((resolve, reject) => {
      const child = spawn(this.o.socat ?? "socat", this.args, { stdio: ["ignore", "ignore", "pipe"] });
      this.child = child;
      let stderr = "";
      let listening = false;
      child.stderr!.setEncoding("utf8");
      child.stderr!.on("data", (d: string) => {
        stderr = (stderr + d).slice(-4000);
        if (!listening && /listening on/.test(stderr)) {
          listening = true;
          this.failures = 0;
          this.o.logger.info({ args: this.args }, "vsock bridge listening");
          resolve();
        }
      });
      child.once("error", (err) => {
        if (!listening) reject(err);
      });
      child.once("exit", (code, signal) => {
        this.child = null;
        if (!listening) {
          reject(new Error(`socat exited (${code ?? signal}) before listening: ${stderr.trim().split("\n").slice(-2).join(" | ")}`));
          return;
        }
        if (this.closing) return;
        this.failures++;
        const delay = Math.min(5000, 200 * 2 ** Math.min(this.failures, 5));
        this.o.logger.warn({ code, signal, delay, stderr: stderr.trim().split("\n").slice(-2) }, "vsock bridge exited; restarting");
        this.restartTimer = setTimeout(() => {
          this.spawnBridge().catch((err: Error) => this.o.logger.error({ err }, "vsock bridge restart failed"));
        }, delay);
      });
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const child = this.child;
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    }
    await this.unix.close();
  }
}

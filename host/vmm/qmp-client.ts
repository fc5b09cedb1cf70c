import { EventEmitter } from "node:events";
import net from "node:net";

/**
 * A small QMP client: newline-delimited JSON over QEMU's monitor socket. Written here rather than taken from npm
 * because the protocol needs ~100 lines and the available packages are unmaintained or pull in large trees.
 */

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export class QmpError extends Error {
  constructor(
    readonly errorClass: string,
    readonly desc: string,
    readonly command: string,
  ) {
    super(`QMP ${command} failed: ${errorClass}: ${desc}`);
    this.name = "QmpError";
  }
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export interface QmpConnectOptions {
  timeoutMs?: number;
}

export class QmpClient extends EventEmitter<{ event: [QmpEvent]; close: [] }> {
  private buf = "";
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closed = false;
  greeting: Record<string, unknown> | null = null;

  private constructor(private readonly sock: net.Socket) {
    super();
  }

  /** Connects, reads the greeting and negotiates capabilities; the client is in command mode when this resolves. */
  static async connect(path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 5_000;
    const sock = net.createConnection(path);
    const client = new QmpClient(sock);
    const greeting = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`QMP ${path}: no greeting within ${timeoutMs} ms`));
      }, timeoutMs);
      client.onGreeting = (g) => {
        clearTimeout(timer);
        client.greeting = g;
        resolve();
      };
      sock.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
    sock.setEncoding("utf8");
    sock.on("data", (chunk: string) => client.onData(chunk));
    sock.on("close", () => client.onClose());
    sock.on("error", () => {
      /* surfaced through close and the pending commands */
    });
    await greeting;
    await client.execute("qmp_capabilities", undefined, { timeoutMs });
    return client;
  }

  private onGreeting: (g: Record<string, unknown>) => void = () => {};

  get isClosed(): boolean {
    return this.closed;
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<T> {
    if (this.closed) return Promise.reject(new Error(`QMP connection closed; cannot run ${command}`));
    const id = `c${this.nextId++}`;
    const timeoutMs = opts.timeoutMs ?? 10_000;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`QMP ${command}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      const msg: Record<string, unknown> = { execute: command, id };
      if (args) msg.arguments = args;
      this.sock.write(JSON.stringify(msg) + "\n");
    });
  }

  close(): void {
    this.sock.destroy();
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    let nl: number;
    while ((nl = this.buf.indexOf("\n")) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return; // QEMU only sends JSON on this socket; a torn line is not worth killing the session for
    }
    if ("QMP" in msg) {
      this.onGreeting(msg.QMP as Record<string, unknown>);
      return;
    }
    if (typeof msg.event === "string") {
      this.emit("event", msg as unknown as QmpEvent);
      return;
    }
    const id = typeof msg.id === "string" ? msg.id : undefined;
    const p = id ? this.pending.get(id) : undefined;
    if (!p || !id) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if ("error" in msg) {
      const err = msg.error as { class?: string; desc?: string };
      p.reject(new QmpError(err.class ?? "GenericError", err.desc ?? "", p.command));
    } else {
      p.resolve(msg.return);
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      // QEMU may close the socket right after answering `quit`, before the answer is read; treat that as success.
      if (p.command === "quit") p.resolve({});
      else p.reject(new Error(`QMP connection closed while waiting for ${p.command}`));
      this.pending.delete(id);
    }
    this.emit("close");
  }
}

import { spawn } from "node:child_process";
import { createConnection } from "node:net";
import { Duplex } from "node:stream";
import { AGENT_VSOCK_PORT, type AgentEndpoint } from "../../shared/protocol/agent-channel.js";

export { AGENT_VSOCK_PORT };

/** Opens a fresh byte stream to one guest's agent. */
export interface AgentConnector {
  connect(signal?: AbortSignal): Promise<Duplex>;
  readonly description: string;
}

function abortError(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error("connect aborted");
}

/** A Unix socket: the agent's own socket in tests, or QEMU's per-instance virtio-serial chardev socket. */
export class UnixSocketConnector implements AgentConnector {
  constructor(readonly path: string) {}

  get description(): string {
    return `unix:${this.path}`;
  }

  connect(signal?: AbortSignal): Promise<Duplex> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortError(signal));
      const s = createConnection(this.path);
      const onAbort = () => {
        s.destroy();
        reject(abortError(signal!));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      s.once("connect", () => {
        signal?.removeEventListener("abort", onAbort);
        resolve(s);
      });
      s.once("error", (err) => {
        signal?.removeEventListener("abort", onAbort);
        reject(err);
      });
    });
  }
}

export interface StdioBridgeOptions {
  command: string;
  args: string[];
  /** stderr output that means the far side is connected (socat -d -d prints "starting data transfer loop"). */
  readyPattern: RegExp;
  description: string;
}

/**
 * A child process whose stdin/stdout are the byte stream to the agent (socat STDIO <address>).
 * connect() resolves once the child reports it is connected and rejects if it exits first; destroying
 * the returned stream kills the child, and the child exiting ends the stream.
 */
export class StdioBridgeConnector implements AgentConnector {
  constructor(readonly o: StdioBridgeOptions) {}

  get description(): string {
    return this.o.description;
  }

  connect(signal?: AbortSignal): Promise<Duplex> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortError(signal));
      const child = spawn(this.o.command, this.o.args, { stdio: ["pipe", "pipe", "pipe"] });
      let stderr = "";
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener("abort", onAbort);
        child.kill("SIGKILL");
        reject(err);
      };
      const onAbort = () => fail(abortError(signal!));
      signal?.addEventListener("abort", onAbort, { once: true });
      child.stderr!.setEncoding("utf8");
      child.stderr!.on("data", (d: string) => {
        stderr = (stderr + d).slice(-4000);
        if (!settled && this.o.readyPattern.test(stderr)) {
          settled = true;
          signal?.removeEventListener("abort", onAbort);
          const stream = Duplex.from({ readable: child.stdout!, writable: child.stdin! });
          const kill = () => {
            if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
          };
          stream.once("close", kill);
          child.once("exit", () => stream.destroy());
          // EPIPE on stdin after the bridge died surfaces as a stream error; the link handles it as a disconnect.
          child.stdin!.on("error", () => undefined);
          resolve(stream);
        }
      });
      child.once("error", (err) => fail(err));
      child.once("exit", (code, sig) => {
        const tail = stderr.trim().split("\n").slice(-2).join(" | ");
        fail(new Error(`${this.o.command} exited (${code ?? sig}) before connecting${tail ? `: ${tail}` : ""}`));
      });
    });
  }
}

/** The CIDs a guest can never have: 0 hypervisor, 1 local loopback, 2 the host itself. */
const RESERVED_CIDS = new Set([0, 1, 2]);

/** socat argv for the host side of the vsock bridge. */
export function socatVsockConnectArgs(cid: number, port: number): string[] {
  if (!Number.isInteger(cid) || cid < 0 || cid > 0xfffffffe) throw new RangeError(`bad vsock CID ${cid}`);
  if (RESERVED_CIDS.has(cid)) throw new RangeError(`vsock CID ${cid} is reserved and never a guest`);
  if (!Number.isInteger(port) || port < 1 || port > 0xffffffff) throw new RangeError(`bad vsock port ${port}`);
  return ["-d", "-d", "STDIO", `VSOCK-CONNECT:${cid}:${port}`];
}

/**
 * AF_VSOCK to the guest's agent. Node's net.Socket refuses an AF_VSOCK fd (ERR_INVALID_FD_TYPE), so
 * socat dials the CID and relays through its stdio: one socat per connection, no temporary socket
 * files, and the bridge's lifetime is the connection's. The host knows which guest it reaches because
 * it chose the CID.
 */
export class VsockSocatConnector extends StdioBridgeConnector {
  constructor(
    readonly cid: number,
    readonly port = AGENT_VSOCK_PORT,
    socat = "socat",
  ) {
    super({
      command: socat,
      args: socatVsockConnectArgs(cid, port),
      readyPattern: /starting data transfer loop/,
      description: `vsock:${cid}:${port}`,
    });
  }
}

/** The connector that dials `endpoint`; vsock goes through socat (`socat` names its binary). */
export function connectorFor(endpoint: AgentEndpoint, opts: { socat?: string } = {}): AgentConnector {
  return endpoint.kind === "unix" ? new UnixSocketConnector(endpoint.path) : new VsockSocatConnector(endpoint.cid, endpoint.port, opts.socat);
}

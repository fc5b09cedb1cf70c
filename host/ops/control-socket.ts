import { existsSync, unlinkSync } from "node:fs";
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { join } from "node:path";
import type { Logger } from "pino";
import { connects } from "../../shared/util/connects.js";
import { lockHolder } from "./daemon-lock.js";
import { OperatorActionError, type OperatorActions } from "./operator-actions.js";
import { PoolSizeError, type WarmPool } from "../instances/warm-pool.js";

export const CONTROL_SOCKET = "cvmd.sock";
/** sun_path is 108 bytes on Linux, including the terminating NUL. */
const MAX_SOCKET_PATH = 107;

export function controlSocketPath(dataDir: string): string {
  return join(dataDir, CONTROL_SOCKET);
}

/** True when something accepts connections on the socket (a leftover file from a killed cvmd does not). */
export async function socketAnswers(path: string, timeoutMs = 1000): Promise<boolean> {
  return existsSync(path) && (await connects({ path }, timeoutMs));
}

async function readBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > 16 * 1024) throw new OperatorActionError("request body too large");
    chunks.push(c);
  }
  const parsed = chunks.length ? (JSON.parse(Buffer.concat(chunks).toString("utf8")) as unknown) : {};
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new OperatorActionError("body must be a JSON object");
  return parsed as Record<string, unknown>;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "Content-Type": "application/json" }).end(JSON.stringify(body));
}

/**
 * cvmctl's way into the running cvmd for actions that need the lifecycle engine (deleting
 * instances): HTTP over a Unix socket in the data dir, mode 0600, so whoever may read the
 * database may act and nobody else can reach it, over the network or otherwise.
 */
export async function startControlSocket(
  dataDir: string,
  deps: {
    actions: OperatorActions;
    logger: Logger;
    version: string;
    pool?: WarmPool | null;
    /** cvmctl committed a key or tenant change. */
    authChanged?: () => void;
  },
): Promise<{ path: string; close(): Promise<void> } | null> {
  const path = controlSocketPath(dataDir);
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    deps.logger.warn({ path }, "data dir path too long for a Unix socket; cvmctl cannot reach this cvmd for instance deletes");
    return null;
  }
  // We hold the data dir lock, so a socket file here is a leftover of a killed cvmd.
  if (existsSync(path)) unlinkSync(path);
  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (err instanceof OperatorActionError || err instanceof SyntaxError) return send(res, 400, { error: err.message });
      deps.logger.error({ err }, "operator action failed");
      send(res, 500, { error: "internal error; see the cvmd log" });
    });
  });
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const route = `${req.method} ${(req.url ?? "/").split("?")[0]}`;
    if (route === "GET /v1/status") return send(res, 200, { pid: process.pid, version: deps.version });
    if (route === "POST /v1/auth-changed") {
      // Synchronously, before answering: cvmctl returns only after this, so the next tenant
      // request is authenticated against the committed rows.
      deps.authChanged?.();
      return send(res, 200, {});
    }
    if (route === "POST /v1/instances/delete") {
      const b = await readBody(req);
      if (typeof b.tenant !== "string" || typeof b.name !== "string") throw new OperatorActionError("tenant and name are required");
      const inst = await deps.actions.deleteInstance(b.tenant, b.name);
      deps.logger.info({ tenant: b.tenant, instance: b.name, status: inst.status }, "instance deleted by the operator");
      return send(res, 200, { instance: inst });
    }
    if (route === "GET /v1/pool") {
      if (!deps.pool) throw new OperatorActionError("this cvmd's driver cannot keep a warm pool");
      return send(res, 200, await deps.pool.status());
    }
    if (route === "POST /v1/pool/size") {
      if (!deps.pool) throw new OperatorActionError("this cvmd's driver cannot keep a warm pool");
      const b = await readBody(req);
      if (b.image !== undefined && typeof b.image !== "string") throw new OperatorActionError("image must be a string");
      try {
        const r = await deps.pool.resize(b.size as number, b.image as string | undefined);
        return send(res, 200, r);
      } catch (err) {
        if (err instanceof PoolSizeError) throw new OperatorActionError(err.message);
        throw err;
      }
    }
    if (route === "POST /v1/instances/cleanup-failed") {
      const b = await readBody(req);
      if (typeof b.older_than_ms !== "number" || !Number.isSafeInteger(b.older_than_ms) || b.older_than_ms < 0) {
        throw new OperatorActionError("older_than_ms must be a non-negative integer");
      }
      const list = await deps.actions.cleanupFailed(b.older_than_ms);
      deps.logger.info({ count: list.length, older_than_ms: b.older_than_ms }, "failed instances cleaned up by the operator");
      return send(res, 200, { instances: list });
    }
    send(res, 404, { error: `unknown operator request ${route}` });
  };
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    // bind() creates the socket file with 0777 less the umask, and anyone who can connect can act as the operator,
    // so the umask is narrowed around it: a chmod afterwards would leave a window. Node binds a Unix socket
    // synchronously inside listen(), so nothing else runs while the umask is narrowed.
    const umask = process.umask(0o177);
    try {
      server.listen(path, () => resolve());
    } finally {
      process.umask(umask);
    }
  });
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Client side, for cvmctl. Rejects with the server's error text on a non-2xx answer. */
export function controlRequest<T>(socketPath: string, method: string, path: string, body?: unknown, timeoutMs = 120_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request({ socketPath, method, path, headers: payload ? { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(payload) } : {}, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        let parsed: { error?: string } & Record<string, unknown>;
        try {
          parsed = JSON.parse(Buffer.concat(chunks).toString("utf8")) as typeof parsed;
        } catch {
          return reject(new Error(`cvmd answered ${res.statusCode} with a body that is not JSON`));
        }
        if ((res.statusCode ?? 500) >= 300) return reject(new OperatorActionError(parsed.error ?? `cvmd answered ${res.statusCode}`));
        resolve(parsed as T);
      });
    });
    req.on("timeout", () => req.destroy(new Error(`cvmd did not answer within ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end(payload);
  });
}

/**
 * For cvmctl after it committed a key or tenant change: makes the cvmd running on `dataDir` drop
 * its cached credentials, and waits until it has. Without a live cvmd, or before its control
 * socket listens (it is not serving tenants yet, and until then it checks the change file on
 * every request), there is nobody to tell. Any other failure is thrown: the change is committed
 * but cvmd may keep accepting the old credentials for up to its cache's maximum age.
 */
export async function tellDaemonAuthChanged(dataDir: string, timeoutMs = 10_000): Promise<void> {
  const holder = lockHolder(dataDir);
  if (!holder || holder.role !== "cvmd") return;
  const socket = controlSocketPath(dataDir);
  if (!existsSync(socket)) return;
  try {
    await controlRequest(socket, "POST", "/v1/auth-changed", {}, timeoutMs);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ECONNREFUSED" || code === "ENOENT") return;
    throw new OperatorActionError(`committed, but cvmd (pid ${holder.pid}) did not confirm it dropped its cached credentials: ${(err as Error).message}`);
  }
}

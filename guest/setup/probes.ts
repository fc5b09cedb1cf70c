import { request } from "node:http";
import { connects } from "../../shared/util/connects.js";

/** True when something accepts a TCP connection on host:port within timeoutMs. */
export function tcpListening(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return connects({ host, port }, timeoutMs);
}

/** True when GET url answers 2xx within timeoutMs. */
export function httpOk(url: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(url, { method: "GET", timeout: timeoutMs }, (res) => {
      res.resume();
      resolve((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300);
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(false));
    req.end();
  });
}

/** Polls `check` until it is true or the deadline passes. */
export async function waitUntil(check: () => Promise<boolean>, opts: { timeoutMs: number; intervalMs: number; signal?: AbortSignal }): Promise<boolean> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    if (opts.signal?.aborted) return false;
    if (await check()) return true;
    if (Date.now() + opts.intervalMs > deadline) return false;
    await new Promise((r) => setTimeout(r, opts.intervalMs));
  }
}

import { createServer, type Server } from "node:http";
import type { Logger } from "pino";
import type { Metrics } from "./metrics.js";

export interface OperatorListener {
  url: string;
  close(): Promise<void>;
}

/**
 * The operator's scrape endpoint (`GET /metrics`, `GET /healthz`), on its own address so that it
 * is never reachable through the tenant port. Read-only: operator actions go through the control
 * socket in the data dir, which file permissions protect.
 */
export async function startOperatorListener(listen: { host: string; port: number }, deps: { metrics: Metrics; logger: Logger }): Promise<OperatorListener> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { Allow: "GET, HEAD", "Content-Type": "text/plain" }).end("method not allowed\n");
      return;
    }
    if (path === "/healthz") {
      res.writeHead(200, { "Content-Type": "text/plain" }).end("ok\n");
      return;
    }
    if (path !== "/metrics") {
      res.writeHead(404, { "Content-Type": "text/plain" }).end("not found; try /metrics\n");
      return;
    }
    deps.metrics.text().then(
      (text) => res.writeHead(200, { "Content-Type": deps.metrics.contentType }).end(req.method === "HEAD" ? undefined : text),
      (err: unknown) => {
        deps.logger.error({ err }, "metrics scrape failed");
        res.writeHead(500, { "Content-Type": "text/plain" }).end("scrape failed; see the cvmd log\n");
      },
    );
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(listen.port, listen.host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : listen.port;
  const host = listen.host.includes(":") ? `[${listen.host}]` : listen.host;
  return {
    url: `http://${host}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

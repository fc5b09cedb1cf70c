import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Logger } from "pino";
import { MAX_GATEWAY_CHUNK, MAX_REQUEST_ID, type GatewayAgentMessage, type GatewayHeaders, type GatewayHostMessage } from "../../shared/protocol/messages.js";

/** Where OpenClaw's provider `baseUrl` points (the host sends `http://127.0.0.1:18790/v1` as `gateway_address`). */
export const DEFAULT_GATEWAY_LISTEN = { host: "127.0.0.1", port: 18790 };

/**
 * Request headers worth forwarding. Everything else stays in the guest, in particular
 * `authorization`: the guest holds no provider key, and nothing it sends can name an identity.
 */
const FORWARDED_REQUEST_HEADERS = ["content-type", "accept"] as const;

export interface GatewayProxyOptions {
  host: string;
  port: number;
  logger: Logger;
  /** Request bodies above this get 413 in the guest, before they cross the channel. */
  maxRequestBytes?: number;
  /** Requests in flight at once; more get 429. */
  maxOpenStreams?: number;
}

interface Stream {
  id: number;
  res: ServerResponse;
  /** The uplink generation the stream was opened on; a new host session orphans older streams. */
  generation: number;
}

type Send = (m: GatewayAgentMessage) => boolean;

function sendError(res: ServerResponse, status: number, type: string, code: string, message: string, extra: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ error: { message, type, param: null, code } });
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...extra });
  res.end(body);
}

/**
 * The agent's loopback gateway: a tiny HTTP server whose every request is forwarded over the host
 * channel as a gateway stream and answered from what the host sends back. It holds no key and makes
 * no network connection; when no host session that speaks the gateway protocol is open, it answers
 * 503 at once.
 */
export class GatewayProxyServer {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private readonly streams = new Map<number, Stream>();
  private send: Send | null = null;
  private generation = 0;
  private nextId = 1;
  private readonly maxRequestBytes: number;
  private readonly maxOpenStreams: number;

  constructor(private readonly o: GatewayProxyOptions) {
    this.maxRequestBytes = o.maxRequestBytes ?? 4 * 1024 * 1024;
    this.maxOpenStreams = o.maxOpenStreams ?? 64;
  }

  get description(): string {
    return `http://${this.o.host}:${this.port}/v1`;
  }

  get port(): number {
    const a = this.server?.address();
    return typeof a === "object" && a ? a.port : this.o.port;
  }

  get openStreams(): number {
    return this.streams.size;
  }

  async start(): Promise<void> {
    const server = createServer({ noDelay: true, keepAliveTimeout: 30_000 }, (req, res) => this.onRequest(req, res));
    server.on("connection", (s) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.o.port, this.o.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.server = server;
  }

  async close(): Promise<void> {
    this.detach("agent shutting down");
    const server = this.server;
    this.server = null;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((r) => server.close(() => r()));
  }

  /** A host session that carries gateway streams is open; `send` writes into it. Streams of any earlier session fail. */
  attach(send: Send): void {
    this.failAll("the host session was replaced");
    this.generation++;
    this.send = send;
  }

  /** No usable host session: in-flight streams fail, new requests get 503. */
  detach(reason: string): void {
    this.failAll(reason);
    this.generation++;
    this.send = null;
  }

  /** A gateway frame from the host. Frames for streams that are gone (cancelled, or of an older session) are dropped. */
  onHostMessage(m: GatewayHostMessage): void {
    const s = this.streams.get(m.body.stream);
    if (!s || s.generation !== this.generation) return;
    const { res } = s;
    switch (m.type) {
      case "gw_response": {
        if (res.headersSent) {
          this.o.logger.warn({ stream: s.id }, "second gateway response head for a stream; cutting it");
          this.drop(s);
          res.destroy();
          return;
        }
        const headers: Record<string, string | number> = { ...m.body.headers };
        if (m.body.end) headers["content-length"] = m.body.body.length;
        res.writeHead(m.body.status, headers);
        if (m.body.end) {
          this.drop(s);
          res.end(m.body.body);
        } else if (m.body.body.length > 0) res.write(m.body.body);
        return;
      }
      case "gw_response_body":
        if (!res.headersSent) {
          this.drop(s);
          sendError(res, 502, "server_error", "bad_gateway_stream", "the host sent a body before a response");
          return;
        }
        if (m.body.end) {
          this.drop(s);
          res.end(m.body.data);
        } else if (m.body.data.length > 0) res.write(m.body.data);
        return;
      case "gw_reset":
        this.drop(s);
        this.o.logger.info({ stream: s.id, reason: m.body.reason }, "host reset a gateway stream");
        if (res.headersSent) res.destroy();
        else sendError(res, 502, "server_error", "upstream_error", `the gateway abandoned the request: ${m.body.reason}`);
        return;
    }
  }

  private drop(s: Stream): void {
    if (this.streams.get(s.id) === s) this.streams.delete(s.id);
  }

  private failAll(reason: string): void {
    for (const s of this.streams.values()) sendError(s.res, 502, "server_error", "gateway_channel_lost", `the host channel was lost: ${reason}`);
    this.streams.clear();
  }

  private allocId(): number {
    for (;;) {
      const id = this.nextId;
      this.nextId = this.nextId >= MAX_REQUEST_ID ? 1 : this.nextId + 1;
      if (!this.streams.has(id)) return id;
    }
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const path = req.url ?? "";
    if (!(path === "/v1" || path.startsWith("/v1/") || path.startsWith("/v1?"))) {
      req.resume();
      return sendError(res, 404, "invalid_request_error", "not_found", "the gateway serves /v1 only");
    }
    if (req.method !== "GET" && req.method !== "POST") {
      req.resume();
      return sendError(res, 405, "invalid_request_error", "method_not_allowed", "the gateway accepts GET and POST");
    }
    if (path.length > 2048 || !/^\/[\x21-\x7e]*$/.test(path)) {
      req.resume();
      return sendError(res, 400, "invalid_request_error", "invalid_path", "the request path is too long or not plain ASCII");
    }
    const declared = Number(req.headers["content-length"] ?? 0);
    if (declared > this.maxRequestBytes) {
      req.resume();
      return sendError(res, 413, "invalid_request_error", "request_too_large", `request bodies are limited to ${this.maxRequestBytes} bytes`);
    }
    const chunks: Buffer[] = [];
    let bytes = 0;
    let refused = false;
    req.on("data", (c: Buffer) => {
      if (refused) return;
      bytes += c.length;
      if (bytes > this.maxRequestBytes) {
        refused = true;
        sendError(res, 413, "invalid_request_error", "request_too_large", `request bodies are limited to ${this.maxRequestBytes} bytes`);
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => {
      if (!refused) this.forward(req, res, req.method as "GET" | "POST", path, Buffer.concat(chunks, bytes));
    });
    req.on("error", () => res.destroy());
  }

  private forward(req: IncomingMessage, res: ServerResponse, method: "GET" | "POST", path: string, body: Buffer): void {
    const send = this.send;
    if (!send) return sendError(res, 503, "server_error", "gateway_unavailable", "the inference gateway is not connected to the host", { "retry-after": "1" });
    if (this.streams.size >= this.maxOpenStreams) {
      return sendError(res, 429, "rate_limit_exceeded", "too_many_streams", `at most ${this.maxOpenStreams} gateway requests may be open at once`, { "retry-after": "1" });
    }
    const headers: GatewayHeaders = {};
    for (const name of FORWARDED_REQUEST_HEADERS) {
      const v = req.headers[name];
      if (typeof v === "string" && v.length <= 1024 && /^[\x20-\x7e]*$/.test(v)) headers[name] = v;
    }
    const s: Stream = { id: this.allocId(), res, generation: this.generation };
    this.streams.set(s.id, s);
    res.on("close", () => {
      // The client went away before the response completed: tell the host to stop (and stop billing).
      if (this.streams.get(s.id) === s) {
        this.streams.delete(s.id);
        if (s.generation === this.generation) this.send?.({ type: "gw_cancel", body: { stream: s.id } });
      }
    });
    const first = body.subarray(0, MAX_GATEWAY_CHUNK);
    let ok = send({ type: "gw_request", body: { stream: s.id, method, path, headers, body: first, end: first.length === body.length } });
    for (let off = first.length; ok && off < body.length; off += MAX_GATEWAY_CHUNK) {
      ok = send({ type: "gw_request_body", body: { stream: s.id, data: body.subarray(off, off + MAX_GATEWAY_CHUNK), end: off + MAX_GATEWAY_CHUNK >= body.length } });
    }
    if (!ok) {
      this.drop(s);
      sendError(res, 503, "server_error", "gateway_unavailable", "the request could not be sent to the host", { "retry-after": "1" });
    }
  }
}

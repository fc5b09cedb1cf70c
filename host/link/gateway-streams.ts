import type { Logger } from "pino";
import type { MessageStream } from "../../shared/protocol/message-stream.js";
import {
  MAX_GATEWAY_CHUNK,
  byeReason,
  type AgentMessage,
  type GatewayAgentMessage,
  type GatewayHeaders,
  type GatewayMethod,
  type HostMessage,
} from "../../shared/protocol/messages.js";

/** One HTTP request a guest client sent to the agent's loopback gateway, reassembled by the link. */
export interface GatewayHttpRequest {
  method: GatewayMethod;
  /** Path and query, e.g. `/v1/chat/completions`. */
  path: string;
  /** Lower-case names; only what the agent forwards (never credentials). */
  headers: GatewayHeaders;
  body: Buffer;
  /** Aborted when the guest client goes away, the session ends or the link closes. */
  signal: AbortSignal;
}

/** How a handler answers. Every method is a no-op once the stream is finished, cancelled or its session gone. */
export interface GatewayHttpResponse {
  readonly headSent: boolean;
  /** A complete response in one go (one frame when the body is small). */
  send(status: number, headers: GatewayHeaders, body: Buffer): void;
  /** Status and headers of a streamed response. */
  head(status: number, headers: GatewayHeaders): void;
  /**
   * A body chunk. Returns false when the channel is backed up: the writer should wait for drained()
   * before reading more from its source, so a fast upstream cannot flood the link.
   */
  write(chunk: Buffer): boolean;
  drained(): Promise<void>;
  end(): void;
  /** Abandons the response: the guest client sees its connection cut rather than a clean end. */
  reset(reason: string): void;
}

/** Serves gateway requests arriving on one instance's link; the link, not the request, says which instance. */
export type GatewayHandler = (req: GatewayHttpRequest, res: GatewayHttpResponse) => Promise<void>;

export interface GatewayStreamLimits {
  /** Largest request body reassembled (413 above it). */
  maxRequestBytes: number;
  /** Streams open at once on one session; more get 429 without reaching the handler. */
  maxOpenStreams: number;
}

export const DEFAULT_GATEWAY_STREAM_LIMITS: GatewayStreamLimits = { maxRequestBytes: 4 * 1024 * 1024, maxOpenStreams: 64 };

/** Above this many unsent bytes on the channel, response writers wait for it to drain. */
const HIGH_WATER = 1024 * 1024;

interface OpenStream {
  id: number;
  method: GatewayMethod;
  path: string;
  headers: GatewayHeaders;
  chunks: Buffer[];
  bytes: number;
  /** The request body is complete and the handler owns the stream. */
  dispatched: boolean;
  abort: AbortController;
}

function jsonError(status: number, type: string, code: string, message: string): { status: number; headers: GatewayHeaders; body: Buffer } {
  return {
    status,
    headers: { "content-type": "application/json" },
    body: Buffer.from(JSON.stringify({ error: { message, type, param: null, code } })),
  };
}

/**
 * The host side of the gateway streams of one agent session: reassembles request bodies (bounded),
 * hands complete requests to the link's handler, and frames the handler's response back. A session
 * ending aborts every stream on it; stream ids do not outlive their session.
 */
export class GatewayStreams {
  private readonly open = new Map<number, OpenStream>();
  private closed = false;

  constructor(
    private readonly stream: MessageStream<AgentMessage, HostMessage>,
    private readonly handler: () => GatewayHandler | null,
    private readonly limits: GatewayStreamLimits,
    private readonly log: Logger,
  ) {}

  get openStreams(): number {
    return this.open.size;
  }

  /** Handles one gateway message; returns a protocol violation reason or null. */
  onMessage(m: GatewayAgentMessage): string | null {
    if (this.closed) return null;
    switch (m.type) {
      case "gw_request": {
        const b = m.body;
        if (this.open.has(b.stream)) return `gateway stream ${b.stream} opened twice`;
        if (this.open.size >= this.limits.maxOpenStreams) {
          const e = jsonError(429, "rate_limit_exceeded", "too_many_streams", `at most ${this.limits.maxOpenStreams} gateway requests may be open at once`);
          this.sendWhole(b.stream, e.status, e.headers, e.body);
          return null;
        }
        const s: OpenStream = { id: b.stream, method: b.method, path: b.path, headers: b.headers, chunks: [], bytes: 0, dispatched: false, abort: new AbortController() };
        this.open.set(b.stream, s);
        this.addBody(s, b.body, b.end);
        return null;
      }
      case "gw_request_body": {
        const s = this.open.get(m.body.stream);
        if (!s) {
          // The stream was refused (too large) or cancelled while the agent was still sending.
          this.log.debug({ stream: m.body.stream }, "body for a gateway stream that is not open; ignored");
          return null;
        }
        if (s.dispatched) return `gateway stream ${s.id} sent body after its end`;
        this.addBody(s, m.body.data, m.body.end);
        return null;
      }
      case "gw_cancel": {
        const s = this.open.get(m.body.stream);
        if (s) {
          this.open.delete(s.id);
          s.abort.abort(new Error("guest client went away"));
        }
        return null;
      }
    }
  }

  /** The session is over: every stream's handler sees its signal abort. */
  closeAll(reason: string): void {
    this.closed = true;
    for (const s of this.open.values()) s.abort.abort(new Error(reason));
    this.open.clear();
  }

  private addBody(s: OpenStream, data: Buffer, end: boolean): void {
    if (data.length > 0) {
      s.bytes += data.length;
      if (s.bytes > this.limits.maxRequestBytes) {
        this.open.delete(s.id);
        const e = jsonError(413, "invalid_request_error", "request_too_large", `request bodies are limited to ${this.limits.maxRequestBytes} bytes`);
        this.sendWhole(s.id, e.status, e.headers, e.body);
        return;
      }
      s.chunks.push(data);
    }
    if (end) this.dispatch(s);
  }

  private dispatch(s: OpenStream): void {
    s.dispatched = true;
    const body = s.chunks.length === 1 ? s.chunks[0]! : Buffer.concat(s.chunks);
    s.chunks = [];
    const res = this.responder(s);
    const handler = this.handler();
    if (!handler) {
      const e = jsonError(503, "server_error", "gateway_unavailable", "the inference gateway is not enabled for this instance");
      res.send(e.status, e.headers, e.body);
      return;
    }
    const req: GatewayHttpRequest = { method: s.method, path: s.path, headers: s.headers, body, signal: s.abort.signal };
    handler(req, res).then(
      () => {
        // A handler that returns without finishing would leave the guest client hanging.
        if (this.open.get(s.id) === s) res.reset("handler returned without completing the response");
      },
      (err: Error) => {
        this.log.error({ err: err.message, stream: s.id }, "gateway handler failed");
        if (!res.headSent) {
          const e = jsonError(500, "server_error", "internal_error", "the inference gateway failed to handle the request");
          res.send(e.status, e.headers, e.body);
        } else res.reset("gateway handler failed");
      },
    );
  }

  private live(s: OpenStream): boolean {
    return !this.closed && this.open.get(s.id) === s && !this.stream.closed;
  }

  private finish(s: OpenStream): void {
    if (this.open.get(s.id) === s) this.open.delete(s.id);
  }

  private sendWhole(stream: number, status: number, headers: GatewayHeaders, body: Buffer): void {
    const first = body.subarray(0, MAX_GATEWAY_CHUNK);
    const more = body.length > first.length;
    this.stream.send({ type: "gw_response", body: { stream, status, headers, body: first, end: !more } });
    for (let off = first.length; off < body.length; off += MAX_GATEWAY_CHUNK) {
      const end = off + MAX_GATEWAY_CHUNK >= body.length;
      this.stream.send({ type: "gw_response_body", body: { stream, data: body.subarray(off, off + MAX_GATEWAY_CHUNK), end } });
    }
  }

  private responder(s: OpenStream): GatewayHttpResponse {
    let headSent = false;
    const self = this;
    return {
      get headSent() {
        return headSent;
      },
      send(status, headers, body) {
        if (headSent || !self.live(s)) return;
        headSent = true;
        self.finish(s);
        self.sendWhole(s.id, status, headers, body);
      },
      head(status, headers) {
        if (headSent || !self.live(s)) return;
        headSent = true;
        self.stream.send({ type: "gw_response", body: { stream: s.id, status, headers, body: Buffer.alloc(0), end: false } });
      },
      write(chunk) {
        if (!headSent || !self.live(s)) return true;
        for (let off = 0; off < chunk.length; off += MAX_GATEWAY_CHUNK) {
          self.stream.send({ type: "gw_response_body", body: { stream: s.id, data: chunk.subarray(off, off + MAX_GATEWAY_CHUNK), end: false } });
        }
        return self.stream.backlog <= HIGH_WATER;
      },
      drained() {
        return self.stream.drained();
      },
      end() {
        if (!headSent || !self.live(s)) return;
        self.finish(s);
        self.stream.send({ type: "gw_response_body", body: { stream: s.id, data: Buffer.alloc(0), end: true } });
      },
      reset(reason) {
        if (!self.live(s)) return;
        headSent = true;
        self.finish(s);
        s.abort.abort(new Error(reason));
        self.stream.send({ type: "gw_reset", body: { stream: s.id, reason: byeReason(reason) } });
      },
    };
  }
}

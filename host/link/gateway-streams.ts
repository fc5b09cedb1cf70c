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
  /**
   * The guest's buffer account this stream is charged to (its body already is). A handler that holds
   * more of the guest's traffic in memory (a response it collects) takes it from here first.
   */
  buffers: GuestBufferAccount;
}

/** How a handler answers. Every method is a no-op once the stream is finished, cancelled or its session gone. */
export interface GatewayHttpResponse {
  readonly headSent: boolean;
  /** A complete response in one go (one frame when the body is small). */
  send(status: number, headers: GatewayHeaders, body: Buffer): void;
  /** Status and headers of a streamed response. */
  head(status: number, headers: GatewayHeaders): void;
  /**
   * A body chunk, queued until the channel takes it. Returns false when this stream has bytes queued
   * or the channel is backed up: the writer should wait for drained() before reading more from its
   * source, so a fast upstream cannot flood the link or the host's memory.
   */
  write(chunk: Buffer): boolean;
  /** Resolves once this stream's queued bytes are on the channel (or the stream is gone). */
  drained(): Promise<void>;
  end(): void;
  /** Abandons the response: the guest client sees its connection cut rather than a clean end. */
  reset(reason: string): void;
}

/**
 * Serves gateway requests arriving on one instance's link; the link, not the request, says which
 * instance. `buffers` is that instance's account; a handler without one gets an account per session.
 */
export type GatewayHandler = ((req: GatewayHttpRequest, res: GatewayHttpResponse) => Promise<void>) & { readonly buffers?: GuestBufferAccount };

export interface GatewayStreamLimits {
  /** Largest request body reassembled (413 above it). */
  maxRequestBytes: number;
  /** Streams open at once on one session; more get 429 without reaching the handler. */
  maxOpenStreams: number;
  /** Capacity of the per-session account used when the handler brings none (see GuestBufferAccount). */
  maxBufferedBytes: number;
}

export const DEFAULT_GATEWAY_STREAM_LIMITS: GatewayStreamLimits = { maxRequestBytes: 4 * 1024 * 1024, maxOpenStreams: 64, maxBufferedBytes: 16 * 1024 * 1024 };

/** Above this many unsent bytes on the channel, queued frames wait for it to drain. */
const HIGH_WATER = 1024 * 1024;
/** Error bodies this small go out even when the account is full: a guest must still hear why. */
const UNCHARGED_BODY = 16 * 1024;

/**
 * The bytes of one guest's gateway traffic held in host memory, across all its streams and sessions:
 * request bodies from the first chunk until their stream is finished, responses from when a handler
 * collects them until they are on the channel. Without one cap per guest, 64 streams of 4 MiB each
 * (or 16 concurrent 16 MiB responses) would each be within their own limit and together pin
 * hundreds of MiB. An episode starts when a take is refused and ends once usage is back under half
 * the capacity; `onEpisode` hears of each start once, so a guest that keeps pushing is one record.
 */
export class GuestBufferAccount {
  private used = 0;
  private inEpisode = false;
  /** Takes refused in the current (or last) episode. */
  refused = 0;

  constructor(
    readonly capacity: number,
    private readonly onEpisode: (e: { capacity: number; held: number; wanted: number }) => void = () => undefined,
  ) {}

  get held(): number {
    return this.used;
  }

  /** Takes `n` bytes if they fit; otherwise takes nothing and returns false. */
  take(n: number): boolean {
    if (this.used + n <= this.capacity) {
      this.used += n;
      return true;
    }
    this.refused++;
    if (!this.inEpisode) {
      this.inEpisode = true;
      this.onEpisode({ capacity: this.capacity, held: this.used, wanted: n });
    }
    return false;
  }

  release(n: number): void {
    this.used = Math.max(0, this.used - n);
    if (this.inEpisode && this.used <= this.capacity / 2) {
      this.inEpisode = false;
      this.refused = 0;
    }
  }
}

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
  account: GuestBufferAccount;
  /** Request bytes charged to `account`, released when the stream is finished. */
  charged: number;
  /** Frames of this stream still in the session's send queue. */
  queued: number;
  /** Cancelled, reset or its session gone: queued frames are dropped, not sent. */
  dead: boolean;
  drainWaiters: Array<() => void>;
}

/** One frame waiting for the channel, and the response bytes it releases once sent. */
interface QueuedFrame {
  s: OpenStream | null;
  msg: HostMessage;
  release: number;
  /** Body bytes of a refusal (a frame of no stream), counted in `refusalBytes`. */
  refusal: number;
}

/**
 * Refusals are small and uncharged, but a guest that opens stream after stream without reading its
 * channel would pile them up; past this many queued bytes of them the session is ended instead.
 */
const MAX_QUEUED_REFUSAL_BYTES = 256 * 1024;

function jsonError(status: number, type: string, code: string, message: string): { status: number; headers: GatewayHeaders; body: Buffer } {
  return {
    status,
    headers: { "content-type": "application/json" },
    body: Buffer.from(JSON.stringify({ error: { message, type, param: null, code } })),
  };
}

/** The answer when a guest's buffer account is full; a retry once its other requests finish may pass. */
export function bufferFull(a: GuestBufferAccount): { status: number; headers: GatewayHeaders; body: Buffer } {
  return jsonError(
    429,
    "rate_limit_exceeded",
    "buffer_limit_exceeded",
    `this instance's gateway requests and responses may hold at most ${a.capacity} bytes in the host at once; retry when its other requests finish`,
  );
}

/**
 * The host side of the gateway streams of one agent session: reassembles request bodies (bounded),
 * hands complete requests to the link's handler, and frames the handler's response back. A session
 * ending aborts every stream on it; stream ids do not outlive their session.
 */
export class GatewayStreams {
  private readonly open = new Map<number, OpenStream>();
  private closed = false;
  /** Frames in send order; written only while the channel's backlog is under HIGH_WATER. */
  private readonly sendQueue: QueuedFrame[] = [];
  private waitingForDrain = false;
  private refusalBytes = 0;
  private sessionAccount: GuestBufferAccount | null = null;

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
        if (this.refusalBytes > MAX_QUEUED_REFUSAL_BYTES) return `gateway refusals backed up (${this.refusalBytes} bytes): the agent does not read its channel`;
        if (this.open.size >= this.limits.maxOpenStreams) {
          const e = jsonError(429, "rate_limit_exceeded", "too_many_streams", `at most ${this.limits.maxOpenStreams} gateway requests may be open at once`);
          this.sendWhole(null, b.stream, e.status, e.headers, e.body, 0);
          return null;
        }
        const handler = this.handler();
        if (!handler) {
          // Answered before the body arrives: nothing of a request no one will serve is buffered.
          const e = jsonError(503, "server_error", "gateway_unavailable", "the inference gateway is not enabled for this instance");
          this.sendWhole(null, b.stream, e.status, e.headers, e.body, 0);
          return null;
        }
        const account = handler.buffers ?? (this.sessionAccount ??= new GuestBufferAccount(this.limits.maxBufferedBytes));
        const s: OpenStream = {
          id: b.stream,
          method: b.method,
          path: b.path,
          headers: b.headers,
          chunks: [],
          bytes: 0,
          dispatched: false,
          abort: new AbortController(),
          account,
          charged: 0,
          queued: 0,
          dead: false,
          drainWaiters: [],
        };
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
          this.kill(s, new Error("guest client went away"));
        }
        return null;
      }
    }
  }

  /** The session is over: every stream's handler sees its signal abort. */
  closeAll(reason: string): void {
    this.closed = true;
    for (const s of this.open.values()) this.kill(s, new Error(reason));
    this.open.clear();
    for (const f of this.sendQueue.splice(0)) this.sent(f);
  }

  private addBody(s: OpenStream, data: Buffer, end: boolean): void {
    if (data.length > 0) {
      s.bytes += data.length;
      if (s.bytes > this.limits.maxRequestBytes) {
        this.refuse(s, jsonError(413, "invalid_request_error", "request_too_large", `request bodies are limited to ${this.limits.maxRequestBytes} bytes`));
        return;
      }
      if (!s.account.take(data.length)) {
        this.log.info({ stream: s.id, held: s.account.held, capacity: s.account.capacity }, "gateway request refused: the guest's buffer is full");
        this.refuse(s, bufferFull(s.account));
        return;
      }
      s.charged += data.length;
      s.chunks.push(data);
    }
    if (end) this.dispatch(s);
  }

  /** Ends a stream whose body is still arriving: the rest of it is ignored (the stream is no longer open). */
  private refuse(s: OpenStream, e: { status: number; headers: GatewayHeaders; body: Buffer }): void {
    this.open.delete(s.id);
    this.kill(s, new Error(`refused with ${e.status}`));
    this.sendWhole(null, s.id, e.status, e.headers, e.body, 0);
  }

  /** The stream is over without a clean end: its handler is told, its bytes released, its queued frames dropped. */
  private kill(s: OpenStream, reason: Error): void {
    s.dead = true;
    s.chunks = [];
    this.releaseRequest(s);
    s.abort.abort(reason);
    for (const w of s.drainWaiters.splice(0)) w();
  }

  private releaseRequest(s: OpenStream): void {
    s.account.release(s.charged);
    s.charged = 0;
  }

  private dispatch(s: OpenStream): void {
    s.dispatched = true;
    const body = s.chunks.length === 1 ? s.chunks[0]! : Buffer.concat(s.chunks);
    s.chunks = [];
    const res = this.responder(s);
    // Looked up again: the link may have been rebound while the body was arriving.
    const handler = this.handler();
    if (!handler) {
      const e = jsonError(503, "server_error", "gateway_unavailable", "the inference gateway is not enabled for this instance");
      res.send(e.status, e.headers, e.body);
      return;
    }
    const req: GatewayHttpRequest = { method: s.method, path: s.path, headers: s.headers, body, signal: s.abort.signal, buffers: s.account };
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
    this.releaseRequest(s);
  }

  /** Queues a whole response; `charged` bytes (already taken from the stream's account) are released once it is sent. */
  private sendWhole(s: OpenStream | null, stream: number, status: number, headers: GatewayHeaders, body: Buffer, charged: number): void {
    const first = body.subarray(0, MAX_GATEWAY_CHUNK);
    const frames: HostMessage[] = [{ type: "gw_response", body: { stream, status, headers, body: first, end: body.length === first.length } }];
    for (let off = first.length; off < body.length; off += MAX_GATEWAY_CHUNK) {
      frames.push({ type: "gw_response_body", body: { stream, data: body.subarray(off, off + MAX_GATEWAY_CHUNK), end: off + MAX_GATEWAY_CHUNK >= body.length } });
    }
    // The body is one buffer: its bytes are freed when its last frame goes, so that frame releases them.
    frames.forEach((msg, i) => this.enqueue(s, msg, i === frames.length - 1 ? charged : 0, s ? 0 : body.length));
  }

  private enqueue(s: OpenStream | null, msg: HostMessage, release: number, refusal = 0): void {
    if (s) s.queued++;
    this.refusalBytes += refusal;
    this.sendQueue.push({ s, msg, release, refusal });
    this.pumpQueue();
  }

  /** Writes queued frames while the channel keeps up; otherwise waits for it to drain. Never queues in the socket beyond HIGH_WATER plus one frame. */
  private pumpQueue(): void {
    while (this.sendQueue.length > 0 && !this.waitingForDrain) {
      if (this.stream.closed) {
        for (const f of this.sendQueue.splice(0)) this.sent(f);
        return;
      }
      if (this.stream.backlog > HIGH_WATER) {
        this.waitingForDrain = true;
        void this.stream.drained().then(() => {
          this.waitingForDrain = false;
          this.pumpQueue();
        });
        return;
      }
      const f = this.sendQueue.shift()!;
      if (!f.s?.dead) this.stream.send(f.msg);
      this.sent(f);
    }
  }

  private sent(f: QueuedFrame): void {
    this.refusalBytes -= f.refusal;
    const s = f.s;
    if (!s) return;
    s.account.release(f.release);
    if (--s.queued === 0) for (const w of s.drainWaiters.splice(0)) w();
  }

  private responder(s: OpenStream): GatewayHttpResponse {
    let headSent = false;
    const self = this;
    const res: GatewayHttpResponse = {
      get headSent() {
        return headSent;
      },
      send(status, headers, body) {
        if (headSent || !self.live(s)) return;
        headSent = true;
        self.finish(s);
        if (body.length > UNCHARGED_BODY && !s.account.take(body.length)) {
          self.log.info({ stream: s.id, bytes: body.length, held: s.account.held }, "gateway response refused: the guest's buffer is full");
          const e = bufferFull(s.account);
          self.sendWhole(s, s.id, e.status, e.headers, e.body, 0);
          return;
        }
        self.sendWhole(s, s.id, status, headers, body, body.length > UNCHARGED_BODY ? body.length : 0);
      },
      head(status, headers) {
        if (headSent || !self.live(s)) return;
        headSent = true;
        self.enqueue(s, { type: "gw_response", body: { stream: s.id, status, headers, body: Buffer.alloc(0), end: false } }, 0);
      },
      write(chunk) {
        if (!headSent || !self.live(s)) return true;
        if (!s.account.take(chunk.length)) {
          self.log.info({ stream: s.id, bytes: chunk.length, held: s.account.held }, "gateway response cut: the guest's buffer is full");
          res.reset("the instance's gateway buffer is full");
          return true;
        }
        for (let off = 0; off < chunk.length; off += MAX_GATEWAY_CHUNK) {
          const data = chunk.subarray(off, off + MAX_GATEWAY_CHUNK);
          self.enqueue(s, { type: "gw_response_body", body: { stream: s.id, data, end: false } }, off + MAX_GATEWAY_CHUNK >= chunk.length ? chunk.length : 0);
        }
        return s.queued === 0 && self.stream.backlog <= HIGH_WATER;
      },
      drained() {
        if (s.queued === 0 || s.dead) return Promise.resolve();
        return new Promise((resolve) => s.drainWaiters.push(resolve));
      },
      end() {
        if (!headSent || !self.live(s)) return;
        self.finish(s);
        self.enqueue(s, { type: "gw_response_body", body: { stream: s.id, data: Buffer.alloc(0), end: true } }, 0);
      },
      reset(reason) {
        if (!self.live(s)) return;
        headSent = true;
        self.finish(s);
        self.kill(s, new Error(reason));
        // Frames of this stream still queued are dropped; the reset itself must go out.
        self.enqueue(null, { type: "gw_reset", body: { stream: s.id, reason: byeReason(reason) } }, 0);
      },
    };
    return res;
  }
}

import type { Logger } from "pino";
import { decodeHostMessage } from "../../shared/protocol/codec.js";
import { MessageStream } from "../../shared/protocol/message-stream.js";
import {
  GATEWAY_PROTOCOL_VERSION,
  PREPARE_PROTOCOL_VERSION,
  SUPPORTED_PROTOCOL_VERSIONS,
  byeReason,
  isGatewayMessage,
  type GatewayHostMessage,
  type AgentHello,
  type AgentMessage,
  type ErrorCode,
  type HostMessage,
  type QuoteReply,
  type SetupParams,
} from "../../shared/protocol/messages.js";
import type { HostConnection } from "./transports.js";

export type SetupOutcome = { ok: true; alreadyApplied: boolean } | { ok: false; code: ErrorCode; message: string };

/** What a session needs from the agent: exactly the host-facing surface, nothing more. */
export interface SessionHandler {
  hello(version: number): AgentHello;
  setup(params: SetupParams): Promise<SetupOutcome>;
  /** A tenant-less preparation (sessions of version ≥ PREPARE_PROTOCOL_VERSION only). */
  prepare(): Promise<SetupOutcome>;
  quote(nonce: Buffer): Promise<QuoteReply>;
  /** The session completed a hello and may now receive events. */
  opened(session: HostSession): void;
  closed(session: HostSession): void;
  /** A gateway stream frame in a session of version ≥ GATEWAY_PROTOCOL_VERSION. */
  gateway?(session: HostSession, m: GatewayHostMessage): void;
}

/**
 * One host connection. The host speaks first: until its hello arrives nothing else is answered, and
 * every later hello starts a new session on the same stream (on virtio-serial that is how the agent
 * learns a new host has attached). Invalid input ends the session with a logged reason; on a socket
 * the connection is closed, on a persistent pipe the session returns to waiting for a hello.
 */
export class HostSession {
  private readonly stream: MessageStream<HostMessage, AgentMessage>;
  private state: "awaiting_hello" | "open" | "closed" = "awaiting_hello";
  /** Increments per hello; replies computed for an earlier epoch are not sent into a newer session. */
  private epoch = 0;
  /** Protocol version negotiated by the current hello. */
  private negotiated = 0;

  constructor(
    private readonly conn: HostConnection,
    private readonly handler: SessionHandler,
    private readonly logger: Logger,
  ) {
    this.stream = new MessageStream(conn.stream, decodeHostMessage);
    this.stream.on("message", (m) => this.onMessage(m));
    this.stream.on("skipped", ({ bytes, reason }) => {
      if (this.state === "awaiting_hello") this.logger.debug({ bytes, reason }, "skipped bytes before host hello");
      else if (conn.persistent) {
        // On a pipe that outlives host connections this is what a host going away mid-frame looks
        // like; the session is over, and the next hello (often in the same read) starts a new one.
        this.logger.info({ bytes, reason }, "stale bytes on the port; host session ended");
        this.state = "awaiting_hello";
        this.handler.closed(this);
      } else this.violation(`framing: ${reason} (${bytes} bytes)`);
    });
    this.stream.on("invalid", (reason) => this.violation(reason));
    this.stream.on("closed", (reason) => {
      const wasOpen = this.state === "open";
      this.state = "closed";
      this.logger.info({ reason, transport: conn.label }, "host connection closed");
      if (wasOpen) this.handler.closed(this);
    });
  }

  get isOpen(): boolean {
    return this.state === "open";
  }

  /** The version the open session negotiated (0 before a hello). */
  get version(): number {
    return this.state === "open" ? this.negotiated : 0;
  }

  /** Sends an event if a session is open. */
  send(msg: AgentMessage): boolean {
    if (msg.type === "prepared" && this.negotiated < PREPARE_PROTOCOL_VERSION) return false;
    return this.state === "open" && this.stream.send(msg);
  }

  close(reason: string): void {
    if (this.state === "closed") return;
    this.stream.send({ type: "bye", body: { reason: byeReason(reason) } });
    const wasOpen = this.state === "open";
    this.state = "closed";
    this.stream.end(reason);
    if (wasOpen) this.handler.closed(this);
  }

  private violation(reason: string): void {
    this.logger.warn({ reason, transport: this.conn.label }, "protocol violation from host; ending session");
    if (this.conn.persistent) {
      this.stream.send({ type: "bye", body: { reason: byeReason(`protocol violation: ${reason}`) } });
      if (this.state === "open") {
        this.state = "awaiting_hello";
        this.handler.closed(this);
      }
    } else {
      this.close(`protocol violation: ${reason}`);
    }
  }

  private reply(epoch: number, msg: AgentMessage): void {
    if (epoch === this.epoch && this.state === "open") this.stream.send(msg);
  }

  private onMessage(m: HostMessage): void {
    if (this.state === "closed") return;
    if (m.type === "hello") {
      const version = SUPPORTED_PROTOCOL_VERSIONS.find((v) => m.body.versions.includes(v));
      if (version === undefined) {
        this.stream.send({ type: "error", re: m.id, body: { code: "unsupported_version", message: `agent speaks protocol ${SUPPORTED_PROTOCOL_VERSIONS.join(", ")}` } });
        this.violation(`no common protocol version (host offers ${m.body.versions.join(", ")})`);
        return;
      }
      const wasOpen = this.state === "open";
      this.epoch++;
      this.negotiated = version;
      this.state = "open";
      if (wasOpen) this.logger.info({ transport: this.conn.label }, "new host hello on the same stream; session restarted");
      this.stream.send({ type: "hello", re: m.id, body: this.handler.hello(version) });
      this.logger.info({ host_version: m.body.host_version, version }, "host session open");
      this.handler.opened(this);
      return;
    }
    if (m.type === "bye") {
      this.logger.info({ reason: m.body.reason }, "host said bye");
      if (this.conn.persistent) {
        if (this.state === "open") {
          this.state = "awaiting_hello";
          this.handler.closed(this);
        }
      } else this.close("host said bye");
      return;
    }
    if (isGatewayMessage(m)) {
      // Outside a session these can only be stale frames of an earlier host connection.
      if (this.state !== "open") return;
      if (this.negotiated < GATEWAY_PROTOCOL_VERSION) return this.violation(`${m.type} in a protocol ${this.negotiated} session`);
      this.handler.gateway?.(this, m);
      return;
    }
    if (this.state !== "open") {
      this.stream.send({ type: "error", re: m.id, body: { code: "not_ready_for_request", message: "send hello first" } });
      return;
    }
    const epoch = this.epoch;
    if (m.type === "setup" || m.type === "prepare") {
      if (m.type === "prepare" && this.negotiated < PREPARE_PROTOCOL_VERSION) return this.violation(`prepare in a protocol ${this.negotiated} session`);
      const what = m.type;
      (m.type === "setup" ? this.handler.setup(m.body) : this.handler.prepare()).then(
        (r) =>
          this.reply(epoch, r.ok ? { type: "ack", re: m.id, body: { already_applied: r.alreadyApplied } } : { type: "error", re: m.id, body: { code: r.code, message: r.message } }),
        (err: Error) => {
          this.logger.error({ err }, `${what} request failed`);
          this.reply(epoch, { type: "error", re: m.id, body: { code: "internal_error", message: `${what} could not be accepted` } });
        },
      );
      return;
    }
    if (m.type === "quote") {
      this.handler.quote(m.body.nonce).then(
        (body) => this.reply(epoch, { type: "quote_reply", re: m.id, body }),
        (err: Error) => {
          this.logger.error({ err }, "quote request failed");
          this.reply(epoch, { type: "error", re: m.id, body: { code: "internal_error", message: "quote failed" } });
        },
      );
    }
  }
}

import { randomInt } from "node:crypto";
import { EventEmitter } from "node:events";
import type { Logger } from "pino";
import { decodeAgentMessage } from "../../shared/protocol/codec.js";
import { MessageStream } from "../../shared/protocol/message-stream.js";
import {
  GATEWAY_PROTOCOL_VERSION,
  MAX_REQUEST_ID,
  PREPARE_PROTOCOL_VERSION,
  SUPPORTED_PROTOCOL_VERSIONS,
  byeReason,
  type AgentHello,
  type AgentMessage,
  type EgressSample,
  type ErrorCode,
  type Failed,
  type Heartbeat,
  type HostMessage,
  type Prepared,
  type Progress,
  type QuoteReply,
  type Ready,
  type SetupAck,
  type SetupParams,
} from "../../shared/protocol/messages.js";
import { setupDigest } from "../../shared/protocol/setup-digest.js";
import { MAX_FRAME_PAYLOAD, FRAME_HEADER_LEN } from "../../shared/protocol/frame.js";
import { ChannelBudget, type ChannelBudgetLimits } from "./channel-budget.js";
import type { AgentConnector } from "./connectors.js";
import { DEFAULT_GATEWAY_STREAM_LIMITS, GatewayStreams, type GatewayHandler, type GatewayStreamLimits } from "./gateway-streams.js";

export interface AgentLinkEvents {
  connected: [];
  disconnected: [string];
  hello: [AgentHello];
  progress: [Progress];
  /** May repeat (e.g. after a reconnect the agent's hello reports it is ready); treat idempotently. */
  ready: [Ready];
  /**
   * A pool guest finished its tenant-less preparation. Also emitted on a hello whose phase is
   * `prepared` (a reconnect after the event was missed); treat idempotently.
   */
  prepared: [Prepared];
  failed: [Failed];
  heartbeat: [Heartbeat];
  egress: [EgressSample];
}

export interface AgentLinkOptions {
  connector: AgentConnector;
  logger: Logger;
  instanceId: string;
  hostVersion?: string;
  connectTimeoutMs?: number;
  helloTimeoutMs?: number;
  requestTimeoutMs?: number;
  /** No message at all for this long ends the session (the agent heartbeats every few seconds). */
  idleTimeoutMs?: number;
  backoff?: { initialMs: number; maxMs: number };
  /** Bounds on the inference gateway streams the agent may open on this link. */
  gatewayLimits?: Partial<GatewayStreamLimits>;
  /** Frames and bytes per second the guest may send (channel-budget.ts); the excess is dropped undecoded. */
  channelBudget?: Partial<ChannelBudgetLimits>;
  /** Where abuse by the guest is recorded (one line per episode); defaults to the link's logger. */
  securityLog?: Logger;
}

/**
 * Before hello, stale bytes are expected (the unfinished tail of the previous host connection's frame
 * on virtio-serial: at most one frame), so they are skipped. Twice that is not a stale tail.
 */
export const MAX_SKIPPED_BEFORE_HELLO = 2 * (MAX_FRAME_PAYLOAD + FRAME_HEADER_LEN);
/** Protocol violations closer together than this are one episode in the security log. */
const VIOLATION_QUIET_MS = 60_000;

/** The agent refused a request with a stable code. */
export class AgentRequestError extends Error {
  override name = "AgentRequestError";
  constructor(
    readonly code: ErrorCode | "disconnected" | "timeout" | "closed",
    message: string,
  ) {
    super(message);
  }
}

export type LinkState = "idle" | "connecting" | "connected" | "closed";

interface Pending {
  type: "setup" | "quote" | "prepare";
  resolve: (m: AgentMessage) => void;
  reject: (e: Error) => void;
}

interface PendingSetup {
  params: SetupParams;
  digest: string;
  promise: Promise<void>;
  resolve: () => void;
  reject: (e: Error) => void;
  sentOn: MessageStream<AgentMessage, HostMessage> | null;
}

/**
 * The host end of one instance's agent channel. Connects, says hello, and keeps doing so with
 * exponential backoff until close(): an agent restart, a QEMU chardev reconnect or a host daemon
 * restart all end in the same place, a new session whose hello carries the agent's current state.
 */
export class AgentLink extends EventEmitter<AgentLinkEvents> {
  private readonly o: Required<Omit<AgentLinkOptions, "backoff" | "gatewayLimits" | "channelBudget" | "securityLog">> & {
    backoff: { initialMs: number; maxMs: number };
    gatewayLimits: GatewayStreamLimits;
  };
  private readonly securityLog: Logger;
  /** Per guest, not per session: reconnecting must not refill it. */
  private readonly budget: ChannelBudget;
  private violations: { count: number; lastAt: number } | null = null;
  /** Whether the last session ended because the guest broke the protocol (no backoff reset then). */
  private lastSessionViolated = false;
  private readonly log: Logger;
  private linkState: LinkState = "idle";
  private stream: MessageStream<AgentMessage, HostMessage> | null = null;
  /**
   * Request ids start at a random point per link: on virtio-serial, replies the agent wrote for a
   * previous host connection can still be in the pipe, and must not match this connection's requests.
   */
  private nextId = 1 + randomInt(MAX_REQUEST_ID - 1);
  private readonly pending = new Map<number, Pending>();
  private setupReq: PendingSetup | null = null;
  private lastHello: AgentHello | null = null;
  private readonly closeCtl = new AbortController();
  private loop: Promise<void> | null = null;
  private waiters = new Set<() => void>();
  private gatewayHandler: GatewayHandler | null = null;
  /** Gateway streams of the current session; null when none is open or it negotiated a version without them. */
  private gateway: GatewayStreams | null = null;

  constructor(opts: AgentLinkOptions) {
    super();
    this.o = {
      hostVersion: "cvmd",
      connectTimeoutMs: 10_000,
      helloTimeoutMs: 10_000,
      requestTimeoutMs: 30_000,
      idleTimeoutMs: 30_000,
      ...opts,
      backoff: opts.backoff ?? { initialMs: 200, maxMs: 5_000 },
      gatewayLimits: { ...DEFAULT_GATEWAY_STREAM_LIMITS, ...opts.gatewayLimits },
    };
    this.log = opts.logger.child({ component: "agent-link", instance: opts.instanceId, channel: opts.connector.description });
    this.securityLog = opts.securityLog ?? this.log;
    this.budget = new ChannelBudget(opts.channelBudget, {
      started: () =>
        this.securityLog.warn(
          { event: "agent_channel_over_budget", instance_id: this.o.instanceId, ...this.budget.limits },
          "guest exceeds its agent channel budget; excess frames dropped",
        ),
      ended: (e) =>
        this.securityLog.info(
          { event: "agent_channel_over_budget_ended", instance_id: this.o.instanceId, dropped_frames: e.droppedFrames, dropped_bytes: e.droppedBytes },
          "agent channel flood ended",
        ),
    });
  }

  /** Frames and bytes dropped over the channel budget since the link was created. */
  get dropped(): { frames: number; bytes: number } {
    return { frames: this.budget.droppedFrames, bytes: this.budget.droppedBytes };
  }

  private get isClosed(): boolean {
    return this.closeCtl.signal.aborted;
  }

  get state(): LinkState {
    return this.linkState;
  }

  /** The agent's most recent hello (null before the first session). */
  get hello(): AgentHello | null {
    return this.lastHello;
  }

  start(): void {
    if (this.loop || this.isClosed) return;
    this.loop = this.run();
  }

  async close(): Promise<void> {
    if (this.isClosed) return;
    this.linkState = "closed";
    this.closeCtl.abort(new Error("link closed"));
    this.stream?.send({ type: "bye", body: { reason: "host closing the link" } });
    this.stream?.end("link closed");
    this.failAll(new AgentRequestError("closed", "link closed"));
    this.budget.flush();
    if (this.setupReq) this.setupReq.reject(new AgentRequestError("closed", "link closed before the agent acknowledged setup"));
    this.setupReq = null;
    this.wake();
    await this.loop;
  }

  /**
   * Sends setup and resolves on the agent's ack. Survives disconnects: the request is re-sent on each
   * new session until acknowledged or refused (the agent accepts an identical setup again).
   */
  setup(params: SetupParams): Promise<void> {
    if (this.isClosed) return Promise.reject(new AgentRequestError("closed", "link closed"));
    const digest = setupDigest(params);
    if (this.setupReq) {
      if (this.setupReq.digest === digest) return this.setupReq.promise;
      return Promise.reject(new AgentRequestError("setup_conflict", "a different setup is already in flight"));
    }
    let resolve!: () => void;
    let reject!: (e: Error) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.setupReq = { params, digest, promise, resolve, reject, sentOn: null };
    this.trySendSetup();
    return promise;
  }

  /**
   * Serves the inference gateway requests the agent forwards on this link. The link is the identity:
   * whatever the handler was built for (an instance id) is what every request on this channel is
   * billed to. Null refuses them (503). Takes effect for requests that complete after the call.
   */
  onGatewayRequest(handler: GatewayHandler | null): void {
    this.gatewayHandler = handler;
  }

  /**
   * Asks a pool guest's agent to do everything that does not depend on a tenant (protocol ≥ 3).
   * Resolves on the agent's ack (`already_applied` when it was already preparing or prepared); the
   * outcome arrives as a `prepared` or `failed` event. Waits for a session up to the request timeout
   * and re-sends after a disconnect (the agent acknowledges a repeated prepare). Rejects with an
   * AgentRequestError on an error reply (e.g. `setup_conflict` once a setup was accepted) or with
   * `unsupported_version` when the agent's session is older than version 3.
   */
  async prepare(): Promise<SetupAck> {
    const deadline = Date.now() + this.o.requestTimeoutMs;
    for (;;) {
      while (this.linkState !== "connected") {
        if (this.isClosed) throw new AgentRequestError("closed", "link closed");
        if (Date.now() >= deadline) throw new AgentRequestError("timeout", "no agent session for the prepare request");
        await this.waitForChange(deadline - Date.now());
      }
      const version = this.lastHello?.version ?? 0;
      if (version < PREPARE_PROTOCOL_VERSION) {
        throw new AgentRequestError("unsupported_version", `the agent's session speaks protocol ${version}; prepare needs ${PREPARE_PROTOCOL_VERSION}`);
      }
      try {
        const reply = await this.request({ type: "prepare", id: 0, body: {} }, deadline - Date.now());
        if (reply.type === "ack") return reply.body;
        throw new AgentRequestError("internal_error", `unexpected reply ${reply.type}`);
      } catch (err) {
        if (err instanceof AgentRequestError && err.code === "disconnected" && !this.isClosed && Date.now() < deadline) continue;
        throw err;
      }
    }
  }

  /** Asks the agent for a quote over `nonce`; waits for a session up to the request timeout. */
  async quote(nonce: Buffer): Promise<QuoteReply> {
    const deadline = Date.now() + this.o.requestTimeoutMs;
    while (this.linkState !== "connected") {
      if (this.isClosed) throw new AgentRequestError("closed", "link closed");
      if (Date.now() >= deadline) throw new AgentRequestError("timeout", "no agent session for the quote request");
      await this.waitForChange(deadline - Date.now());
    }
    const reply = await this.request({ type: "quote", id: 0, body: { nonce } }, deadline - Date.now());
    if (reply.type === "quote_reply") return reply.body;
    throw new AgentRequestError("internal_error", `unexpected reply ${reply.type}`);
  }

  // -------------------------------------------------------------------------------------------------

  private async run(): Promise<void> {
    let delay = this.o.backoff.initialMs;
    while (!this.isClosed) {
      this.linkState = "connecting";
      let reachedHello = false;
      try {
        reachedHello = await this.session();
      } catch (err) {
        if (!this.isClosed) this.log.debug({ err: (err as Error).message }, "agent session attempt failed");
      }
      if (this.isClosed) break;
      this.linkState = "connecting";
      // A guest that breaks the protocol right after hello must not get a fast reconnect loop.
      if (reachedHello && !this.lastSessionViolated) delay = this.o.backoff.initialMs;
      const jittered = delay / 2 + Math.random() * (delay / 2);
      await this.sleep(jittered);
      delay = Math.min(this.o.backoff.maxMs, delay * 2);
    }
  }

  /** One connection: returns whether it got as far as the agent's hello. */
  private async session(): Promise<boolean> {
    const timeout = AbortSignal.timeout(this.o.connectTimeoutMs);
    const signal = AbortSignal.any([this.closeCtl.signal, timeout]);
    const duplex = await this.o.connector.connect(signal);
    if (this.isClosed) {
      duplex.destroy();
      return false;
    }
    const stream = new MessageStream<AgentMessage, HostMessage>(duplex, decodeAgentMessage, (n) => this.budget.admit(n));
    this.stream = stream;
    let helloDone = false;
    let skippedBeforeHello = 0;
    const ended = new Promise<string>((resolve) => {
      let idle: NodeJS.Timeout | null = null;
      const armIdle = (ms: number, why: string) => {
        if (idle) clearTimeout(idle);
        idle = setTimeout(() => finish(why), ms);
      };
      const finish = (reason: string) => {
        if (idle) clearTimeout(idle);
        if (!stream.closed) {
          if (reason.startsWith("protocol violation")) {
            stream.send({ type: "bye", body: { reason: byeReason(reason) } });
            stream.end(reason);
          } else stream.destroy(reason);
        }
        resolve(reason);
      };
      armIdle(this.o.helloTimeoutMs, "no hello from the agent in time");
      stream.on("closed", (reason) => finish(reason));
      // On a fresh connection, stale bytes before the agent's first frame are expected (virtio-serial).
      // After hello the stream is in sync, so any framing error is the guest's doing and ends the session.
      stream.on("skipped", ({ bytes, reason }) => {
        if (helloDone) return finish(`protocol violation: framing: ${reason} (${bytes} bytes)`);
        skippedBeforeHello += bytes;
        if (skippedBeforeHello > MAX_SKIPPED_BEFORE_HELLO) return finish(`protocol violation: ${skippedBeforeHello} bytes without a frame before hello (last: ${reason})`);
        this.log.debug({ bytes, reason, total: skippedBeforeHello }, "skipped stale bytes before agent hello");
      });
      stream.on("invalid", (reason) => finish(`protocol violation: ${reason}`));
      stream.on("message", (m) => {
        if (!helloDone) {
          if (m.type === "hello" && m.re === helloId) {
            if (!SUPPORTED_PROTOCOL_VERSIONS.includes(m.body.version)) return finish(`protocol violation: agent chose unsupported version ${m.body.version}`);
            helloDone = true;
            // Any framing error from here on ends the session, so resynchronising would be wasted work.
            stream.strictFraming();
            armIdle(this.o.idleTimeoutMs, "agent went silent");
            this.onHello(stream, m.body);
          } else if (m.type === "error" && m.re === helloId) {
            finish(`agent refused hello: ${m.body.code}: ${m.body.message}`);
          } else {
            this.log.debug({ type: m.type }, "ignoring message before hello reply");
          }
          return;
        }
        armIdle(this.o.idleTimeoutMs, "agent went silent");
        const violation = this.onMessage(m);
        if (violation) finish(`protocol violation: ${violation}`);
      });
    });
    const helloId = this.allocId();
    stream.send({ type: "hello", id: helloId, body: { versions: [...SUPPORTED_PROTOCOL_VERSIONS], host_version: this.o.hostVersion } });
    const reason = await ended;
    this.stream = null;
    this.gateway?.closeAll(`agent session ended: ${reason}`);
    this.gateway = null;
    this.lastSessionViolated = reason.startsWith("protocol violation");
    if (this.lastSessionViolated) {
      this.log.warn({ reason }, "agent session closed");
      this.recordViolation(reason);
    } else this.log.info({ reason }, "agent session closed");
    this.failAll(new AgentRequestError("disconnected", `agent connection lost: ${reason}`));
    if (this.setupReq) this.setupReq.sentOn = null;
    if (helloDone) {
      if (!this.isClosed) this.linkState = "connecting";
      this.emit("disconnected", reason);
      this.wake();
    }
    return helloDone;
  }

  private onHello(stream: MessageStream<AgentMessage, HostMessage>, hello: AgentHello): void {
    this.lastHello = hello;
    this.gateway =
      hello.version >= GATEWAY_PROTOCOL_VERSION
        ? new GatewayStreams(stream, () => this.gatewayHandler, this.o.gatewayLimits, this.log.child({ component: "gateway-streams" }))
        : null;
    this.linkState = "connected";
    this.log.info({ boot_id: hello.boot_id, image_id: hello.image_id, phase: hello.state.phase, agent_version: hello.agent_version }, "agent session open");
    this.emit("connected");
    this.emit("hello", hello);
    if (hello.state.phase === "prepared" && hello.state.prepared) this.emit("prepared", hello.state.prepared);
    if (hello.state.ready) this.emit("ready", hello.state.ready);
    if (hello.state.failed) this.emit("failed", hello.state.failed);
    this.wake();
    if (this.stream === stream) this.trySendSetup();
  }

  /** Handles a message in an open session; returns a violation reason or null. */
  private onMessage(m: AgentMessage): string | null {
    switch (m.type) {
      case "hello":
        // Only a stale reply to an earlier connection's hello can get here (ids are per connection).
        this.log.debug({ re: m.re }, "ignoring a hello that answers no request of this session");
        return null;
      case "ack":
      case "quote_reply":
      case "error": {
        if (this.setupReq && m.re === this.setupId) return this.onSetupReply(m);
        const p = this.pending.get(m.re);
        if (!p) {
          this.log.debug({ type: m.type, re: m.re }, "reply to no pending request (stale); ignored");
          return null;
        }
        this.pending.delete(m.re);
        if (m.type === "error") p.reject(new AgentRequestError(m.body.code, m.body.message));
        else if ((p.type === "quote") !== (m.type === "quote_reply")) p.reject(new AgentRequestError("internal_error", `mismatched reply ${m.type}`));
        else p.resolve(m);
        return null;
      }
      case "progress":
        this.emit("progress", m.body);
        return null;
      case "ready":
        this.emit("ready", m.body);
        return null;
      case "prepared":
        if ((this.lastHello?.version ?? 0) < PREPARE_PROTOCOL_VERSION) return `prepared in a protocol ${this.lastHello?.version ?? "?"} session`;
        this.emit("prepared", m.body);
        return null;
      case "failed":
        this.emit("failed", m.body);
        return null;
      case "heartbeat":
        this.emit("heartbeat", m.body);
        return null;
      case "egress":
        this.emit("egress", m.body);
        return null;
      case "gw_request":
      case "gw_request_body":
      case "gw_cancel":
        if (!this.gateway) return `${m.type} in a protocol ${this.lastHello?.version ?? "?"} session`;
        return this.gateway.onMessage(m);
      case "bye":
        this.log.info({ reason: m.body.reason }, "agent said bye");
        this.stream?.destroy(`agent said bye: ${m.body.reason}`);
        return null;
    }
  }

  private setupId = -1;

  /**
   * One security-log line per episode of violations (each one also costs the guest its session and a
   * longer reconnect delay); repeats within VIOLATION_QUIET_MS of the last are only counted.
   */
  private recordViolation(reason: string): void {
    const now = performance.now();
    const v = this.violations;
    if (v && now - v.lastAt <= VIOLATION_QUIET_MS) {
      v.count++;
      v.lastAt = now;
      return;
    }
    this.securityLog.warn(
      { event: "agent_protocol_violation", instance_id: this.o.instanceId, reason, previous_episode_sessions: v?.count },
      "guest broke the agent protocol; session closed",
    );
    this.violations = { count: 1, lastAt: now };
  }

  private trySendSetup(): void {
    const req = this.setupReq;
    const stream = this.stream;
    if (!req || !stream || this.linkState !== "connected" || req.sentOn === stream) return;
    this.setupId = this.allocId();
    req.sentOn = stream;
    stream.send({ type: "setup", id: this.setupId, body: req.params });
    this.log.info({ instance_name: req.params.instance_name }, "setup sent");
  }

  private onSetupReply(m: AgentMessage): string | null {
    const req = this.setupReq!;
    this.setupReq = null;
    this.setupId = -1;
    if (m.type === "ack") {
      this.log.info({ already_applied: m.body.already_applied }, "agent acknowledged setup");
      req.resolve();
      return null;
    }
    if (m.type === "error") {
      req.reject(new AgentRequestError(m.body.code, m.body.message));
      return null;
    }
    req.reject(new AgentRequestError("internal_error", `unexpected reply ${m.type} to setup`));
    return `reply ${m.type} to a setup request`;
  }

  private request(msg: HostMessage & { id: number }, timeoutMs: number): Promise<AgentMessage> {
    const stream = this.stream;
    if (!stream) return Promise.reject(new AgentRequestError("disconnected", "not connected"));
    const id = this.allocId();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new AgentRequestError("timeout", `${msg.type} timed out`));
      }, Math.max(1, timeoutMs));
      this.pending.set(id, {
        type: msg.type as Pending["type"],
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      if (!stream.send({ ...msg, id } as HostMessage)) {
        this.pending.get(id)?.reject(new AgentRequestError("disconnected", "could not send"));
        this.pending.delete(id);
      }
    });
  }

  private allocId(): number {
    const id = this.nextId;
    this.nextId = this.nextId >= MAX_REQUEST_ID ? 1 : this.nextId + 1;
    return id;
  }

  private failAll(err: Error): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  private wake(): void {
    for (const w of this.waiters) w();
    this.waiters.clear();
  }

  private waitForChange(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.waiters.delete(done);
        resolve();
      }, Math.max(1, ms));
      const done = () => {
        clearTimeout(t);
        resolve();
      };
      this.waiters.add(done);
    });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.closeCtl.signal.aborted) return resolve();
      const t = setTimeout(() => {
        this.closeCtl.signal.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(t);
        resolve();
      };
      this.closeCtl.signal.addEventListener("abort", onAbort, { once: true });
    });
  }
}

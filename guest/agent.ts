import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import {
  GATEWAY_PROTOCOL_VERSION,
  PREPARE_PROTOCOL_VERSION,
  type AgentHello,
  type AgentStateSummary,
  type AgentMessage,
  type OpenClawHealth,
  type QuoteReply,
  type SetupParams,
} from "../shared/protocol/messages.js";
import { setupDigest } from "../shared/protocol/setup-digest.js";
import type { QuoteProvider } from "./attest/configfs-tsm-quote.js";
import type { Rtmr3EventLog } from "./attest/rtmr3-event-log.js";
import { reportDataFor } from "./attest/tdx-digests.js";
import type { AgentStateStore, PersistedAgentState } from "./agent-state.js";
import type { EgressCounter } from "./egress/nft-egress-counter.js";
import type { GatewayProxyServer } from "./gateway/gateway-proxy.js";
import { HostSession, type SetupOutcome } from "./link/host-session.js";
import type { HostConnection, HostTransport } from "./link/transports.js";
import { httpOk } from "./setup/probes.js";
import { SetupRunner, StepFailure } from "./setup/setup-runner.js";
import { readSshHostKeys } from "./setup/ssh-host-keys.js";
import type { RootFs } from "./system/root-fs.js";
import type { SystemStats } from "./system/system-stats.js";

/** Progress stages after which OpenClaw has not been started yet (its health is "stopped", not "unhealthy"). */
const STAGES_BEFORE_START = new Set(["accepted", "ssh_key", "openclaw_verify", "openclaw_config"]);

export interface AgentIdentity {
  agentVersion: string;
  bootId: string;
  imageId: string | null;
}

export interface AgentDeps {
  logger: Logger;
  identity: AgentIdentity;
  root: RootFs;
  sshDir: string;
  store: AgentStateStore;
  setup: SetupRunner;
  eventLog: Rtmr3EventLog;
  quotes: QuoteProvider;
  egress: EgressCounter | null;
  stats: SystemStats;
  transport: HostTransport;
  heartbeatMs: number;
  egressMs: number;
  /** The loopback inference gateway (forwards over the host channel); null disables it. */
  gateway?: GatewayProxyServer | null;
}

/**
 * cvm-agent: answers the host (hello, setup, quote), runs the claim-time setup once per boot, and
 * reports progress, readiness, heartbeats and egress. Its host-facing surface is exactly the protocol's
 * message set; the host can make it do nothing else.
 */
export class Agent {
  private state!: PersistedAgentState;
  private session: HostSession | null = null;
  /** The preparation/setup work, one step at a time; each kick appends a step that reads the state. */
  private work: Promise<void> = Promise.resolve();
  private working = 0;
  private timers: NodeJS.Timeout[] = [];
  private readonly abort = new AbortController();
  private stopped = false;

  constructor(private readonly d: AgentDeps) {}

  get phase(): PersistedAgentState["phase"] {
    return this.state.phase;
  }

  async start(): Promise<void> {
    const { logger } = this.d;
    this.state = await this.d.store.load(this.d.identity.bootId);
    await this.d.eventLog.load();
    await this.d.eventLog.recover();
    if (this.d.egress) {
      try {
        await this.d.egress.install();
      } catch (err) {
        logger.warn({ err }, "guest egress counter could not be installed; egress samples disabled");
        this.d.egress = null;
      }
    }
    if (this.d.gateway) {
      try {
        await this.d.gateway.start();
        logger.info({ url: this.d.gateway.description }, "inference gateway listening");
      } catch (err) {
        // The agent's own job (setup, quotes) does not depend on it; OpenClaw's model calls will fail visibly.
        logger.error({ err }, "inference gateway could not listen; model calls from the guest will fail");
        this.d.gateway = null;
      }
    }
    await this.d.transport.start((c) => this.attach(c));
    logger.info({ transport: this.d.transport.description, phase: this.state.phase, boot_id: this.d.identity.bootId }, "cvm-agent started");
    if (this.state.phase === "preparing" || (this.state.phase === "setting_up" && this.state.setup)) {
      logger.info({ phase: this.state.phase, pooled: this.state.pooled }, "resuming work interrupted by an agent restart");
      this.kick();
    }
    this.timers.push(setInterval(() => void this.heartbeat(), this.d.heartbeatMs));
    if (this.d.egress) this.timers.push(setInterval(() => void this.egressSample(), this.d.egressMs));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    for (const t of this.timers) clearInterval(t);
    this.session?.close("agent shutting down");
    await this.d.gateway?.close();
    await this.d.transport.close();
    await this.work.catch(() => undefined);
  }

  /** Resolves when running preparation/setup work has finished (tests and the benchmark use it). */
  async idle(): Promise<void> {
    while (this.working > 0) await this.work;
  }

  private attach(conn: HostConnection): void {
    const session = new HostSession(conn, {
      hello: (version) => this.hello(version),
      setup: (p) => this.acceptSetup(p),
      prepare: () => this.acceptPrepare(),
      quote: (n) => this.quote(n),
      opened: (s) => {
        if (this.session && this.session !== s) this.session.close("replaced by a newer host connection");
        this.session = s;
        if (s.version >= GATEWAY_PROTOCOL_VERSION) this.d.gateway?.attach((m) => s.send(m));
        else this.d.gateway?.detach("the host does not speak the gateway protocol");
        void this.heartbeat();
        void this.egressSample();
      },
      closed: (s) => {
        if (this.session === s) {
          this.session = null;
          this.d.gateway?.detach("host session closed");
        }
      },
      gateway: (s, m) => {
        if (this.session === s) this.d.gateway?.onHostMessage(m);
      },
    }, this.d.logger.child({ component: "host-session" }));
    void session;
  }

  private send(msg: AgentMessage): void {
    this.session?.send(msg);
  }

  private hello(version: number): AgentHello {
    const s = this.state;
    let state: AgentStateSummary = { phase: s.phase, setup_digest: s.setup_digest, stage: s.stage, ready: s.ready, failed: s.failed, prepared: s.prepared };
    if (version < PREPARE_PROTOCOL_VERSION) {
      // Older hosts know neither the pool phases nor the key; a prepared guest is one awaiting setup.
      const { prepared: _omitted, ...legacy } = state;
      const phase = s.phase === "preparing" || s.phase === "prepared" ? "awaiting_setup" : s.phase;
      state = { ...legacy, phase } as AgentStateSummary;
    }
    return {
      version,
      agent_version: this.d.identity.agentVersion,
      boot_id: this.d.identity.bootId,
      image_id: this.d.identity.imageId,
      state,
    };
  }

  private async acceptPrepare(): Promise<SetupOutcome> {
    if (this.state.setup_digest !== null) {
      return { ok: false, code: "setup_conflict", message: "a setup was already accepted in this boot; prepare must come before it" };
    }
    if (this.state.pooled) {
      // Already preparing or prepared (the host reconnected before seeing our ack): re-announce the outcome.
      if (this.state.phase === "prepared" && this.state.prepared) setImmediate(() => this.send({ type: "prepared", body: this.state.prepared! }));
      if (this.state.failed) setImmediate(() => this.send({ type: "failed", body: this.state.failed! }));
      return { ok: true, alreadyApplied: true };
    }
    this.state = {
      ...this.state,
      phase: "preparing",
      pooled: true,
      stage: "accepted",
      gateway_token: this.state.gateway_token ?? randomBytes(32).toString("hex"),
    };
    await this.d.store.save(this.state);
    setImmediate(() => {
      this.send({ type: "progress", body: { stage: "accepted", message: "prepare accepted" } });
      this.kick();
    });
    return { ok: true, alreadyApplied: false };
  }

  private async acceptSetup(params: SetupParams): Promise<SetupOutcome> {
    const digest = setupDigest(params);
    if (this.state.setup_digest !== null) {
      if (this.state.setup_digest === digest) {
        // Same setup again (the host reconnected before seeing our ack): re-announce the outcome.
        if (this.state.ready) setImmediate(() => this.send({ type: "ready", body: this.state.ready! }));
        if (this.state.failed) setImmediate(() => this.send({ type: "failed", body: this.state.failed! }));
        return { ok: true, alreadyApplied: true };
      }
      return { ok: false, code: "setup_conflict", message: "a different setup was already accepted in this boot; setup is accepted once per boot" };
    }
    if (this.state.phase === "failed") {
      return { ok: false, code: "not_ready_for_request", message: "this guest's preparation failed; it cannot be claimed" };
    }
    // A claim: from here on the guest's traffic is the tenant's, so the egress count restarts now.
    let baseline: PersistedAgentState["egress_baseline"] = null;
    if (this.state.pooled && this.d.egress) {
      try {
        baseline = await this.d.egress.read();
      } catch (err) {
        this.d.logger.warn({ err }, "egress counter unreadable at the claim; later samples include pre-claim traffic");
      }
    }
    if (this.state.setup_digest !== null) return this.acceptSetup(params); // a concurrent setup won the race
    this.state = {
      ...this.state,
      phase: "setting_up",
      setup: params,
      setup_digest: digest,
      stage: "accepted",
      gateway_token: this.state.gateway_token ?? randomBytes(32).toString("hex"),
      egress_baseline: baseline,
    };
    // Persisted before the ack so a restarted agent resumes the setup the host was told is accepted.
    await this.d.store.save(this.state);
    setImmediate(() => {
      this.send({ type: "progress", body: { stage: "accepted", message: `setup for ${params.instance_name} accepted${this.state.pooled ? " (claim)" : ""}` } });
      this.kick();
    });
    return { ok: true, alreadyApplied: false };
  }

  /** Queues a work step; a step does whatever the persisted state says is still to do. */
  private kick(): void {
    this.working++;
    this.work = this.work
      .then(() => this.step())
      .catch((err) => this.d.logger.error({ err }, "agent work step failed"))
      .finally(() => this.working--);
  }

  private async step(): Promise<void> {
    if (this.stopped) return;
    const report = (stage: string, message: string) => this.progress(stage, message);
    try {
      if (this.state.pooled && this.state.prepared === null && (this.state.phase === "preparing" || this.state.phase === "setting_up")) {
        const t0 = performance.now();
        const p = await this.d.setup.prepare(this.state.gateway_token!, report, this.abort.signal);
        if (this.stopped) return;
        const prepared = { openclaw_version: p.openclaw_version, node_version: p.node_version, prepare_ms: Math.round(performance.now() - t0) };
        // A setup accepted meanwhile stays the phase: the claim runs next.
        this.state = { ...this.state, phase: this.state.setup ? "setting_up" : "prepared", prepared, prepared_pid: p.pid };
        await this.d.store.save(this.state);
        this.d.logger.info({ prepare_ms: prepared.prepare_ms, pid: p.pid }, "prepared");
        this.send({ type: "prepared", body: prepared });
      }
      if (this.state.phase !== "setting_up" || !this.state.setup || this.state.ready) return;
      const params = this.state.setup;
      let ready;
      if (this.state.pooled) {
        const prepared = { ...this.state.prepared!, pid: this.state.prepared_pid };
        const watch = {
          load: () => this.state.reload_watch,
          save: async (w: { mark: string; pid: number | null }) => {
            this.state = { ...this.state, reload_watch: w };
            await this.d.store.save(this.state);
          },
        };
        ready = await this.d.setup.claim(params, prepared, watch, report, this.abort.signal);
      } else {
        ready = await this.d.setup.run(params, this.state.gateway_token!, report, this.abort.signal);
      }
      if (this.stopped) return;
      this.state = { ...this.state, phase: "ready", stage: "ready", ready, failed: null };
      await this.d.store.save(this.state);
      this.d.logger.info({ host_keys: ready.ssh_host_keys.length, claim: this.state.pooled }, "ready");
      this.send({ type: "ready", body: ready });
    } catch (err) {
      if (this.stopped) return;
      const failure =
        err instanceof StepFailure ? { code: err.code, message: err.message } : { code: "setup_failed" as const, message: "setup failed unexpectedly" };
      if (!(err instanceof StepFailure)) this.d.logger.error({ err }, "setup failed unexpectedly");
      this.state = { ...this.state, phase: "failed", failed: { code: failure.code, message: failure.message.slice(0, 1000) } };
      await this.d.store.save(this.state);
      this.d.logger.warn({ failure }, this.state.setup ? "setup failed" : "prepare failed");
      this.send({ type: "failed", body: this.state.failed! });
    }
  }

  private async progress(stage: string, message: string): Promise<void> {
    this.state = { ...this.state, stage };
    await this.d.store.save(this.state);
    this.send({ type: "progress", body: { stage, message } });
  }

  private async quote(nonce: Buffer): Promise<QuoteReply> {
    const hostKeys = this.state.ready?.ssh_host_keys ?? (await readSshHostKeys(this.d.root, this.d.sshDir));
    const reportData = reportDataFor(nonce, hostKeys);
    const res = await this.d.quotes.getQuote(reportData);
    const event_log = this.d.eventLog.entries();
    if (!res.available) return { available: false, reason: res.reason, event_log };
    return { available: true, quote: res.quote, report_data: reportData, event_log };
  }

  private async openclawHealth(): Promise<OpenClawHealth> {
    const s = this.state;
    if (s.phase === "awaiting_setup") return "stopped";
    if ((s.phase === "setting_up" || s.phase === "preparing") && s.prepared === null && STAGES_BEFORE_START.has(s.stage ?? "")) return "stopped";
    return (await httpOk(this.d.setup.readyzUrl, 2000)) ? "healthy" : "unhealthy";
  }

  private async heartbeat(): Promise<void> {
    if (!this.session?.isOpen) return;
    try {
      const [s, openclaw] = await Promise.all([this.d.stats.sample(), this.openclawHealth()]);
      this.send({ type: "heartbeat", body: { ...s, openclaw } });
    } catch (err) {
      this.d.logger.warn({ err }, "heartbeat sample failed");
    }
  }

  private async egressSample(): Promise<void> {
    if (!this.d.egress || !this.session?.isOpen) return;
    try {
      const c = await this.d.egress.read();
      const b = this.state.egress_baseline;
      // A counter below its baseline was recreated after the claim (e.g. the table was flushed): all of it is post-claim.
      const since = b && c.bytes >= b.bytes && c.packets >= b.packets ? { bytes: c.bytes - b.bytes, packets: c.packets - b.packets } : c;
      this.send({ type: "egress", body: { bytes: since.bytes, packets: since.packets, sampled_at: new Date().toISOString() } });
    } catch (err) {
      this.d.logger.warn({ err }, "egress sample failed");
    }
  }
}

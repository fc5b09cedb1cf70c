import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import { ImageError, type ImageCatalog } from "../../images/image-catalog.js";
import { AgentLink, AgentRequestError, checkSshHostKey, connectorFor, type AgentConnector, type AgentHello, type EgressSample, type Heartbeat, type QuoteReply, type Ready, type SetupParams } from "../../link/index.js";
import type { EgressFirewall } from "../../net/egress-firewall.js";
import type { GuestAttachment, GuestNetwork } from "../../net/guest-network.js";
import { watchBootPhases, type BootPhaseWatch } from "../../vmm/boot-phases.js";
import { allocateCid } from "../../vmm/cid.js";
import { VmmError, type Accel, type GuestProfile, type Hypervisor, type LaunchRecord } from "../../vmm/hypervisor.js";
import { agentChannelsInArgv, assertProfileConsistent } from "../../vmm/profile-check.js";
import { PROFILES, type AgentEndpoint, type Profile, type ProfileTable } from "../../vmm/profiles.js";
import { runPaths } from "../../vmm/run-dir.js";
import { AttemptRuns } from "./attempt-runs.js";
import {
  AttestationUnavailableError,
  type AdoptPoolResult,
  type AdoptResult,
  type AttestationEvidence,
  type BootedImage,
  type Driver,
  type DriverContext,
  type HostServices,
  type InstanceSpec,
  type PoolGuestContext,
  type PoolGuestSpec,
  type ReadyInfo,
  type WarmGuestDriver,
} from "../driver.js";
import { ProvisionError } from "../failure-codes.js";

export interface QemuDriverOptions {
  dataDir: string;
  hypervisor: Hypervisor;
  network: GuestNetwork;
  firewall: EgressFirewall;
  images: ImageCatalog;
  logger: Logger;
  profile: GuestProfile;
  /** The profile rows; the hypervisor must build its argv from the same table (both default to PROFILES). */
  profiles?: ProfileTable;
  /** socat binary for the vsock bridge of profiles whose agent channel is vsock. */
  socat?: string;
  accel: Accel;
  memoryMiB: number;
  vcpus: number;
  tdx?: { firmware: string };
  /** Where the agent exposes the inference gateway inside the guest (OpenClaw's provider baseUrl). */
  guestGatewayUrl: string;
  /** The cap a pool guest runs under before its claim (its counters are dropped at the claim). */
  poolEgressLimitBytes?: number;
  /**
   * One deadline per phase, each failing with its own code: QEMU start → agent hello (`boot_timeout`),
   * setup sent → acknowledged and acknowledged → ready (`agent_timeout`), ready → SSH handshake (`ssh_unreachable`).
   */
  timeouts: { bootMs: number; setupAckMs: number; setupMs: number; sshMs: number };
}

interface Runtime {
  tap: string;
  mac: string;
  ip: string;
  netns: string;
  cid: number;
  ssh: { host: string; port: number };
  imageId: string;
  /**
   * The guest's own id when it differs from the instance's: a warm-pool guest keeps the id it booted
   * under (run dir, QEMU record, tap) after an instance claims it.
   */
  guestId?: string;
  /** SSH host keys the agent reported at ready and SSH confirmed; attestation binds its quotes to them. */
  hostKeys?: string[];
}

/** Runtime facts of a live guest, for status endpoints and operators. */
export interface GuestFacts {
  hello: AgentHello | null;
  heartbeat: Heartbeat | null;
  heartbeatAt: Date | null;
}

const USER = "azureuser";
const DEFAULT_POOL_EGRESS_LIMIT = 5 * 1024 ** 3;

/** A promise that rejects when `signal` aborts (never resolves), for racing against slow steps. */
function abortion(signal: AbortSignal): Promise<never> {
  const p = new Promise<never>((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
  p.catch(() => undefined);
  return p;
}

/** A promise that rejects with `make()` after `ms` (never resolves); its timer does not hold the process. */
function deadline(ms: number, make: () => Error): Promise<never> {
  const p = new Promise<never>((_, reject) => setTimeout(() => reject(make()), ms).unref());
  p.catch(() => undefined);
  return p;
}

/**
 * The agent answered a request with an error reply (its own code): it refused, which no wait will
 * change. Link-side codes (disconnected, timeout, closed) are not refusals.
 */
function agentRefusal(err: unknown): ProvisionError | null {
  if (!(err instanceof AgentRequestError) || err.code === "disconnected" || err.code === "timeout" || err.code === "closed") return null;
  return new ProvisionError("setup_failed", `The in-VM agent refused setup (${err.code}).`, { cause: err });
}

/**
 * Provisions an instance as a QEMU guest booted from the measured image: network and egress rules
 * first, then QEMU, then the agent's hello → setup → ready over its channel, then an SSH handshake
 * whose host key must be one the agent reported. Guests outlive cvmd; `adopt` picks them up again.
 */
export class QemuDriver implements Driver {
  readonly name: string;
  /** Keyed by guest id (= instance id for cold starts, the pool guest's id for claimed guests). */
  private readonly links = new Map<string, AgentLink>();
  /** Guest id → the instance it bills to; a pool guest before its claim owns itself. */
  private readonly owners = new Map<string, string>();
  private readonly facts = new Map<string, GuestFacts>();
  private readonly cids = new Set<number>();
  private readonly destroying = new Set<string>();
  private exitListener?: (id: string, reason: string) => void;
  private poolExitListener?: (guestId: string, reason: string) => void;
  /** Pool guests not claimed yet: no gateway, no egress attribution, exits reported to the pool. */
  private readonly unclaimed = new Set<string>();
  private readonly unsubscribe = new Map<string, () => void>();
  private services: HostServices = {};
  private readonly profile: Profile;
  /** Adopted guests whose recorded argv created another channel than this profile's (cvmd restarted with another profile). */
  private readonly recordedChannels = new Map<string, AgentEndpoint>();

  /** Throws when the profile's argv and agent channel disagree: cvmd must not start with such a driver. */
  constructor(private readonly o: QemuDriverOptions) {
    this.profile = assertProfileConsistent(o.profile, o.profiles ?? PROFILES);
    this.name = `qemu (${o.profile}, ${o.profile === "tdx" ? "kvm" : o.accel})`;
  }

  bindHostServices(s: HostServices): void {
    this.services = s;
    for (const [id, link] of this.links) link.onGatewayRequest(this.gatewayFor(id));
  }

  /** No tenant, no model calls: an unclaimed pool guest gets no gateway at all. */
  private gatewayFor(guestId: string) {
    const owner = this.owners.get(guestId);
    if (owner === undefined || this.unclaimed.has(guestId)) return null;
    return this.services.gateway?.handlerFor(owner) ?? null;
  }

  onExit(listener: (instanceId: string, reason: string) => void): void {
    this.exitListener = listener;
  }

  guestFacts(guestId: string): GuestFacts | undefined {
    return this.facts.get(guestId);
  }

  link(guestId: string): AgentLink | undefined {
    return this.links.get(guestId);
  }

  readonly warm: WarmGuestDriver = {
    onExit: (listener) => (this.poolExitListener = listener),
    currentImageId: () => this.o.images.current().then(
      (i) => i.id,
      (err) => {
        if (err instanceof ImageError) return null;
        throw err;
      },
    ),
    boot: (g, ctx) => this.bootPoolGuest(g, ctx),
    adopt: (g, ctx) => this.adoptPoolGuest(g, ctx),
    claim: (spec, g, ctx) => this.claimPoolGuest(spec, g, ctx),
    destroy: (g) => this.destroyGuest(g.id, g.id, g.runtime as Runtime | null),
  };

  async create(spec: InstanceSpec, ctx: DriverContext): Promise<ReadyInfo> {
    const log = this.o.logger.child({ instance: spec.name, instance_id: spec.id });
    const { runtime, watch, started } = await this.launch(spec.id, spec.egressLimitBytes, ctx, log);
    try {
      return await this.bringUp(spec, runtime, ctx, log, started, watch);
    } catch (err) {
      await this.release(spec.id, spec.id, runtime, log, { keepRunDir: true });
      throw this.asProvisionError(err, ctx.signal);
    } finally {
      watch.stop();
    }
  }

  /** Image check, network, egress rules, QEMU: everything up to a running guest, for both paths. */
  private async launch(guestId: string, egressLimitBytes: number, ctx: DriverContext | PoolGuestContext, log: Logger): Promise<{ runtime: Runtime; watch: BootPhaseWatch; started: number }> {
    let image;
    try {
      image = await this.o.images.current();
    } catch (err) {
      if (err instanceof ImageError) throw new ProvisionError("image_unavailable", "The guest image is missing or does not match its manifest.", { cause: err });
      throw err;
    }
    const att = await this.o.network.attach({ instanceId: guestId });
    const cid = allocateCid(this.cids);
    this.cids.add(cid);
    const runtime: Runtime = { tap: att.tap, mac: att.mac, ip: att.ip, netns: att.netns, cid, ssh: att.ssh, imageId: image.id };
    await ctx.saveRuntime({ ...runtime });
    // The cap is in the kernel before the guest can send its first frame.
    await this.o.firewall.add({ id: guestId, tap: att.tap, limitBytes: egressLimitBytes });
    ctx.event("vm", `launching ${this.name} from image ${image.id} (${this.o.memoryMiB} MiB, ${this.o.vcpus} vCPU)`);

    const paths = runPaths(this.o.dataDir, guestId);
    const started = performance.now();
    const watch = watchBootPhases(paths.serialLog, { startedAt: started });
    try {
      const vm = await this.o.hypervisor.launch({
        instanceId: guestId,
        profile: this.o.profile,
        accel: this.o.accel,
        image: image.guest,
        memoryMiB: this.o.memoryMiB,
        vcpus: this.o.vcpus,
        cid,
        nic: { tap: att.tap, mac: att.mac },
        netns: att.netns,
        tdx: this.o.tdx,
      });
      ctx.event("vm", `QEMU running (pid ${vm.pid}, started in ${vm.startMs} ms)`);
      this.reportPhases(watch, ctx);
      this.watchExit(guestId);
      return { runtime, watch, started };
    } catch (err) {
      watch.stop();
      await this.release(guestId, guestId, runtime, log, { keepRunDir: true });
      throw this.asProvisionError(err, ctx.signal);
    }
  }

  /**
   * Every failure leaves with a failure code. A QEMU that does not start is `boot_timeout`; an
   * agent's error reply is `setup_failed`; anything else was not expected and is `internal`, its
   * cause kept for the event and the log.
   */
  private asProvisionError(err: unknown, signal: AbortSignal): unknown {
    if (err instanceof ProvisionError || signal.aborted) return err;
    if (err instanceof VmmError && err.code !== "invalid_spec") return new ProvisionError("boot_timeout", "The VM could not be started.", { cause: err });
    const refusal = agentRefusal(err);
    if (refusal) return refusal;
    // A request the link gave up on (no session, or no answer) within its own deadline: the agent is not answering.
    if (err instanceof AgentRequestError && (err.code === "timeout" || err.code === "disconnected")) return new ProvisionError("agent_timeout", undefined, { cause: err });
    return new ProvisionError("internal", undefined, { cause: err });
  }

  async adopt(spec: InstanceSpec, ctx: DriverContext): Promise<AdoptResult> {
    const rt = spec.runtime as Runtime | null;
    const guestId = rt?.guestId ?? spec.id;
    const res = await this.adoptRunning(guestId, spec.id, rt, { keepRunDir: true });
    if (!res.alive) return res;
    this.owners.set(guestId, spec.id);
    const log = this.o.logger.child({ instance: spec.name, instance_id: spec.id });
    this.rememberRecordedChannel(guestId, res.record, log);
    const paths = runPaths(this.o.dataDir, guestId);
    const watch = watchBootPhases(paths.serialLog, { fromOffset: res.record.serialOffset });
    const ready = this.bringUp(spec, res.rt, ctx, log, performance.now(), watch).finally(() => watch.stop());
    return { alive: true, ready };
  }

  /** Takes back a guest that survived a cvmd restart, or releases what is left of one that did not. */
  private async adoptRunning(guestId: string, ownerId: string, rt: Runtime | null, opts: { keepRunDir: boolean }) {
    const res = await this.o.hypervisor.adopt(guestId);
    if (!res.adopted) {
      if (rt) await this.release(guestId, ownerId, rt, this.o.logger, opts).catch(() => undefined);
      return { alive: false as const, reason: `${res.reason}: ${res.detail}` };
    }
    if (!rt) return { alive: false as const, reason: "no runtime record for a running guest" };
    this.cids.add(rt.cid);
    this.watchExit(guestId);
    return { alive: true as const, record: res.record, rt };
  }

  async destroy(spec: InstanceSpec): Promise<void> {
    const rt = spec.runtime as Runtime | null;
    await this.destroyGuest(rt?.guestId ?? spec.id, spec.id, rt);
  }

  private async destroyGuest(guestId: string, ownerId: string, rt: Runtime | null): Promise<void> {
    this.destroying.add(guestId);
    try {
      // Stopping a guest that is not running answers `already-stopped`, so teardown is idempotent; a throw is real.
      await this.o.hypervisor.stop(guestId, { graceMs: 5_000 });
      await this.release(guestId, ownerId, rt, this.o.logger, { keepRunDir: false });
    } finally {
      this.destroying.delete(guestId);
    }
  }

  async inspect(spec: InstanceSpec) {
    const i = await this.o.hypervisor.inspect((spec.runtime as Runtime | null)?.guestId ?? spec.id);
    return { running: i.state === "running", detail: { pid: i.pid, status: i.status } };
  }

  async attest(spec: InstanceSpec, nonce: Buffer): Promise<AttestationEvidence> {
    const rt = spec.runtime as Runtime | null;
    const link = this.links.get(rt?.guestId ?? spec.id);
    if (!rt || !link) throw new AttestationUnavailableError("cvmd has no channel to this instance's agent (yet)");
    if (!rt.hostKeys?.length) throw new AttestationUnavailableError("the SSH host keys of this instance are not recorded yet");
    let reply: QuoteReply;
    try {
      reply = await link.quote(nonce);
    } catch (err) {
      if (err instanceof AgentRequestError) throw new AttestationUnavailableError(`the instance's agent did not answer the quote request (${err.code}: ${err.message})`, { cause: err });
      throw err;
    }
    const image = await this.bootedImage(rt.imageId);
    if (!reply.available) return { available: false, reason: reply.reason, eventLog: reply.event_log, image };
    return { available: true, quote: reply.quote, reportData: reply.report_data, eventLog: reply.event_log, hostKeys: [...rt.hostKeys], image };
  }

  private async bootedImage(id: string): Promise<BootedImage> {
    const manifest = await this.o.images.manifestOf(id).catch(() => null);
    const em = manifest?.expected_measurements;
    return { id, expectedMeasurements: em && typeof em === "object" ? em : null };
  }

  async close(): Promise<void> {
    for (const u of this.unsubscribe.values()) u();
    await Promise.all([...this.links.values()].map((l) => l.close()));
    this.links.clear();
  }

  /** hello → setup → ready → SSH check; shared by create and by adoption of a guest still provisioning. */
  private async bringUp(spec: InstanceSpec, rt: Runtime, ctx: DriverContext, log: Logger, started: number, watch?: BootPhaseWatch): Promise<ReadyInfo> {
    const link = this.openLink(rt.guestId ?? spec.id, rt.cid, spec.id, log);
    const abort = abortion(ctx.signal);

    const hello = await this.helloOrBootTimeout(link, abort, ctx.signal, watch);
    // A claimed pool guest's channel has been open since it booted: its hello is old news.
    if (!rt.guestId) ctx.event("agent", `agent ${hello.agent_version} said hello after ${Math.round(performance.now() - started)} ms (image ${hello.image_id ?? "unknown"}, phase ${hello.state.phase})`);

    const outcome = new Promise<Ready>((resolve, reject) => {
      if (hello.state.ready) return resolve(hello.state.ready);
      if (hello.state.failed) return reject(new ProvisionError("setup_failed", `The in-VM agent could not complete setup (${hello.state.failed.code}).`));
      link.on("ready", resolve);
      link.on("failed", (f) => reject(new ProvisionError("setup_failed", `The in-VM agent could not complete setup (${f.code}).`, { cause: new Error(f.message) })));
    });
    outcome.catch(() => undefined);
    const onProgress = (p: { stage: string; message: string }) => ctx.event("setup", `${p.stage}: ${p.message}`);
    link.on("progress", onProgress);
    const setupStarted = performance.now();
    try {
      if (!hello.state.ready) {
        // The link re-sends setup on each new session, so an agent that crash-loops before acknowledging would keep
        // this instance provisioning (and its capacity held) forever without a deadline of its own.
        // The API admits only agents the protocol names, and the agent checks again; a stored spec keeps a plain string.
        const ack = link.setup({ public_key: spec.publicKey, agent: spec.agent as SetupParams["agent"], inference_model: spec.inferenceModel, gateway_address: this.o.guestGatewayUrl, instance_name: spec.name });
        await Promise.race([
          ack.catch((err) => {
            throw agentRefusal(err) ?? err;
          }),
          abort,
          deadline(this.o.timeouts.setupAckMs, () => new ProvisionError("agent_timeout", "The in-VM agent did not acknowledge setup within the allowed time.", { cause: new Error(`no setup ack within ${this.o.timeouts.setupAckMs} ms`) })),
        ]);
      }
      const ready = await Promise.race([
        outcome,
        abort,
        deadline(this.o.timeouts.setupMs, () => new ProvisionError("agent_timeout", "The in-VM agent did not report ready within the allowed time.", { cause: new Error(`no ready within ${this.o.timeouts.setupMs} ms of the setup ack`) })),
      ]);
      ctx.event("setup", `agent ready after ${Math.round(performance.now() - setupStarted)} ms of setup (OpenClaw ${ready.openclaw_version}, node ${ready.node_version})`);

      const sshStarted = performance.now();
      await this.checkSsh(rt, ready.ssh_host_keys, ctx.signal, (m) => ctx.event("ssh", m));
      ctx.event("ssh", `SSH host key matches the agent's report (${Math.round(performance.now() - sshStarted)} ms); total ${Math.round(performance.now() - started)} ms`);
      // Kept in the runtime record (not a column): only this driver reads them, to recompute the
      // REPORTDATA of later quotes, and they must survive a cvmd restart like the rest of the record.
      rt.hostKeys = [...ready.ssh_host_keys];
      await ctx.saveRuntime({ ...rt });
      return { ssh: { host: rt.ssh.host, port: rt.ssh.port, user: USER }, hostKeys: ready.ssh_host_keys };
    } finally {
      link.off("progress", onProgress);
    }
  }

  /** How this driver reaches a guest's agent: the profile row's endpoint, which the constructor checked its argv creates. */
  agentConnector(guestId: string, cid: number): AgentConnector {
    const endpoint = this.recordedChannels.get(guestId) ?? this.profile.endpoint({ cid }, runPaths(this.o.dataDir, guestId));
    return connectorFor(endpoint, { socat: this.o.socat });
  }

  /**
   * An adopted guest is reached where its own QEMU command line put the agent channel: after a
   * restart with another CVM_PROFILE, dialing the new profile's channel would reach nothing.
   */
  private rememberRecordedChannel(guestId: string, record: LaunchRecord, log: Logger): void {
    let found: AgentEndpoint[] = [];
    try {
      found = agentChannelsInArgv(record.argv);
    } catch (err) {
      log.warn({ err }, "cannot read the agent channel from the guest's launch record; using the profile's");
    }
    if (found.length !== 1 || isDeepStrictEqual(found[0], this.profile.endpoint({ cid: record.cid }, runPaths(this.o.dataDir, guestId)))) return;
    log.warn({ launched_as: record.profile, profile: this.o.profile, channel: found[0] }, "adopted guest was launched under another profile; dialing the channel its command line created");
    this.recordedChannels.set(guestId, found[0]);
  }

  /** The guest's channel; `ownerId` is whom its model calls and egress samples are billed to. */
  private openLink(guestId: string, cid: number, ownerId: string, log: Logger): AgentLink {
    this.owners.set(guestId, ownerId);
    const existing = this.links.get(guestId);
    if (existing) {
      existing.onGatewayRequest(this.gatewayFor(guestId));
      return existing;
    }
    const link = new AgentLink({
      connector: this.agentConnector(guestId, cid),
      logger: log,
      instanceId: guestId,
      hostVersion: "cvmd",
      // Under TCG a loaded guest can be slow to answer; the idle timeout only triggers a reconnect.
      idleTimeoutMs: 60_000,
      securityLog: this.services.securityLog,
    });
    const facts: GuestFacts = { hello: null, heartbeat: null, heartbeatAt: null };
    this.facts.set(guestId, facts);
    link.on("hello", (h) => (facts.hello = h));
    link.on("heartbeat", (h) => {
      facts.heartbeat = h;
      facts.heartbeatAt = new Date();
    });
    link.on("egress", (s: EgressSample) => {
      // An unclaimed pool guest's samples belong to no one (and the agent restarts its count at the claim).
      const owner = this.owners.get(guestId);
      if (owner === undefined || this.unclaimed.has(guestId)) return;
      this.services.onGuestEgress?.(owner, { bytes: s.bytes, packets: s.packets, sampledAt: new Date(s.sampled_at) });
    });
    // The channel is the instance's identity: this link's model calls are billed to its owner.
    link.onGatewayRequest(this.gatewayFor(guestId));
    this.links.set(guestId, link);
    link.start();
    return link;
  }

  /** The agent's hello within the boot deadline, or `boot_timeout` naming the boot phases seen. */
  private helloOrBootTimeout(link: AgentLink, abort: Promise<never>, signal: AbortSignal, watch?: BootPhaseWatch): Promise<AgentHello> {
    return Promise.race([this.waitHello(link, this.o.timeouts.bootMs), abort]).catch((err) => {
      if (signal.aborted) throw err;
      const seen = watch?.phases().map((p) => p.phase) ?? [];
      throw new ProvisionError("boot_timeout", "The VM did not boot within the allowed time.", {
        cause: new Error(`no agent hello within ${this.o.timeouts.bootMs} ms; boot phases seen: ${seen.join(", ") || "none"}`),
      });
    });
  }

  private waitHello(link: AgentLink, timeoutMs: number): Promise<AgentHello> {
    if (link.hello) return Promise.resolve(link.hello);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        link.off("hello", on);
        reject(new Error("hello timeout"));
      }, timeoutMs);
      const on = (h: AgentHello) => {
        clearTimeout(t);
        resolve(h);
      };
      link.once("hello", on);
    });
  }

  /**
   * Retries the handshake until the deadline: sshd can start a moment after the agent reports. Every attempt's reason
   * reaches the instance's events (runs of the same one folded): the last alone hid why the earlier ones failed.
   */
  private async checkSsh(rt: Runtime, hostKeys: string[], signal: AbortSignal, event: (message: string) => void): Promise<void> {
    const started = Date.now();
    const deadline = started + this.o.timeouts.sshMs;
    const attempts = new AttemptRuns("ssh", event);
    let last = "not tried";
    try {
      while (Date.now() < deadline && !signal.aborted) {
        const r = await checkSshHostKey({ host: rt.ssh.host, port: rt.ssh.port, expectedHostKeys: hostKeys, timeoutMs: Math.min(15_000, Math.max(1_000, deadline - Date.now())) });
        if (r.ok) return;
        last = r.reason ?? "unknown";
        attempts.failed(last, Date.now() - started);
        // A wrong key is an answer, not a delay: it will not fix itself.
        if (r.presented) throw new ProvisionError("ssh_unreachable", "SSH in the VM presented a host key the agent did not report.", { cause: new Error(last) });
        await new Promise((res) => setTimeout(res, 1_000));
      }
    } finally {
      attempts.flush();
    }
    if (signal.aborted) throw signal.reason;
    throw new ProvisionError("ssh_unreachable", "SSH in the VM was not reachable.", { cause: new Error(last) });
  }

  private reportPhases(watch: BootPhaseWatch, ctx: DriverContext): void {
    for (const phase of ["firmware", "kernel", "initramfs", "rootfs", "systemd", "multi-user"]) {
      watch.waitFor(phase, this.o.timeouts.bootMs).then(
        (h) => ctx.event("boot", `${phase} at ${((h.atMs ?? 0) / 1000).toFixed(1)} s${h.kernelTime !== undefined ? ` (kernel clock ${h.kernelTime.toFixed(2)} s)` : ""}`),
        () => undefined,
      );
    }
  }

  private watchExit(guestId: string): void {
    if (!("events" in this.o.hypervisor) || this.unsubscribe.has(guestId)) return;
    const hv = this.o.hypervisor as Hypervisor & { events(id: string, cb: (e: { event: string }) => void): Promise<() => void> };
    hv.events(guestId, (e) => {
      if (e.event !== "SHUTDOWN" || this.destroying.has(guestId)) return;
      if (this.unclaimed.has(guestId)) this.poolExitListener?.(guestId, "guest shut down");
      else this.exitListener?.(this.owners.get(guestId) ?? guestId, "guest shut down");
    }).then(
      (u) => this.unsubscribe.set(guestId, u),
      () => undefined,
    );
  }

  /** Frees what a guest held. `ownerId` names its egress rules (the instance's after a claim). */
  private async release(guestId: string, ownerId: string, rt: Runtime | null, log: Logger, opts: { keepRunDir: boolean }): Promise<void> {
    this.unsubscribe.get(guestId)?.();
    this.unsubscribe.delete(guestId);
    const link = this.links.get(guestId);
    this.links.delete(guestId);
    this.facts.delete(guestId);
    this.owners.delete(guestId);
    this.recordedChannels.delete(guestId);
    this.unclaimed.delete(guestId);
    await link?.close();
    const inspect = await this.o.hypervisor.inspect(guestId).catch(() => null);
    if (inspect?.state === "running") await this.o.hypervisor.stop(guestId, { graceMs: 0 }).catch((err) => log.warn({ err }, "could not stop QEMU"));
    await this.o.firewall.remove(ownerId).catch((err) => log.warn({ err }, "could not remove egress rules"));
    // A claim interrupted between installing the instance's rules and removing the pool guest's.
    if (ownerId !== guestId) await this.o.firewall.remove(guestId).catch((err) => log.warn({ err }, "could not remove pre-claim egress rules"));
    await this.o.network.detach(guestId).catch((err) => log.warn({ err }, "could not detach guest network"));
    if (rt) this.cids.delete(rt.cid);
    if (!opts.keepRunDir) await this.o.hypervisor.purge(guestId).catch(() => undefined);
  }

  // ---- warm pool ----

  private async bootPoolGuest(g: PoolGuestSpec, ctx: PoolGuestContext): Promise<{ imageId: string }> {
    const log = this.o.logger.child({ pool_guest: g.id });
    this.unclaimed.add(g.id);
    const { runtime, watch, started } = await this.launch(g.id, this.o.poolEgressLimitBytes ?? DEFAULT_POOL_EGRESS_LIMIT, ctx, log);
    try {
      await this.prepareGuest(g.id, runtime.cid, ctx, log, started, watch);
      return { imageId: runtime.imageId };
    } catch (err) {
      // Aborted: a drain tears the guest down itself, and at shutdown the next cvmd adopts it.
      if (!ctx.signal.aborted) await this.release(g.id, g.id, runtime, log, { keepRunDir: false });
      throw this.asProvisionError(err, ctx.signal);
    } finally {
      watch.stop();
    }
  }

  private async adoptPoolGuest(g: PoolGuestSpec, ctx: PoolGuestContext): Promise<AdoptPoolResult> {
    const rt = g.runtime as Runtime | null;
    const res = await this.adoptRunning(g.id, g.id, rt, { keepRunDir: false });
    if (!res.alive) return res;
    this.unclaimed.add(g.id);
    const log = this.o.logger.child({ pool_guest: g.id });
    this.rememberRecordedChannel(g.id, res.record, log);
    return { alive: true, prepared: this.prepareGuest(g.id, res.rt.cid, ctx, log, performance.now()) };
  }

  /** hello → prepare → prepared: everything that does not depend on a tenant. */
  private async prepareGuest(guestId: string, cid: number, ctx: PoolGuestContext, log: Logger, started: number, watch?: BootPhaseWatch): Promise<void> {
    const link = this.openLink(guestId, cid, guestId, log);
    const abort = abortion(ctx.signal);
    const hello = await this.helloOrBootTimeout(link, abort, ctx.signal, watch);
    ctx.event("agent", `agent ${hello.agent_version} said hello after ${Math.round(performance.now() - started)} ms (phase ${hello.state.phase})`);
    if (hello.state.phase === "prepared") return;
    if (hello.state.phase !== "awaiting_setup" && hello.state.phase !== "preparing") {
      throw new ProvisionError("setup_failed", `The pool guest's agent is in phase ${hello.state.phase}, not preparing.`);
    }
    const onProgress = (p: { stage: string; message: string }) => ctx.event("prepare", `${p.stage}: ${p.message}`);
    let onPrepared!: () => void;
    let onFailed!: (f: { code: string; message: string }) => void;
    const outcome = new Promise<void>((resolve, reject) => {
      onPrepared = () => resolve();
      onFailed = (f) => reject(new ProvisionError("setup_failed", `The pool guest's agent could not prepare (${f.code}).`, { cause: new Error(f.message) }));
      link.on("prepared", onPrepared);
      link.on("failed", onFailed);
    });
    outcome.catch(() => undefined);
    link.on("progress", onProgress);
    const t0 = performance.now();
    try {
      if (hello.state.phase === "awaiting_setup") {
        await Promise.race([
          link.prepare(),
          abort,
          deadline(this.o.timeouts.setupAckMs, () => new ProvisionError("agent_timeout", "The pool guest's agent did not acknowledge prepare in time.")),
        ]);
      }
      await Promise.race([
        outcome,
        abort,
        deadline(this.o.timeouts.setupMs, () => new ProvisionError("agent_timeout", "The pool guest's agent did not report prepared in time.")),
      ]);
      ctx.event("prepare", `prepared after ${Math.round(performance.now() - t0)} ms; warm ${Math.round(performance.now() - started)} ms after launch`);
    } finally {
      link.off("progress", onProgress);
      link.off("prepared", onPrepared);
      link.off("failed", onFailed);
    }
  }

  private async claimPoolGuest(spec: InstanceSpec, g: PoolGuestSpec, ctx: DriverContext): Promise<ReadyInfo> {
    const base = g.runtime as Runtime | null;
    if (!base) throw new ProvisionError("internal", "The warm guest has no runtime record.");
    const log = this.o.logger.child({ instance: spec.name, instance_id: spec.id, pool_guest: g.id });
    const rt: Runtime = { ...base, guestId: g.id };
    // From here the instance names the guest: a crash is cleaned up through the instance.
    await ctx.saveRuntime({ ...rt });
    try {
      // The tenant starts at zero with the full quota: the pool guest's counters go with its rules.
      // Instance rules first, so the guest is never without a cap; a frame in between counts twice at most.
      await this.o.firewall.add({ id: spec.id, tap: rt.tap, limitBytes: spec.egressLimitBytes });
      await this.o.firewall.remove(g.id);
      this.unclaimed.delete(g.id);
      this.owners.set(g.id, spec.id);
      this.links.get(g.id)?.onGatewayRequest(this.gatewayFor(g.id));
      return await this.bringUp(spec, rt, ctx, log, performance.now());
    } catch (err) {
      await this.release(g.id, spec.id, rt, log, { keepRunDir: true });
      throw this.asProvisionError(err, ctx.signal);
    }
  }
}

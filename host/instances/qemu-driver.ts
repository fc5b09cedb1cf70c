import type { Logger } from "pino";
import { ImageError, type ImageCatalog } from "../images/image-catalog.js";
import { AgentLink, AgentRequestError, checkSshHostKey, UnixSocketConnector, type AgentHello, type EgressSample, type Heartbeat, type QuoteReply, type Ready } from "../link/index.js";
import type { EgressFirewall } from "../net/egress-firewall.js";
import type { GuestAttachment, GuestNetwork } from "../net/guest-network.js";
import { watchBootPhases, type BootPhaseWatch } from "../vmm/boot-phases.js";
import { allocateCid } from "../vmm/cid.js";
import type { Accel, GuestProfile, Hypervisor } from "../vmm/hypervisor.js";
import { runPaths } from "../vmm/run-dir.js";
import { AttestationUnavailableError, type AdoptResult, type AttestationEvidence, type BootedImage, type Driver, type DriverContext, type HostServices, type InstanceSpec, type ReadyInfo } from "./driver.js";
import { ProvisionError } from "./failure-codes.js";

export interface QemuDriverOptions {
  dataDir: string;
  hypervisor: Hypervisor;
  network: GuestNetwork;
  firewall: EgressFirewall;
  images: ImageCatalog;
  logger: Logger;
  profile: GuestProfile;
  accel: Accel;
  memoryMiB: number;
  vcpus: number;
  tdx?: { firmware: string };
  /** Where the agent exposes the inference gateway inside the guest (OpenClaw's provider baseUrl). */
  guestGatewayUrl: string;
  /** Phase-aware deadlines: QEMU start → agent hello, setup → ready, ready → SSH handshake. */
  timeouts: { bootMs: number; setupMs: number; sshMs: number };
}

interface Runtime {
  tap: string;
  mac: string;
  ip: string;
  netns: string;
  cid: number;
  ssh: { host: string; port: number };
  imageId: string;
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

/**
 * Provisions an instance as a QEMU guest booted from the measured image: network and egress rules
 * first, then QEMU, then the agent's hello → setup → ready over its channel, then an SSH handshake
 * whose host key must be one the agent reported. Guests outlive cvmd; `adopt` picks them up again.
 */
export class QemuDriver implements Driver {
  readonly name: string;
  private readonly links = new Map<string, AgentLink>();
  private readonly facts = new Map<string, GuestFacts>();
  private readonly cids = new Set<number>();
  private readonly destroying = new Set<string>();
  private exitListener?: (id: string, reason: string) => void;
  private readonly unsubscribe = new Map<string, () => void>();
  private services: HostServices = {};

  constructor(private readonly o: QemuDriverOptions) {
    this.name = `qemu (${o.profile}, ${o.profile === "tdx" ? "kvm" : o.accel})`;
  }

  bindHostServices(s: HostServices): void {
    this.services = s;
    for (const [id, link] of this.links) link.onGatewayRequest(s.gateway?.handlerFor(id) ?? null);
  }

  onExit(listener: (instanceId: string, reason: string) => void): void {
    this.exitListener = listener;
  }

  guestFacts(instanceId: string): GuestFacts | undefined {
    return this.facts.get(instanceId);
  }

  link(instanceId: string): AgentLink | undefined {
    return this.links.get(instanceId);
  }

  async create(spec: InstanceSpec, ctx: DriverContext): Promise<ReadyInfo> {
    const log = this.o.logger.child({ instance: spec.name, instance_id: spec.id });
    let image;
    try {
      image = await this.o.images.current();
    } catch (err) {
      if (err instanceof ImageError) throw new ProvisionError("image_unavailable", "The guest image is missing or does not match its manifest.", { cause: err });
      throw err;
    }
    const att = await this.o.network.attach({ instanceId: spec.id });
    const cid = allocateCid(this.cids);
    this.cids.add(cid);
    const runtime: Runtime = { tap: att.tap, mac: att.mac, ip: att.ip, netns: att.netns, cid, ssh: att.ssh, imageId: image.id };
    await ctx.saveRuntime({ ...runtime });
    // The cap is in the kernel before the guest can send its first frame.
    await this.o.firewall.add({ id: spec.id, tap: att.tap, limitBytes: spec.egressLimitBytes });
    ctx.event("vm", `launching ${this.name} from image ${image.id} (${this.o.memoryMiB} MiB, ${this.o.vcpus} vCPU)`);

    const paths = runPaths(this.o.dataDir, spec.id);
    const started = performance.now();
    const watch = watchBootPhases(paths.serialLog, { startedAt: started });
    try {
      const vm = await this.o.hypervisor.launch({
        instanceId: spec.id,
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
      this.watchExit(spec.id);
      const ready = await this.bringUp(spec, runtime, ctx, log, started, watch);
      return ready;
    } catch (err) {
      watch.stop();
      await this.release(spec.id, runtime, log, { keepRunDir: true });
      if (err instanceof ProvisionError) throw err;
      if (ctx.signal.aborted) throw err;
      throw new ProvisionError("boot_timeout", "The VM could not be started.", { cause: err });
    } finally {
      watch.stop();
    }
  }

  async adopt(spec: InstanceSpec, ctx: DriverContext): Promise<AdoptResult> {
    const rt = spec.runtime as Runtime | null;
    const res = await this.o.hypervisor.adopt(spec.id);
    if (!res.adopted) {
      if (rt) await this.release(spec.id, rt, this.o.logger, { keepRunDir: true }).catch(() => undefined);
      return { alive: false, reason: `${res.reason}: ${res.detail}` };
    }
    if (!rt) return { alive: false, reason: "no runtime record for a running guest" };
    this.cids.add(rt.cid);
    this.watchExit(spec.id);
    const log = this.o.logger.child({ instance: spec.name, instance_id: spec.id });
    const paths = runPaths(this.o.dataDir, spec.id);
    const watch = watchBootPhases(paths.serialLog, { fromOffset: res.record.serialOffset });
    const ready = this.bringUp(spec, rt, ctx, log, performance.now(), watch).finally(() => watch.stop());
    return { alive: true, ready };
  }

  async destroy(spec: InstanceSpec): Promise<void> {
    const rt = spec.runtime as Runtime | null;
    this.destroying.add(spec.id);
    try {
      await this.o.hypervisor.stop(spec.id, { graceMs: 5_000 }).catch((err) => {
        // Nothing running is fine: teardown is idempotent.
        if (!/not running|no record/i.test(String(err))) throw err;
      });
      await this.release(spec.id, rt, this.o.logger, { keepRunDir: false });
    } finally {
      this.destroying.delete(spec.id);
    }
  }

  async inspect(spec: InstanceSpec) {
    const i = await this.o.hypervisor.inspect(spec.id);
    return { running: i.state === "running", detail: { pid: i.pid, status: i.status } };
  }

  async attest(spec: InstanceSpec, nonce: Buffer): Promise<AttestationEvidence> {
    const rt = spec.runtime as Runtime | null;
    const link = this.links.get(spec.id);
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
  private async bringUp(spec: InstanceSpec, rt: Runtime, ctx: DriverContext, log: Logger, started: number, watch: BootPhaseWatch): Promise<ReadyInfo> {
    const link = this.openLink(spec, log);
    const abort = new Promise<never>((_, reject) => {
      if (ctx.signal.aborted) reject(ctx.signal.reason);
      ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true });
    });
    abort.catch(() => undefined);

    const hello = await Promise.race([this.waitHello(link, this.o.timeouts.bootMs), abort]).catch((err) => {
      if (ctx.signal.aborted) throw err;
      const seen = watch.phases().map((p) => p.phase);
      throw new ProvisionError("boot_timeout", "The VM did not boot within the allowed time.", {
        cause: new Error(`no agent hello within ${this.o.timeouts.bootMs} ms; boot phases seen: ${seen.join(", ") || "none"}`),
      });
    });
    ctx.event("agent", `agent ${hello.agent_version} said hello after ${Math.round(performance.now() - started)} ms (image ${hello.image_id ?? "unknown"}, phase ${hello.state.phase})`);

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
        await Promise.race([
          link.setup({ public_key: spec.publicKey, agent: spec.agent, inference_model: spec.inferenceModel, gateway_address: this.o.guestGatewayUrl, instance_name: spec.name }),
          abort,
        ]);
      }
      const ready = await Promise.race([
        outcome,
        abort,
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new ProvisionError("agent_timeout", "The in-VM agent did not report ready within the allowed time.")), this.o.timeouts.setupMs).unref(),
        ),
      ]);
      ctx.event("setup", `agent ready after ${Math.round(performance.now() - setupStarted)} ms of setup (OpenClaw ${ready.openclaw_version}, node ${ready.node_version})`);

      const sshStarted = performance.now();
      await this.checkSsh(rt, ready.ssh_host_keys, ctx.signal);
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

  private openLink(spec: InstanceSpec, log: Logger): AgentLink {
    const existing = this.links.get(spec.id);
    if (existing) return existing;
    const link = new AgentLink({
      connector: new UnixSocketConnector(runPaths(this.o.dataDir, spec.id).agent),
      logger: log,
      instanceId: spec.id,
      hostVersion: "cvmd",
      // Under TCG a loaded guest can be slow to answer; the idle timeout only triggers a reconnect.
      idleTimeoutMs: 60_000,
    });
    const facts: GuestFacts = { hello: null, heartbeat: null, heartbeatAt: null };
    this.facts.set(spec.id, facts);
    link.on("hello", (h) => (facts.hello = h));
    link.on("heartbeat", (h) => {
      facts.heartbeat = h;
      facts.heartbeatAt = new Date();
    });
    link.on("egress", (s: EgressSample) => this.services.onGuestEgress?.(spec.id, { bytes: s.bytes, packets: s.packets, sampledAt: new Date(s.sampled_at) }));
    // The channel is the instance's identity: this link's model calls are billed to spec.id.
    link.onGatewayRequest(this.services.gateway?.handlerFor(spec.id) ?? null);
    this.links.set(spec.id, link);
    link.start();
    return link;
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

  /** Retries the handshake until the deadline: sshd can start a moment after the agent reports. */
  private async checkSsh(rt: Runtime, hostKeys: string[], signal: AbortSignal): Promise<void> {
    const deadline = Date.now() + this.o.timeouts.sshMs;
    let last = "not tried";
    while (Date.now() < deadline && !signal.aborted) {
      const r = await checkSshHostKey({ host: rt.ssh.host, port: rt.ssh.port, expectedHostKeys: hostKeys, timeoutMs: Math.min(15_000, Math.max(1_000, deadline - Date.now())) });
      if (r.ok) return;
      last = r.reason ?? "unknown";
      // A wrong key is an answer, not a delay: it will not fix itself.
      if (r.presented) throw new ProvisionError("ssh_unreachable", "SSH in the VM presented a host key the agent did not report.", { cause: new Error(last) });
      await new Promise((res) => setTimeout(res, 1_000));
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

  private watchExit(instanceId: string): void {
    if (!("events" in this.o.hypervisor) || this.unsubscribe.has(instanceId)) return;
    const hv = this.o.hypervisor as Hypervisor & { events(id: string, cb: (e: { event: string }) => void): Promise<() => void> };
    hv.events(instanceId, (e) => {
      if (e.event === "SHUTDOWN" && !this.destroying.has(instanceId)) this.exitListener?.(instanceId, "guest shut down");
    }).then(
      (u) => this.unsubscribe.set(instanceId, u),
      () => undefined,
    );
  }

  private async release(id: string, rt: Runtime | null, log: Logger, opts: { keepRunDir: boolean }): Promise<void> {
    this.unsubscribe.get(id)?.();
    this.unsubscribe.delete(id);
    const link = this.links.get(id);
    this.links.delete(id);
    this.facts.delete(id);
    await link?.close();
    const inspect = await this.o.hypervisor.inspect(id).catch(() => null);
    if (inspect?.state === "running") await this.o.hypervisor.stop(id, { graceMs: 0 }).catch((err) => log.warn({ err }, "could not stop QEMU"));
    await this.o.firewall.remove(id).catch((err) => log.warn({ err }, "could not remove egress rules"));
    await this.o.network.detach(id).catch((err) => log.warn({ err }, "could not detach guest network"));
    if (rt) this.cids.delete(rt.cid);
    if (!opts.keepRunDir) await this.o.hypervisor.purge(id).catch(() => undefined);
  }
}

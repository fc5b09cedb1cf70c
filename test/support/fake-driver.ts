import type { SshEndpoint } from "../../shared/api/schemas.js";
import type { AdoptResult, AttestationEvidence, BootedImage, Driver, DriverContext, InstanceSpec, PoolGuestSpec, ReadyInfo, WarmGuestDriver } from "../../host/drivers/driver.js";
import { reportDataFor } from "../../shared/tdx/index.js";
import type { Rtmr3Event } from "../../shared/protocol/messages.js";
import { ProvisionError, type FailureCode } from "../../host/drivers/failure-codes.js";

/**
 * TEST DOUBLE of the VM driver: no VM, no network. "Guests" are entries in a map that outlives a
 * daemon object, so a restarted daemon in the same test can adopt them.
 */
export class FakeDriver implements Driver {
  readonly name = "fake (test double)";
  readonly guests = new Map<string, { spec: InstanceSpec; ready: boolean }>();
  readonly destroyed: string[] = [];
  readyAfterMs = 0;
  failWith: FailureCode | null = null;
  /** Guests created while set boot for `readyAfterMs`, then fail with this code (and are gone, as the real driver leaves it). */
  failLater: FailureCode | null = null;
  destroyDelayMs = 0;
  /** The next this many destroy() calls throw, as a QEMU that will not die or a lost network namespace would. */
  destroyFailures = 0;
  /** SSH host keys the fake agent "reported at ready"; REPORTDATA binds them. */
  hostKeys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmGHkWDnb6W3Ssd8p8cRUzlgPGTd2lkNXCx2n9tJfJP"];
  /**
   * When set, attest() answers with the quote this returns (a real fixture quote, or one a test PKI
   * signed over `reportData`); otherwise it answers like an agent without TDX.
   */
  quoteFor: ((nonce: Buffer, reportData: Buffer) => Buffer | Promise<Buffer>) | null = null;
  eventLog: Rtmr3Event[] = [];
  image: BootedImage | undefined = undefined;
  /** Where guests that become ready say their sshd is (a real sshd in tests that log in); default: hostname:22. */
  sshEndpoint: SshEndpoint | null = null;
  private exitListener?: (id: string, reason: string) => void;

  /** Pool guests, by pool id; like `guests`, they outlive a daemon object. */
  readonly poolGuests = new Map<string, { imageId: string; prepared: boolean; egressLimitBytes: number }>();
  readonly destroyedPoolGuests: string[] = [];
  readonly claims: Array<{ instanceId: string; guestId: string }> = [];
  /** The image pool guests boot from; null: no image. */
  imageId: string | null = "img-fake-1";
  preparedAfterMs = 0;
  private poolExitListener?: (id: string, reason: string) => void;

  readonly warm: WarmGuestDriver = {
    currentImageId: async () => this.imageId,
    boot: async (g, ctx) => {
      const imageId = this.imageId;
      if (!imageId) throw new ProvisionError("image_unavailable");
      await ctx.saveRuntime({ fake: true });
      this.poolGuests.set(g.id, { imageId, prepared: false, egressLimitBytes: g.egressLimitBytes });
      await this.sleep(this.preparedAfterMs, ctx.signal);
      this.poolGuests.get(g.id)!.prepared = true;
      return { imageId };
    },
    adopt: async (g, ctx) => {
      const pg = this.poolGuests.get(g.id);
      if (!pg) return { alive: false, reason: "no such fake pool guest" };
      return { alive: true, prepared: pg.prepared ? Promise.resolve() : this.sleep(this.preparedAfterMs, ctx.signal).then(() => void (pg.prepared = true)) };
    },
    claim: async (spec, g, ctx) => {
      const pg = this.poolGuests.get(g.id);
      if (!pg?.prepared) throw new ProvisionError("setup_failed", `fake pool guest ${g.id} is not prepared`);
      await ctx.saveRuntime({ fake: true, guestId: g.id });
      this.poolGuests.delete(g.id);
      this.claims.push({ instanceId: spec.id, guestId: g.id });
      this.guests.set(spec.id, { spec, ready: true });
      ctx.event("progress", "fake claim-time setup");
      return this.info(spec);
    },
    destroy: async (g: PoolGuestSpec) => {
      this.poolGuests.delete(g.id);
      this.destroyedPoolGuests.push(g.id);
    },
    onExit: (listener) => (this.poolExitListener = listener),
  };

  /** Simulates an unclaimed pool guest dying on its own. */
  crashPoolGuest(id: string): void {
    this.poolGuests.delete(id);
    this.poolExitListener?.(id, "fake crash");
  }

  private sleep(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const t = setTimeout(resolve, ms);
      signal.addEventListener("abort", () => {
        clearTimeout(t);
        reject(signal.reason);
      });
    });
  }

  async create(spec: InstanceSpec, ctx: DriverContext): Promise<ReadyInfo> {
    await ctx.saveRuntime({ fake: true });
    this.guests.set(spec.id, { spec, ready: false });
    ctx.event("progress", "fake guest booting");
    if (this.failWith) throw new ProvisionError(this.failWith);
    const failLater = this.failLater;
    if (failLater) {
      await this.sleep(this.readyAfterMs, ctx.signal);
      this.guests.delete(spec.id);
      throw new ProvisionError(failLater);
    }
    return this.waitReady(spec, ctx.signal);
  }

  async adopt(spec: InstanceSpec, ctx: DriverContext): Promise<AdoptResult> {
    const g = this.guests.get(spec.id);
    if (!g) return { alive: false, reason: "no such fake guest" };
    return { alive: true, ready: g.ready ? Promise.resolve(this.info(spec)) : this.waitReady(spec, ctx.signal) };
  }

  async destroy(spec: InstanceSpec): Promise<void> {
    if (this.destroyDelayMs) await new Promise((r) => setTimeout(r, this.destroyDelayMs));
    if (this.destroyFailures > 0) {
      this.destroyFailures--;
      throw new Error("fake destroy failure (test double)");
    }
    this.guests.delete(spec.id);
    this.destroyed.push(spec.id);
  }

  async inspect(spec: InstanceSpec) {
    return { running: this.guests.has(spec.id) };
  }

  async attest(_spec: InstanceSpec, nonce: Buffer): Promise<AttestationEvidence> {
    // Computed the way the agent does: over the nonce and the host keys it reported.
    const reportData = reportDataFor(nonce, this.hostKeys);
    if (!this.quoteFor) return { available: false, reason: "test double: no TDX", eventLog: this.eventLog, image: this.image };
    const quote = await this.quoteFor(nonce, reportData);
    return { available: true, quote, reportData, eventLog: this.eventLog, hostKeys: [...this.hostKeys], image: this.image };
  }

  onExit(listener: (id: string, reason: string) => void): void {
    this.exitListener = listener;
  }

  /** Simulates a guest dying on its own. */
  crash(id: string): void {
    this.guests.delete(id);
    this.exitListener?.(id, "fake crash");
  }

  private info(spec: InstanceSpec): ReadyInfo {
    return { ssh: this.sshEndpoint ? { ...this.sshEndpoint } : { host: spec.hostname, port: 22, user: "azureuser" }, hostKeys: [...this.hostKeys] };
  }

  private waitReady(spec: InstanceSpec, signal: AbortSignal): Promise<ReadyInfo> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        const g = this.guests.get(spec.id);
        if (g) g.ready = true;
        resolve(this.info(spec));
      }, this.readyAfterMs);
      if (signal.aborted) {
        clearTimeout(t);
        reject(signal.reason);
        return;
      }
      signal.addEventListener("abort", () => {
        clearTimeout(t);
        reject(signal.reason);
      });
    });
  }
}

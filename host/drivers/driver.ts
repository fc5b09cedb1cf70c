import type { Logger } from "pino";
import type { SshEndpoint } from "../../shared/api/schemas.js";
import type { GatewayHandler } from "../link/gateway-streams.js";
import type { Rtmr3Event } from "../../shared/protocol/messages.js";

/** What a driver needs to bring up one instance. */
export interface InstanceSpec {
  id: string;
  name: string;
  tenantSlug: string;
  hostname: string;
  publicKey: string;
  agent: string;
  inferenceModel: string;
  egressLimitBytes: number;
  /**
   * What the driver recorded for this instance before (pid, CID, tap...), for adoption and teardown.
   * Opaque above the driver: the engine stores and copies it, never reads or extends it.
   */
  runtime: Record<string, unknown> | null;
}

export interface ReadyInfo {
  ssh: SshEndpoint;
  /** SSH host public keys the guest reported and the host checked. */
  hostKeys?: string[];
}

/** The image an instance booted from and the measurements its manifest expects (the manifest's own field, unfiltered). */
export interface BootedImage {
  id: string;
  expectedMeasurements: Record<string, unknown> | null;
}

/**
 * What the guest's agent answered to a quote request over the channel the host dialled. `hostKeys`
 * are the SSH host keys the agent reported at ready (and the host checked over SSH), never keys taken
 * from the quote reply: the host recomputes REPORTDATA from them. Without TDX the agent says so.
 */
export type AttestationEvidence =
  | { available: true; quote: Buffer; reportData: Buffer; eventLog: Rtmr3Event[]; hostKeys: string[]; image?: BootedImage }
  | { available: false; reason: string; eventLog: Rtmr3Event[]; image?: BootedImage };

/** The guest could not be asked right now (no channel, agent silent); the API answers `unavailable`. */
export class AttestationUnavailableError extends Error {
  override name = "AttestationUnavailableError";
}

export interface DriverContext {
  /** Aborted when the instance is deleted while provisioning, or when cvmd shuts down. */
  signal: AbortSignal;
  /** Records a progress event on the instance (shown in its events). */
  event(type: string, message: string): void;
  /** Persists driver state; called BEFORE the side effect it describes (restart safety). */
  saveRuntime(runtime: Record<string, unknown>): Promise<void>;
}

export interface HostServices {
  gateway?: { handlerFor(instanceId: string): GatewayHandler };
  onGuestEgress?(instanceId: string, sample: { bytes: number; packets: number; sampledAt: Date }): void;
  /** The security event stream: agent links record each guest's abuse of its channel there. */
  securityLog?: Logger;
}

export type AdoptResult =
  | { alive: false; reason: string }
  /** `ready` settles when a provisioning guest finishes (or at once for one that was ready). */
  | { alive: true; ready: Promise<ReadyInfo> };

/**
 * A warm-pool guest as the driver sees it: its own id (run dir, tap, pre-claim egress rules) and
 * runtime. A claim copies that runtime to the instance as it is, so it must name the guest itself.
 */
export interface PoolGuestSpec {
  id: string;
  runtime: Record<string, unknown> | null;
}

/**
 * A pool guest to boot. It runs under the instance cap (CVM_EGRESS_LIMIT_BYTES) from its first frame:
 * the claim swaps its rules for the claiming instance's, with fresh counters and the same limit.
 */
export interface PoolGuestBoot extends PoolGuestSpec {
  egressLimitBytes: number;
}

export interface PoolGuestContext {
  /** Aborted when the guest is drained or cvmd shuts down. */
  signal: AbortSignal;
  /** A progress line for the log (pool guests have no tenant-visible events). */
  event(type: string, message: string): void;
  /** Persists driver state; called BEFORE the side effect it describes (restart safety). */
  saveRuntime(runtime: Record<string, unknown>): Promise<void>;
}

export type AdoptPoolResult = { alive: false; reason: string } | { alive: true; prepared: Promise<void> };

/**
 * The warm pool's side of a driver: guests booted from the current image and prepared with no tenant
 * (agent hello, OpenClaw started with a neutral configuration), later claimed by exactly one instance.
 */
export interface WarmGuestDriver {
  /** The image new guests boot from now (verified against its manifest), or null when there is none. */
  currentImageId(): Promise<string | null>;
  /** Boots a pool guest and resolves once its agent reports `prepared`; resolves with the image it booted. */
  boot(guest: PoolGuestBoot, ctx: PoolGuestContext): Promise<{ imageId: string }>;
  /** Re-attaches a pool guest after a cvmd restart. */
  adopt(guest: PoolGuestSpec, ctx: PoolGuestContext): Promise<AdoptPoolResult>;
  /**
   * Hands a prepared guest to an instance: the guest's egress rules are replaced by the instance's
   * (fresh counters, the full quota), then the claim-time setup runs. Resolves like `create`.
   * Records the instance's runtime (which names the guest) through ctx.saveRuntime first.
   */
  claim(spec: InstanceSpec, guest: PoolGuestSpec, ctx: DriverContext): Promise<ReadyInfo>;
  /** Stops an unclaimed guest and releases everything it held. */
  destroy(guest: PoolGuestSpec): Promise<void>;
  /** Reports unclaimed guests that die on their own. */
  onExit(listener: (guestId: string, reason: string) => void): void;
}

/**
 * Provisioning backend. `create` resolves when the guest is ready for the tenant and rejects with a
 * ProvisionError (stable failure_code) otherwise. Instances outlive cvmd: `adopt` re-attaches after
 * a restart, and `destroy` is the only thing that stops a guest.
 */
export interface Driver {
  readonly name: string;
  create(spec: InstanceSpec, ctx: DriverContext): Promise<ReadyInfo>;
  adopt(spec: InstanceSpec, ctx: DriverContext): Promise<AdoptResult>;
  destroy(spec: InstanceSpec): Promise<void>;
  inspect(spec: InstanceSpec): Promise<{ running: boolean; detail?: Record<string, unknown> }>;
  /**
   * Fresh attestation evidence of a ready guest over `nonce` (16–64 bytes). Rejects with
   * AttestationUnavailableError when the guest cannot be asked. Drivers without guests that can
   * attest leave it out.
   */
  attest?(spec: InstanceSpec, nonce: Buffer): Promise<AttestationEvidence>;
  /**
   * Host services the guests' agent channels lead to (wired by the daemon before adoption): the
   * inference gateway for each instance's model calls, and the sink of the guests' own egress samples.
   */
  bindHostServices?(s: HostServices): void;
  /** Called once by the engine so the driver can report guests that die on their own. */
  onExit?(listener: (instanceId: string, reason: string) => void): void;
  close?(): Promise<void>;
  /** Present when the driver can keep a warm pool. */
  readonly warm?: WarmGuestDriver;
}

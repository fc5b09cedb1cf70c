import type { SshEndpoint } from "../../shared/api/types.js";

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
  /** What the driver recorded for this instance before (pid, CID, tap...), for adoption and teardown. */
  runtime: Record<string, unknown> | null;
}

export interface ReadyInfo {
  ssh: SshEndpoint;
  /** SSH host public keys the guest reported and the host checked. */
  hostKeys?: string[];
}

export interface DriverContext {
  /** Aborted when the instance is deleted while provisioning, or when cvmd shuts down. */
  signal: AbortSignal;
  /** Records a progress event on the instance (shown in its events). */
  event(type: string, message: string): void;
  /** Persists driver state; called BEFORE the side effect it describes (restart safety). */
  saveRuntime(runtime: Record<string, unknown>): Promise<void>;
}

export type AdoptResult =
  | { alive: false; reason: string }
  /** `ready` settles when a provisioning guest finishes (or at once for one that was ready). */
  | { alive: true; ready: Promise<ReadyInfo> };

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
  /** Called once by the engine so the driver can report guests that die on their own. */
  onExit?(listener: (instanceId: string, reason: string) => void): void;
  close?(): Promise<void>;
}

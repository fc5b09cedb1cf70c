import { isoSeconds, type InstanceRecord } from "../../shared/api/schemas.js";
import type { Instance } from "../store/instances.js";

/** The contract's instance record for `inst`; every field present, `null` where unset. */
export function toRecord(inst: Instance, tenantSlug: string, baseDomain: string): InstanceRecord {
  const iso = (d: Date | null) => (d ? isoSeconds(d) : null);
  return {
    name: inst.name,
    status: inst.status,
    agent: inst.agent,
    hostname: `${inst.name}.${tenantSlug}.${baseDomain}`,
    public_key: inst.publicKey,
    inference_mode: inst.inferenceMode,
    inference_model: inst.inferenceModel,
    egress_limit_bytes: inst.egressLimitBytes,
    failure_code: inst.failureCode,
    failure_message: inst.failureMessage,
    // Only "deleted_via_api" is ever written (engine.delete, operator-actions); the column is TEXT.
    terminated_reason: inst.terminatedReason as InstanceRecord["terminated_reason"],
    created_at: isoSeconds(inst.createdAt),
    ready_at: iso(inst.readyAt),
    terminated_at: iso(inst.terminatedAt),
    ssh: inst.status === "ready" ? inst.ssh : null,
    egress: inst.egress
      ? { bytes: inst.egress.bytes, observed_at: isoSeconds(inst.egress.observedAt), blocked: inst.egress.blocked, block_applied_at: iso(inst.egress.blockAppliedAt) }
      : null,
  };
}

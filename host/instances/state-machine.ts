import type { InstanceStatus } from "../../shared/api/schemas.js";

/**
 * Every legal status change, in one place. `ready → failed` covers a guest that dies after it was
 * handed over (failure_code says why); everything but `terminated` may be deleted.
 */
const ALLOWED: Record<InstanceStatus, readonly InstanceStatus[]> = {
  provisioning: ["ready", "failed", "terminating"],
  ready: ["failed", "terminating"],
  failed: ["terminating"],
  terminating: ["terminated"],
  terminated: [],
};

export class IllegalTransitionError extends Error {
  override name = "IllegalTransitionError";
  constructor(readonly from: InstanceStatus, readonly to: InstanceStatus) {
    super(`illegal instance transition ${from} → ${to}`);
  }
}

export function canTransition(from: InstanceStatus, to: InstanceStatus): boolean {
  return ALLOWED[from].includes(to);
}

export function assertTransition(from: InstanceStatus, to: InstanceStatus): void {
  if (!canTransition(from, to)) throw new IllegalTransitionError(from, to);
}

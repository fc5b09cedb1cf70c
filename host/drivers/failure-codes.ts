/**
 * The stable `failure_code` values an instance can end with. Messages stored beside them are safe to
 * show to the tenant; causes with host detail go to the log only.
 */
export const FAILURE_CODES = {
  driver_unavailable: "This host has no usable VM driver configured; the instance cannot be provisioned.",
  image_unavailable: "The guest image is missing or does not match its manifest.",
  capacity_exhausted: "The host has no memory or CPU left for another instance.",
  boot_timeout: "The VM did not boot within the allowed time.",
  agent_timeout: "The in-VM agent did not acknowledge setup or report ready within the allowed time.",
  setup_failed: "The in-VM agent refused setup or could not complete it.",
  ssh_unreachable: "SSH in the VM was not reachable, or presented an unexpected host key.",
  vm_exited: "The VM stopped unexpectedly.",
  host_restart_lost: "The VM was not running when the host daemon restarted.",
  internal: "An internal error stopped provisioning.",
} as const;

export type FailureCode = keyof typeof FAILURE_CODES;

/** A driver's way to end provisioning with a stable code. */
export class ProvisionError extends Error {
  override name = "ProvisionError";
  constructor(readonly code: FailureCode, message?: string, opts: { cause?: unknown } = {}) {
    super(message ?? FAILURE_CODES[code], opts);
  }
}

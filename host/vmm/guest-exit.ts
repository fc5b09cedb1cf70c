import type { GuestExit, GuestExitKind } from "./hypervisor.js";
import type { QmpEvent } from "./qmp-client.js";

/** QEMU's ShutdownCause values (qapi/run-state.json) and what each says about how the guest ended. */
const KIND_BY_CAUSE: Readonly<Record<string, GuestExitKind>> = Object.freeze({
  "guest-shutdown": "poweroff",
  "guest-reset": "reset",
  "subsystem-reset": "reset",
  "guest-panic": "crash",
  "host-error": "crash",
  "host-qmp-quit": "stopped",
  "host-qmp-system-reset": "stopped",
  "host-ui": "stopped",
  "host-signal": "killed",
});

/**
 * The exit a QMP event announces: SHUTDOWN, which QEMU sends just before it ends (the argv has
 * -no-reboot, so a reset ends it too, and no -no-shutdown). Any other event announces none.
 */
export function guestExitFrom(instanceId: string, e: QmpEvent): GuestExit | null {
  if (e.event !== "SHUTDOWN") return null;
  const cause = typeof e.data?.reason === "string" ? e.data.reason : "unknown";
  return { instanceId, kind: Object.hasOwn(KIND_BY_CAUSE, cause) ? KIND_BY_CAUSE[cause] : "stopped", detail: cause };
}

/** QEMU gone without a SHUTDOWN event: SIGKILL (cvmd's last escalation, the OOM killer) or a crash of QEMU itself. */
export function vanished(instanceId: string): GuestExit {
  return { instanceId, kind: "killed", detail: "QEMU ended without a SHUTDOWN event" };
}

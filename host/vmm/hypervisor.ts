/** The capability the lifecycle engine needs from a virtual machine monitor; `QemuHypervisor` is the real one. */

import type { ProfileName } from "../../shared/protocol/agent-channel.js";

export type GuestProfile = ProfileName;
export type Accel = "kvm" | "tcg";

/** Where the TDX quote-generation service (QGS) listens; QEMU forwards the guest's GetQuote requests there. */
export type QgsAddress = { type: "vsock"; cid: number; port: number } | { type: "unix"; path: string };

/** By convention QGS listens on the host's vsock CID (2) port 4050. */
export const DEFAULT_QGS: QgsAddress = Object.freeze({ type: "vsock", cid: 2, port: 4050 });

/** A bootable guest as files on disk (kernel, initrd, command line and read-only disks). */
export interface GuestImage {
  kernel: string;
  initrd: string;
  cmdline: string;
  /** Read-only virtio disks in the order the guest expects them (root first, then e.g. its verity hash device). */
  disks: Array<{ id: string; path: string }>;
}

export interface LaunchSpec {
  instanceId: string;
  profile: GuestProfile;
  /** Ignored for `tdx`, which always runs under KVM. */
  accel: Accel;
  image: GuestImage;
  /** Guest size; its defaults are the configuration's (CVM_VM_MEMORY_MIB, CVM_VM_VCPUS), not this layer's. */
  memoryMiB: number;
  vcpus: number;
  /** vsock CID the host assigned; used by vhost-vsock under `tdx`, recorded (for the link layer) under `plain`. */
  cid: number;
  nic: { tap: string; mac: string };
  /** Network namespace the tap lives in; QEMU is started inside it. */
  netns?: string;
  tdx?: { firmware: string; qgs?: QgsAddress };
}

/** What is written to launch.json before QEMU starts, so a restarted cvmd knows what it was running. */
export interface LaunchRecord {
  version: 1;
  instanceId: string;
  profile: GuestProfile;
  accel: Accel;
  cid: number;
  tap: string;
  mac: string;
  netns: string | null;
  argv: string[];
  recordedAt: string;
  /** Size of serial.log before this launch; the boot of this launch starts there. */
  serialOffset: number;
}

export interface LaunchedVm {
  instanceId: string;
  pid: number;
  runDir: string;
  record: LaunchRecord;
  /** Milliseconds from spawning QEMU until it daemonized (its devices are set up). */
  startMs: number;
}

export type VmState = "running" | "stopped" | "unknown";

export interface VmInspection {
  instanceId: string;
  state: VmState;
  pid?: number;
  /** QMP `query-status` status, e.g. "running", "paused", "shutdown". */
  status?: string;
  record?: LaunchRecord;
}

export type AdoptResult =
  | { adopted: true; instanceId: string; pid: number; status: string; record: LaunchRecord }
  | { adopted: false; instanceId: string; reason: "no-record" | "dead" | "not-ours" | "qmp-unreachable"; detail: string };

export interface StopOptions {
  /** Time the guest gets to power off after an ACPI request; 0 skips the request and goes straight to `quit`. */
  graceMs?: number;
}

export interface StopResult {
  stoppedBy: "already-stopped" | "powerdown" | "quit" | "sigterm" | "sigkill";
  elapsedMs: number;
}

/**
 * How a guest ended. QEMU runs daemonized, not as cvmd's child, so there is no exit status to read:
 * the kind comes from the reason in QEMU's SHUTDOWN event, or from the process being gone without one.
 */
export type GuestExitKind =
  /** The guest powered itself off. */
  | "poweroff"
  /** The guest rebooted or reset itself (a triple fault too): under -no-reboot that ends QEMU. */
  | "reset"
  /** The guest panicked, or QEMU stopped on an error of its own. */
  | "crash"
  /** The host ended it through the monitor (QMP quit or system_reset) or QEMU's UI. */
  | "stopped"
  /** QEMU was signalled: SIGTERM, SIGINT or SIGHUP (with a SHUTDOWN event), or SIGKILL and anything else that left none. */
  | "killed";

export interface GuestExit {
  instanceId: string;
  kind: GuestExitKind;
  /** QEMU's SHUTDOWN reason (`guest-shutdown`, `guest-panic`, `host-qmp-quit`, ...), or what was seen instead. */
  detail: string;
}

export interface Hypervisor {
  launch(spec: LaunchSpec): Promise<LaunchedVm>;
  stop(instanceId: string, opts?: StopOptions): Promise<StopResult>;
  inspect(instanceId: string): Promise<VmInspection>;
  adopt(instanceId: string): Promise<AdoptResult>;
  /** Instance ids that have a run dir (live or not); the reconciler compares these against the store. */
  list(): Promise<string[]>;
  /** Removes the run dir of a stopped instance (logs included). */
  purge(instanceId: string): Promise<void>;
  /**
   * `exit`: a guest this hypervisor launched or adopted has ended, whatever ended it (its own stop()
   * included: a listener that stops guests knows which ones it is stopping).
   */
  on(event: "exit", listener: (exit: GuestExit) => void): void;
  off(event: "exit", listener: (exit: GuestExit) => void): void;
}

/**
 * What went wrong, for callers to match on (never on the message): `invalid_spec` a launch spec or
 * run dir this host cannot use, `already_running` a launch or purge of a guest that runs,
 * `launch_failed` a QEMU that did not start or resume, `stop_failed` a QEMU that outlived SIGKILL.
 */
export type VmmErrorCode = "invalid_spec" | "already_running" | "launch_failed" | "stop_failed";

export class VmmError extends Error {
  constructor(
    readonly code: VmmErrorCode,
    message: string,
    opts?: { cause?: unknown },
  ) {
    super(message, opts);
    this.name = "VmmError";
  }
}

import { AGENT_CHANNELS, type AgentChannel, type AgentEndpoint, type ProfileName } from "../../shared/protocol/agent-channel.js";
import { DEFAULT_QGS, VmmError, type LaunchSpec, type QgsAddress } from "./hypervisor.js";
import { qemuOptValue } from "./qemu-opt.js";
import type { RunPaths } from "./run-dir.js";

export type { AgentEndpoint };

export type MeasurementRegister = "mrtd" | "rtmr0" | "rtmr1" | "rtmr2" | "rtmr3";

/**
 * Everything that differs between profiles, in one row each: the QEMU devices, the agent channel and
 * how the host reaches it, the firmware and the registers a quote of such a guest is checked on. The
 * argv builder, the driver and (through AGENT_CHANNELS) the guest read it; `checkProfile` refuses a
 * row whose argv creates a channel other than the one the driver would dial.
 */
export interface Profile {
  readonly name: ProfileName;
  /** The channel the guest's agent listens on; must be AGENT_CHANNELS[name], which the guest reads. */
  readonly channel: AgentChannel;
  /** `qemu-default`: QEMU's own SeaBIOS; `tdvf`: the TDX build of OVMF named in the spec, loaded with -bios. */
  readonly firmware: "qemu-default" | "tdvf";
  /** Registers a quote from this profile's guests is compared on; empty: such guests cannot attest. */
  readonly measurements: readonly MeasurementRegister[];
  /** Throws VmmError("invalid_spec") for what this profile needs and the spec lacks. */
  validate(spec: LaunchSpec): void;
  /** Accelerator, CPU, machine and confidential-computing objects, placed right after -name. */
  machineArgs(spec: LaunchSpec): string[];
  /** The devices carrying the agent channel, placed last before -pidfile. */
  channelArgs(spec: LaunchSpec, paths: RunPaths): string[];
  /** What the host dials to reach the agent of a guest launched with `channelArgs`. */
  endpoint(guest: { cid: number }, paths: RunPaths): AgentEndpoint;
}

/** QAPI SocketAddress as the JSON form of -object expects it; vsock cid/port are strings in QAPI's VsockSocketAddress. */
function qgsJson(a: QgsAddress): Record<string, string> {
  return a.type === "vsock" ? { type: "vsock", cid: String(a.cid), port: String(a.port) } : { type: "unix", path: a.path };
}

const plain: Profile = Object.freeze({
  name: "plain",
  channel: AGENT_CHANNELS.plain,
  firmware: "qemu-default",
  measurements: Object.freeze([]),
  validate: () => undefined,
  machineArgs: (spec: LaunchSpec) => ["-accel", spec.accel, "-cpu", spec.accel === "kvm" ? "host" : "max", "-machine", "q35"],
  channelArgs: (_spec: LaunchSpec, paths: RunPaths) => [
    // No vhost-vsock on development hosts: the agent channel rides a virtio-serial port, QEMU being the socket server.
    "-device", "virtio-serial-pci,id=vser0",
    "-chardev", `socket,id=agent0,path=${qemuOptValue(paths.agent)},server=on,wait=off`,
    "-device", `virtserialport,bus=vser0.0,chardev=agent0,name=${AGENT_CHANNELS.plain.portName}`,
  ],
  endpoint: (_guest: { cid: number }, paths: RunPaths): AgentEndpoint => ({ kind: "unix", path: paths.agent }),
});

const tdx: Profile = Object.freeze({
  name: "tdx",
  channel: AGENT_CHANNELS.tdx,
  firmware: "tdvf",
  measurements: Object.freeze(["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"] as const),
  validate: (spec: LaunchSpec) => {
    if (!spec.tdx?.firmware) throw new VmmError("invalid_spec", "the tdx profile needs tdx.firmware (a TDVF build of OVMF)");
  },
  // Syntax from upstream QEMU docs/system/i386/tdx.rst ("Launching a TD"): -accel kvm, -cpu host,
  // -object tdx-guest,id=tdx0, -machine ...,confidential-guest-support=tdx0, TDVF loaded with -bios because TDX has
  // no read-only memslots (so no pflash); "kernel-irqchip must be split". The quote-generation-socket property is a
  // QAPI SocketAddress (qapi/qom.json TdxGuestProperties, since 10.1); a nested struct needs the JSON form of -object.
  machineArgs: (spec: LaunchSpec) => [
    "-accel", "kvm", "-cpu", "host",
    "-object", JSON.stringify({ "qom-type": "tdx-guest", id: "tdx0", "quote-generation-socket": qgsJson(spec.tdx!.qgs ?? DEFAULT_QGS) }),
    // Guest RAM from a memfd backend named on -machine: QEMU pairs it with KVM guest_memfd for the private half.
    "-object", `memory-backend-memfd,id=mem0,size=${spec.memoryMiB}M`,
    "-machine", "q35,kernel-irqchip=split,confidential-guest-support=tdx0,memory-backend=mem0",
    "-bios", spec.tdx!.firmware,
  ],
  channelArgs: (spec: LaunchSpec) => ["-device", `vhost-vsock-pci,guest-cid=${spec.cid}`],
  // Node cannot open AF_VSOCK; the link layer bridges it through socat (VsockSocatConnector).
  endpoint: (guest: { cid: number }): AgentEndpoint => ({ kind: "vsock", cid: guest.cid, port: AGENT_CHANNELS.tdx.port }),
});

export type ProfileTable = Readonly<Record<ProfileName, Profile>>;

export const PROFILES: ProfileTable = Object.freeze({ plain, tdx });

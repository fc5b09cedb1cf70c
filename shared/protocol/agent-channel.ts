/**
 * Which channel carries the agent protocol under each guest profile. Both ends read this table: the
 * host builds QEMU's devices and dials from it (host/vmm/profiles.ts), the agent picks where to
 * listen from it (guest/main.ts), so neither side can be changed alone.
 */

export type ProfileName = "plain" | "tdx";
export const PROFILE_NAMES: readonly ProfileName[] = Object.freeze(["plain", "tdx"]);

/** virtio-serial port name; the guest's udev rule exposes it as /dev/virtio-ports/<name>. */
export const AGENT_VIRTIO_PORT_NAME = "org.cvm.agent.0";
/** Fixed vsock port the agent listens on; the host knows the guest by the CID it assigned. */
export const AGENT_VSOCK_PORT = 1024;

export type AgentChannel =
  | { kind: "virtio-serial"; portName: string; guestDevice: string }
  | { kind: "vsock"; port: number; guestDevice: string };

/** Where the host dials a guest's agent: a Unix socket (QEMU's virtio-serial chardev), or a vsock CID and port. */
export type AgentEndpoint = { kind: "unix"; path: string } | { kind: "vsock"; cid: number; port: number };

export const AGENT_CHANNELS = Object.freeze({
  // Development hosts have no vhost-vsock: QEMU relays a virtio-serial port to a Unix socket.
  plain: Object.freeze({ kind: "virtio-serial", portName: AGENT_VIRTIO_PORT_NAME, guestDevice: `/dev/virtio-ports/${AGENT_VIRTIO_PORT_NAME}` } as const),
  // A TD has vhost-vsock; virtio-serial through QEMU would work too but is not what is measured and deployed.
  tdx: Object.freeze({ kind: "vsock", port: AGENT_VSOCK_PORT, guestDevice: "/dev/vsock" } as const),
}) satisfies Readonly<Record<ProfileName, AgentChannel>>;

/**
 * The profile a guest runs under, told by the one device only that profile's QEMU command line
 * creates: the named virtio-serial port exists only under `plain`. Without it the guest is a TD
 * (or has no channel at all, and listening on vsock fails with a clear error).
 */
export function guestProfile(exists: (path: string) => boolean): ProfileName {
  return exists(AGENT_CHANNELS.plain.guestDevice) ? "plain" : "tdx";
}

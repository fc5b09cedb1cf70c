import { resolve } from "node:path";
import { integer, matching, onOff, oneOf, readSettings, secondsAsMs, setting, text, type Lookup, type Settings } from "../../shared/config/settings.js";
import { httpUrl, ipAddress, ipv4Cidr, portRange } from "./values.js";

const nftName = matching(/^[A-Za-z0-9_]{1,32}$/, "not a valid name (letters, digits, _; up to 32)");
const ifName = matching(/^[A-Za-z0-9_.-]{1,15}$/, "not a valid interface name (up to 15 characters)");

/** One line per setting; the key is its field in VmConfig (the three deadlines go to `timeouts`). */
export const VM_SETTINGS = {
  profile: setting("CVM_PROFILE", oneOf(["plain", "tdx"]), "plain"),
  accel: setting("CVM_ACCEL", oneOf(["kvm", "tcg", "auto"]), "auto"),
  imageDir: setting("CVM_IMAGE_DIR", text, "images/out/current"),
  memoryMiB: setting("CVM_VM_MEMORY_MIB", integer(512, 1 << 20), "2048"),
  vcpus: setting("CVM_VM_VCPUS", integer(1, 256), "2"),
  tdxFirmware: setting("CVM_TDX_FIRMWARE", text, "/usr/share/ovmf/OVMF.inteltdx.fd"),
  guestGatewayUrl: setting("CVM_GUEST_GATEWAY_URL", httpUrl("http://127.0.0.1:18790/v1"), "http://127.0.0.1:18790/v1"),
  bootMs: setting("CVM_BOOT_TIMEOUT_S", secondsAsMs(5, 86_400), "600"),
  setupMs: setting("CVM_SETUP_TIMEOUT_S", secondsAsMs(5, 86_400), "900"),
  sshMs: setting("CVM_SSH_TIMEOUT_S", secondsAsMs(1, 3_600), "120"),
  setupAckMs: setting("CVM_SETUP_ACK_TIMEOUT_S", secondsAsMs(5, 86_400), "120"),
  serialLogMaxKiB: setting("CVM_SERIAL_LOG_MAX_KIB", integer(64, 1 << 20), "4096"),
};

export const NETWORK_SETTINGS = {
  netns: setting("CVM_NETNS", matching(/^[A-Za-z0-9_-]{1,32}$/, "not a valid name (letters, digits, _ and -; up to 32)"), "cvm-guests"),
  pool: setting("CVM_GUEST_POOL", ipv4Cidr, "10.77.0.0/24"),
  link: setting("CVM_GUEST_LINK", ipv4Cidr, "10.77.255.0/31"),
  hostTable: setting("CVM_NAT_TABLE", nftName, "cvm_nat"),
  egressTable: setting("CVM_EGRESS_TABLE", nftName, "cvm_egress"),
  hostVeth: setting("CVM_HOST_VETH", ifName, "cvm-h0"),
  nsVeth: setting("CVM_NS_VETH", ifName, "cvm-n0"),
  nat: setting("CVM_GUEST_NAT", onOff, "off"),
  sshListen: setting("CVM_SSH_LISTEN", ipAddress, "127.0.0.1"),
  sshPorts: setting("CVM_SSH_PORTS", portRange, "22200-22999"),
};

type Timeouts = "bootMs" | "setupAckMs" | "setupMs" | "sshMs";

/**
 * The QEMU driver's settings: guest profile and size, phase deadlines (in `timeouts`), the guests'
 * network. Derived from the two shapes, so a new setting there is typed here without another edit.
 */
export type VmConfig = Readonly<Omit<Settings<typeof VM_SETTINGS>, Timeouts> & Settings<typeof NETWORK_SETTINGS> & { timeouts: Readonly<Pick<Settings<typeof VM_SETTINGS>, Timeouts>> }>;

export function vmConfigFrom(get: Lookup, cwd: string): VmConfig {
  const { bootMs, setupAckMs, setupMs, sshMs, imageDir, ...vm } = readSettings(VM_SETTINGS, get);
  return Object.freeze({ ...vm, ...readSettings(NETWORK_SETTINGS, get), imageDir: resolve(cwd, imageDir), timeouts: Object.freeze({ bootMs, setupAckMs, setupMs, sshMs }) });
}

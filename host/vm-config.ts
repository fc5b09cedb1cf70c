import { resolve } from "node:path";
import { ConfigError } from "./config.js";

/**
 * Configuration of the QEMU driver, compiled like Config (raw env → defaults → validated, frozen).
 * Kept apart from the API's settings: it only matters when CVM_DRIVER=qemu.
 */
export interface VmConfig {
  profile: "plain" | "tdx";
  accel: "kvm" | "tcg" | "auto";
  imageDir: string;
  memoryMiB: number;
  vcpus: number;
  netns: string;
  pool: string;
  link: string;
  hostTable: string;
  hostVeth: string;
  nsVeth: string;
  egressTable: string;
  nat: boolean;
  sshListen: string;
  sshPorts: { from: number; to: number };
  tdxFirmware: string;
  timeouts: { bootMs: number; setupAckMs: number; setupMs: number; sshMs: number };
  guestGatewayUrl: string;
  /** Cap on each guest's serial.log and its rotated serial.log.1 together. */
  serialLogMaxKiB: number;
}

const int = (v: string, name: string, min: number, max: number): number => {
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new ConfigError(`${name}=${v}: expected an integer between ${min} and ${max}`);
  return Number(v);
};

export function loadVmConfig(env: NodeJS.ProcessEnv, cwd = process.cwd()): VmConfig {
  const get = (k: string, d: string) => (env[k] === undefined || env[k] === "" ? d : env[k]!);
  const profile = get("CVM_PROFILE", "plain");
  if (profile !== "plain" && profile !== "tdx") throw new ConfigError(`CVM_PROFILE=${profile}: expected plain or tdx`);
  const accel = get("CVM_ACCEL", "auto");
  if (accel !== "kvm" && accel !== "tcg" && accel !== "auto") throw new ConfigError(`CVM_ACCEL=${accel}: expected kvm, tcg or auto`);
  const nat = get("CVM_GUEST_NAT", "off");
  if (nat !== "on" && nat !== "off") throw new ConfigError(`CVM_GUEST_NAT=${nat}: expected on or off`);
  const ports = get("CVM_SSH_PORTS", "22200-22999");
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(ports);
  if (!m || Number(m[1]) < 1024 || Number(m[2]) > 65535 || Number(m[1]) > Number(m[2])) throw new ConfigError(`CVM_SSH_PORTS=${ports}: expected a range such as 22200-22999 above 1023`);
  const name = (k: string, d: string, re: RegExp) => {
    const v = get(k, d);
    if (!re.test(v)) throw new ConfigError(`${k}=${v}: not a valid name`);
    return v;
  };
  return Object.freeze({
    profile,
    accel,
    imageDir: resolve(cwd, get("CVM_IMAGE_DIR", "images/out/current")),
    memoryMiB: int(get("CVM_VM_MEMORY_MIB", "2048"), "CVM_VM_MEMORY_MIB", 512, 1 << 20),
    vcpus: int(get("CVM_VM_VCPUS", "2"), "CVM_VM_VCPUS", 1, 256),
    netns: name("CVM_NETNS", "cvm-guests", /^[A-Za-z0-9_-]{1,32}$/),
    pool: get("CVM_GUEST_POOL", "10.77.0.0/24"),
    link: get("CVM_GUEST_LINK", "10.77.255.0/31"),
    hostTable: name("CVM_NAT_TABLE", "cvm_nat", /^[A-Za-z0-9_]{1,32}$/),
    hostVeth: name("CVM_HOST_VETH", "cvm-h0", /^[A-Za-z0-9_.-]{1,15}$/),
    nsVeth: name("CVM_NS_VETH", "cvm-n0", /^[A-Za-z0-9_.-]{1,15}$/),
    egressTable: name("CVM_EGRESS_TABLE", "cvm_egress", /^[A-Za-z0-9_]{1,32}$/),
    nat: nat === "on",
    sshListen: get("CVM_SSH_LISTEN", "127.0.0.1"),
    sshPorts: { from: Number(m[1]), to: Number(m[2]) },
    tdxFirmware: get("CVM_TDX_FIRMWARE", "/usr/share/ovmf/OVMF.inteltdx.fd"),
    timeouts: {
      bootMs: int(get("CVM_BOOT_TIMEOUT_S", "600"), "CVM_BOOT_TIMEOUT_S", 5, 86_400) * 1000,
      setupAckMs: int(get("CVM_SETUP_ACK_TIMEOUT_S", "120"), "CVM_SETUP_ACK_TIMEOUT_S", 5, 86_400) * 1000,
      setupMs: int(get("CVM_SETUP_TIMEOUT_S", "900"), "CVM_SETUP_TIMEOUT_S", 5, 86_400) * 1000,
      sshMs: int(get("CVM_SSH_TIMEOUT_S", "120"), "CVM_SSH_TIMEOUT_S", 1, 3_600) * 1000,
    },
    guestGatewayUrl: get("CVM_GUEST_GATEWAY_URL", "http://127.0.0.1:18790/v1"),
    serialLogMaxKiB: int(get("CVM_SERIAL_LOG_MAX_KIB", "4096"), "CVM_SERIAL_LOG_MAX_KIB", 64, 1 << 20),
  });
}

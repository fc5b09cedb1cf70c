import path from "node:path";

/** IPv4 helpers and the compiled (validated, frozen) configuration of the guest network. */

export function ipToInt(ip: string): number {
  const parts = ip.split(".");
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) throw new Error(`not an IPv4 address: ${ip}`);
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join(".");
}

export interface Cidr {
  network: number;
  prefix: number;
  size: number;
}

export function parseCidr(s: string): Cidr {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d{1,2})$/.exec(s);
  if (!m) throw new Error(`not an IPv4 CIDR: ${s}`);
  const prefix = Number(m[2]);
  if (prefix > 32) throw new Error(`bad prefix in ${s}`);
  const size = 2 ** (32 - prefix);
  const ip = ipToInt(m[1]);
  if (ip % size !== 0) throw new Error(`${s} has host bits set`);
  return { network: ip, prefix, size };
}

export interface GuestNetworkOptions {
  /** Where the allocation state (guest-network.json), the DHCP host list, leases and pid file live. */
  stateDir: string;
  /** The data dir named in the namespace's owner mark (see netns-owner.ts); default: stateDir. */
  owner?: string;
  netns?: string;
  bridge?: string;
  /** Guest pool inside the namespace: bridge gets .1, guests .2 upwards. */
  pool?: string;
  /** /31 for the veth pair: first address on the host side, second in the namespace. */
  link?: string;
  hostVeth?: string;
  nsVeth?: string;
  /** nft table in the host namespace for the SSH forwards (family ip). */
  hostTable?: string;
  /** Give guests a route out (masqueraded through the host). Off by default: guests reach only what is forwarded. */
  nat?: boolean;
  /** DNS servers handed out by DHCP when NAT is on. */
  dns?: readonly string[];
  /**
   * With NAT on, IPv4 addresses or CIDRs guests must not reach besides the non-public ranges and the host's own
   * addresses: the inference upstreams' addresses (see upstreamAddresses), so the metered gateway is the only way there.
   */
  blockedDestinations?: readonly string[];
  sshListen?: string;
  sshPorts?: { from: number; to: number };
  guestSshPort?: number;
  ipBinary?: string;
  nftBinary?: string;
  dnsmasqBinary?: string;
  sysctlBinary?: string;
  bridgeBinary?: string;
}

export type GuestNetworkConfig = Readonly<Required<Omit<GuestNetworkOptions, "sshPorts" | "dns" | "blockedDestinations">>> & {
  readonly sshPorts: Readonly<{ from: number; to: number }>;
  readonly dns: readonly string[];
  readonly blockedDestinations: readonly string[];
  readonly poolCidr: Cidr;
  readonly bridgeIp: string;
  readonly hostLinkIp: string;
  readonly nsLinkIp: string;
  /** Guest indexes run from 2 (bridge is 1) to the last address before broadcast. */
  readonly firstIndex: number;
  readonly lastIndex: number;
};

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const NAME = /^[A-Za-z0-9_-]{1,64}$/;

export function compileGuestNetworkConfig(raw: GuestNetworkOptions): GuestNetworkConfig {
  const o = {
    netns: "cvm-guests",
    bridge: "cvmbr0",
    pool: "10.77.0.0/24",
    link: "10.77.255.0/31",
    hostVeth: "cvm-h0",
    nsVeth: "cvm-n0",
    hostTable: "cvm_nat",
    nat: false,
    sshListen: "127.0.0.1",
    guestSshPort: 22,
    ipBinary: "ip",
    nftBinary: "nft",
    dnsmasqBinary: "dnsmasq",
    sysctlBinary: "sysctl",
    bridgeBinary: "bridge",
    ...raw,
    owner: raw.owner ?? raw.stateDir,
    sshPorts: raw.sshPorts ?? { from: 22200, to: 22999 },
    dns: raw.dns ?? [],
    blockedDestinations: raw.blockedDestinations ?? [],
  };
  const bad = (m: string): never => {
    throw new Error(`guest network config: ${m}`);
  };
  if (!path.isAbsolute(o.stateDir)) bad(`stateDir must be absolute: ${o.stateDir}`);
  if (!path.isAbsolute(o.owner)) bad(`owner must be absolute: ${o.owner}`);
  if (!NAME.test(o.netns)) bad(`netns ${JSON.stringify(o.netns)} must match ${NAME}`);
  if (!NAME.test(o.hostTable)) bad(`hostTable ${JSON.stringify(o.hostTable)} must match ${NAME}`);
  for (const n of [o.bridge, o.hostVeth, o.nsVeth]) if (!IFNAME.test(n)) bad(`interface name ${JSON.stringify(n)} is invalid`);
  const pool = parseCidr(o.pool);
  if (pool.prefix > 29 || pool.prefix < 16) bad(`pool ${o.pool} must be between /16 and /29`);
  const link = parseCidr(o.link);
  if (link.prefix !== 31) bad(`link ${o.link} must be a /31`);
  if (link.network >= pool.network && link.network < pool.network + pool.size) bad(`link ${o.link} overlaps pool ${o.pool}`);
  ipToInt(o.sshListen);
  for (const d of o.dns) ipToInt(d);
  for (const b of o.blockedDestinations) if (b.includes("/")) parseCidr(b); else ipToInt(b);
  const { from, to } = o.sshPorts;
  if (!Number.isInteger(from) || !Number.isInteger(to) || from < 1024 || to > 65535 || from > to) bad(`sshPorts ${from}-${to} must lie within 1024-65535`);
  return Object.freeze({
    ...o,
    sshPorts: Object.freeze({ from, to }),
    dns: Object.freeze([...o.dns]),
    blockedDestinations: Object.freeze([...o.blockedDestinations]),
    poolCidr: Object.freeze(pool),
    bridgeIp: intToIp(pool.network + 1),
    hostLinkIp: intToIp(link.network),
    nsLinkIp: intToIp(link.network + 1),
    firstIndex: 2,
    lastIndex: pool.size - 2,
  });
}

export function guestIp(cfg: GuestNetworkConfig, index: number): string {
  if (!Number.isInteger(index) || index < cfg.firstIndex || index > cfg.lastIndex) {
    throw new RangeError(`guest index ${index} outside ${cfg.firstIndex}-${cfg.lastIndex} of ${cfg.pool}`);
  }
  return intToIp(cfg.poolCidr.network + index);
}

/** 52:54 (QEMU's locally administered prefix) followed by the guest's IPv4 address, so MAC and address agree. */
export function guestMac(ip: string): string {
  return "52:54:" + ip.split(".").map((o) => Number(o).toString(16).padStart(2, "0")).join(":");
}

/** Taps live only in our namespace, so the index alone keeps them unique there. */
export function guestTap(index: number): string {
  return `tap${index}`;
}

/** Lowest integer in [from, to] not in `used`. */
export function lowestFree(used: Iterable<number>, from: number, to: number): number | null {
  const taken = new Set(used);
  for (let i = from; i <= to; i++) if (!taken.has(i)) return i;
  return null;
}

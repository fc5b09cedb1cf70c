/**
 * Anti-spoofing on each guest tap: a netdev ingress chain per tap, in a table of its own in the guest namespace, that
 * lets through only frames carrying the guest's assigned identity. Everything else is counted in the tap's named
 * counter `spoofed_<tap>` and dropped. Pure rendering; guest-network.ts applies it.
 *
 * The chain runs at a lower priority than the egress cap's chains (-500), so a spoofed frame is dropped before it is
 * charged to the quota: it never leaves the tap, so there is nothing to charge.
 */

/** Below the egress firewall's default -500: the guard sees a frame first. */
export const TAP_GUARD_PRIORITY = -600;
export const TAP_GUARD_TABLE = "cvm_guard";
const T = `netdev ${TAP_GUARD_TABLE}`;

export interface TapIdentity {
  tap: string;
  mac: string;
  ipv4: string;
}

export const guardChain = (tap: string) => `guard_${tap.replace(/[^A-Za-z0-9]/g, "_")}`;
export const spoofCounter = (tap: string) => `spoofed_${tap.replace(/[^A-Za-z0-9]/g, "_")}`;

/**
 * The link-local address the guest forms from its MAC (modified EUI-64). The guest image turns link-local addressing
 * off and no IPv6 prefix is handed out, so this is the only IPv6 source a guest is ever entitled to.
 */
export function linkLocalOf(mac: string): string {
  const b = mac.split(":").map((h) => Number.parseInt(h, 16));
  if (b.length !== 6 || b.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) throw new Error(`not a MAC address: ${mac}`);
  const w = [(b[0] ^ 0x02) << 8 | b[1], b[2] << 8 | 0xff, 0xfe << 8 | b[3], b[4] << 8 | b[5]];
  return `fe80::${w.map((x) => x.toString(16)).join(":")}`;
}

/** An IPv6 address as the 128-bit integer a raw payload match compares against. */
function ipv6Hex(addr: string): string {
  const [head, tail] = addr.split("::");
  const parts = (s: string | undefined) => (s ? s.split(":") : []);
  const h = parts(head);
  const t = parts(tail);
  const groups = [...h, ...Array<string>(8 - h.length - t.length).fill("0"), ...t];
  return "0x" + groups.map((g) => g.padStart(4, "0")).join("");
}

/** Rules of one tap's guard chain, in order; each drop names the tap's counter. */
export function tapGuardRules(id: TapIdentity): string[] {
  const drop = `counter name "${spoofCounter(id.tap)}" drop`;
  const ll = linkLocalOf(id.mac);
  // ICMPv6 neighbour discovery: the target address sits 8 bytes into the message; nft 1.0.6 has no name for it.
  const ndTarget = `@th,64,128 != ${ipv6Hex(ll)}`;
  return [
    `ether saddr != ${id.mac} ${drop}`,
    `meta protocol != { ip, arp, ip6 } ${drop}`,
    // Only well-formed Ethernet/IPv4 ARP: the sender fields below are read at those offsets.
    `arp htype != 1 ${drop}`,
    `arp ptype != ip ${drop}`,
    `arp hlen != 6 ${drop}`,
    `arp plen != 4 ${drop}`,
    `arp saddr ether != ${id.mac} ${drop}`,
    // 0.0.0.0 is an address probe (RFC 5227), which no neighbour table learns from.
    `arp saddr ip != { ${id.ipv4}, 0.0.0.0 } ${drop}`,
    // The DHCP server answers (and writes its ARP entry for) the client hardware address inside the request: only
    // the guest's own. BOOTP's chaddr starts 28 bytes into the UDP payload.
    `udp dport 67 @th,288,48 != 0x${id.mac.replace(/:/g, "")} ${drop}`,
    // A DHCP client without a lease yet.
    `ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept`,
    `ip saddr != ${id.ipv4} ${drop}`,
    `ip6 saddr != { ${ll}, :: } ${drop}`,
    // The unspecified source is for duplicate address detection (and the MLD report that precedes it) only.
    `ip6 saddr :: icmpv6 type != { nd-neighbor-solicit, mld2-listener-report } ${drop}`,
    `ip6 saddr :: icmpv6 type nd-neighbor-solicit ${ndTarget} ${drop}`,
    `icmpv6 type nd-neighbor-advert ${ndTarget} ${drop}`,
  ];
}

/** Installs or refreshes one tap's chain; the counter keeps its value when it already exists. */
export function renderTapGuard(id: TapIdentity): string {
  const chain = guardChain(id.tap);
  return [
    `add table ${T}`,
    `add counter ${T} ${spoofCounter(id.tap)}`,
    `add chain ${T} ${chain} { type filter hook ingress device ${JSON.stringify(id.tap)} priority ${TAP_GUARD_PRIORITY}; policy accept; }`,
    `flush chain ${T} ${chain}`,
    ...tapGuardRules(id).map((r) => `add rule ${T} ${chain} ${r}`),
  ].join("\n") + "\n";
}

/** Removes one tap's chain and counter; harmless when they do not exist. */
export function renderTapUnguard(tap: string): string {
  const chain = guardChain(tap);
  const counter = spoofCounter(tap);
  // Declaring before deleting makes the deletion succeed whether or not the objects exist (nft 1.0.6 has no destroy).
  return [
    `add table ${T}`,
    `add chain ${T} ${chain}`,
    `delete chain ${T} ${chain}`,
    `add counter ${T} ${counter}`,
    `delete counter ${T} ${counter}`,
  ].join("\n") + "\n";
}

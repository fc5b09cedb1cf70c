import { BlockList, isIP } from "node:net";

/** Addresses whose X-Forwarded-For we believe; everything else is the client itself. */
export class TrustedProxies {
  private readonly list = new BlockList();
  readonly empty: boolean;

  constructor(entries: readonly string[]) {
    for (const e of entries) {
      const [addr, bits] = e.split("/");
      const type = isIP(addr!) === 6 ? "ipv6" : "ipv4";
      if (bits === undefined) this.list.addAddress(addr!, type);
      else this.list.addSubnet(addr!, Number(bits), type);
    }
    this.empty = entries.length === 0;
  }

  has(address: string): boolean {
    const family = isIP(address);
    return family !== 0 && this.list.check(address, family === 6 ? "ipv6" : "ipv4");
  }
}

/** `::ffff:10.0.0.1` (a v4 peer on a dual-stack socket) is 10.0.0.1 for limits and logs. */
export function normalizeAddress(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1]! : address;
}

/**
 * The client's address: the peer, unless the peer is a trusted proxy, in which case X-Forwarded-For
 * is walked from the right (the entry our proxy appended) past further trusted proxies. An entry
 * that is not an IP address stops the walk at the hop that handed it to us, so garbage in the
 * header cannot pick an identity.
 */
export function clientAddress(peer: string, forwardedFor: string | undefined, trusted: TrustedProxies): string {
  let current = normalizeAddress(peer);
  if (trusted.empty || !forwardedFor || !trusted.has(current)) return current;
  const hops = forwardedFor.split(",").map((h) => h.trim()).filter(Boolean);
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = normalizeAddress(hops[i]!);
    if (!isIP(hop)) return current;
    current = hop;
    if (!trusted.has(hop)) return hop;
  }
  return current;
}

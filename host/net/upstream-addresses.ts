import { lookup as dnsLookup } from "node:dns/promises";
import { isIPv4 } from "node:net";

export type Lookup = (host: string) => Promise<Array<{ address: string; family: number }>>;

const defaultLookup: Lookup = (host) => dnsLookup(host, { all: true });

/**
 * The IPv4 addresses of the inference upstreams' base URLs, resolved once at start-up, for the NAT filter to refuse:
 * a guest that reached an upstream directly would bypass the gateway's metering. A name that does not resolve fails
 * start-up: starting anyway would leave that upstream reachable.
 */
export async function upstreamAddresses(baseUrls: readonly string[], lookup: Lookup = defaultLookup): Promise<string[]> {
  const out = new Set<string>();
  for (const raw of new Set(baseUrls)) {
    const host = new URL(raw).hostname.replace(/^\[|\]$/g, "");
    if (isIPv4(host)) {
      out.add(host);
      continue;
    }
    if (host.includes(":")) continue; // IPv6 literal: guests have no IPv6 route out
    let found: Array<{ address: string; family: number }>;
    try {
      found = await lookup(host);
    } catch (e) {
      throw new Error(`cannot resolve inference upstream ${host} (needed to keep guests from reaching it past the gateway): ${(e as Error).message}`);
    }
    for (const a of found) if (a.family === 4) out.add(a.address);
  }
  return [...out].sort();
}

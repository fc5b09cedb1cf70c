import { isIPv4, isIPv6 } from "node:net";

/** The addresses one instance hostname resolves to. Either list may be empty or absent. */
export interface DnsAddresses {
  a?: string[];
  aaaa?: string[];
}

/**
 * Where the embedded server learns the state of a name `<name>.<slug>.<zone>`.
 * `null` means the name does not exist (unknown tenant or instance, or terminated): NXDOMAIN.
 * An object with no addresses means the instance exists but has none yet (NOERROR, no data).
 */
export interface DnsRecordSource {
  lookup(name: string, slug: string): Promise<DnsAddresses | null>;
}

/**
 * Publishes instance hostnames. The lifecycle engine calls `upsert` when an instance becomes
 * reachable and `remove` when it stops being so; both are idempotent.
 */
export interface DnsProvider {
  readonly name: string;
  upsert(hostname: string, records: DnsAddresses): Promise<void>;
  remove(hostname: string): Promise<void>;
}

/** More than this many addresses per family is a bug upstream; capping keeps answers small. */
export const MAX_ADDRESSES_PER_FAMILY = 8;

/** Canonical, de-duplicated, capped copies of the lists; throws on anything that is not an address of its family. */
export function normalizeAddresses(r: DnsAddresses): { a: string[]; aaaa: string[] } {
  const a = [...new Set(r.a ?? [])];
  const aaaa = [...new Set((r.aaaa ?? []).map((x) => x.toLowerCase()))];
  for (const x of a) if (!isIPv4(x)) throw new Error(`not an IPv4 address: ${x}`);
  for (const x of aaaa) if (!isIPv6(x)) throw new Error(`not an IPv6 address: ${x}`);
  if (a.length > MAX_ADDRESSES_PER_FAMILY || aaaa.length > MAX_ADDRESSES_PER_FAMILY) {
    throw new Error(`at most ${MAX_ADDRESSES_PER_FAMILY} addresses per family`);
  }
  return { a, aaaa };
}

const WILDCARD = new Set(["0.0.0.0", "::", "0:0:0:0:0:0:0:0"]);

/**
 * The addresses a tenant uses to reach an instance whose SSH endpoint host is `sshHost`.
 * An IP literal is the answer itself (127.0.0.1 in development; a routed guest address in
 * production). A hostname or a wildcard listen address says "this host", so the host's own public
 * addresses stand in, when configured.
 */
export function addressesForSshHost(sshHost: string | null | undefined, hostAddresses: DnsAddresses = {}): DnsAddresses {
  const host = sshHost?.replace(/^\[|\]$/g, "");
  if (host && !WILDCARD.has(host)) {
    if (isIPv4(host)) return { a: [host] };
    if (isIPv6(host)) return { aaaa: [host.toLowerCase()] };
  }
  return { a: [...(hostAddresses.a ?? [])], aaaa: [...(hostAddresses.aaaa ?? [])] };
}

/** Splits a mixed list of IPv4/IPv6 literals (e.g. from an environment variable) into families. */
export function splitAddresses(list: string[]): DnsAddresses {
  const out = { a: [] as string[], aaaa: [] as string[] };
  for (const raw of list) {
    const x = raw.trim();
    if (isIPv4(x)) out.a.push(x);
    else if (isIPv6(x)) out.aaaa.push(x.toLowerCase());
    else throw new Error(`not an IP address: ${raw}`);
  }
  return out;
}

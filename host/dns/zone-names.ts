/** Where a query name sits relative to the zone cvmd is authoritative for. */
export type ZonePosition =
  | { kind: "outside" }
  | { kind: "apex" }
  /** `<slug>.<zone>`: a tenant's subdomain, which holds only instance names. */
  | { kind: "tenant"; slug: string }
  | { kind: "instance"; name: string; slug: string }
  /** Inside the zone but cannot exist (deeper than an instance, or not a hostname label). */
  | { kind: "nonexistent" };

// Hostname labels only: instance names and tenant slugs are drawn from this alphabet.
const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Lower-cased, without the trailing dot. */
export function canonicalName(name: string): string {
  return name.replace(/\.$/, "").toLowerCase();
}

/** `zone` must already be canonical. Comparison is case-insensitive (RFC 4343). */
export function locateInZone(qname: string, zone: string): ZonePosition {
  const n = canonicalName(qname);
  if (n === zone) return { kind: "apex" };
  if (!n.endsWith("." + zone)) return { kind: "outside" };
  const labels = n.slice(0, -(zone.length + 1)).split(".");
  if (!labels.every((l) => LABEL.test(l))) return { kind: "nonexistent" };
  if (labels.length === 1) return { kind: "tenant", slug: labels[0]! };
  if (labels.length === 2) return { kind: "instance", name: labels[0]!, slug: labels[1]! };
  return { kind: "nonexistent" };
}

/** The hostname of an instance, as the API reports it. */
export function instanceHostname(name: string, slug: string, zone: string): string {
  return `${name}.${slug}.${zone}`;
}

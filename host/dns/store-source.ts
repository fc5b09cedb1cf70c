import type { Instance, InstanceStore } from "../store/instances.js";
import type { TenantStore } from "../store/tenants.js";
import { addressesForSshHost, type DnsAddresses, type DnsProvider, type DnsRecordSource } from "./records.js";
import { instanceHostname } from "./zone-names.js";

/**
 * What an instance's hostname resolves to, by its state:
 * - `provisioning`: where SSH will be reached, if already known (the driver's runtime `ssh.host`,
 *   recorded before boot by the QEMU driver), else no address yet;
 * - `ready`: its SSH endpoint's host;
 * - `failed`: the name stays (the instance exists until deleted) but has no address, because the
 *   address it had may be handed to another instance;
 * - `terminating`, `terminated`: no name at all.
 */
export function instanceAddresses(inst: Pick<Instance, "status" | "ssh" | "runtime">, hostAddresses: DnsAddresses = {}): DnsAddresses | null {
  switch (inst.status) {
    case "ready":
      return addressesForSshHost(inst.ssh?.host, hostAddresses);
    case "provisioning": {
      const planned = (inst.runtime as { ssh?: { host?: unknown } } | null)?.ssh?.host;
      return typeof planned === "string" ? addressesForSshHost(planned, hostAddresses) : {};
    }
    case "failed":
      return {};
    default:
      return null;
  }
}

/** The embedded server's view of the store: a name resolves while its instance lives. */
export class StoreDnsRecordSource implements DnsRecordSource {
  constructor(
    private readonly d: {
      tenants: Pick<TenantStore, "bySlug">;
      instances: Pick<InstanceStore, "byName">;
      /** This host's public addresses, for instances reached through a port forward on a wildcard address. */
      hostAddresses?: DnsAddresses;
    },
  ) {}

  async lookup(name: string, slug: string): Promise<DnsAddresses | null> {
    const tenant = await this.d.tenants.bySlug(slug);
    if (!tenant) return null;
    const inst = await this.d.instances.byName(tenant.id, name);
    return inst ? instanceAddresses(inst, this.d.hostAddresses) : null;
  }
}

/**
 * Brings an external provider in line with the store after a start: publishes every ready
 * instance and withdraws the failed and terminating ones (terminated ones were withdrawn before
 * they became terminated). Returns the hostnames it could not sync; it never throws for one name.
 */
export async function syncProviderFromStore(
  provider: DnsProvider,
  d: {
    tenants: Pick<TenantStore, "byId">;
    instances: Pick<InstanceStore, "list">;
    baseDomain: string;
    hostAddresses?: DnsAddresses;
  },
): Promise<{ published: number; withdrawn: number; failed: Array<{ hostname: string; error: Error }> }> {
  const result = { published: 0, withdrawn: 0, failed: [] as Array<{ hostname: string; error: Error }> };
  const slugs = new Map<number, string | undefined>();
  for (const inst of await d.instances.list({ statuses: ["ready", "failed", "terminating"] })) {
    if (!slugs.has(inst.tenantId)) slugs.set(inst.tenantId, (await d.tenants.byId(inst.tenantId))?.slug);
    const slug = slugs.get(inst.tenantId);
    if (!slug) continue;
    const hostname = instanceHostname(inst.name, slug, d.baseDomain);
    const addresses = instanceAddresses(inst, d.hostAddresses);
    try {
      if (inst.status === "ready" && addresses) {
        await provider.upsert(hostname, addresses);
        result.published++;
      } else {
        await provider.remove(hostname);
        result.withdrawn++;
      }
    } catch (err) {
      result.failed.push({ hostname, error: err as Error });
    }
  }
  return result;
}

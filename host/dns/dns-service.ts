import type { Logger } from "pino";
import type { InstanceStore } from "../store/instances.js";
import type { TenantStore } from "../store/tenants.js";
import { AuthoritativeZone } from "./authoritative-zone.js";
import type { DnsConfig } from "./dns-config.js";
import { startDnsServer, type DnsServer } from "./dns-server.js";
import { EmbeddedDnsProvider } from "./embedded-provider.js";
import { addressesForSshHost, type DnsProvider } from "./records.js";
import { Rfc2136Provider } from "./rfc2136-provider.js";
import { StoreDnsRecordSource, syncProviderFromStore } from "./store-source.js";

export interface DnsService {
  /** What the lifecycle engine publishes through. */
  provider: DnsProvider;
  /** cvmd's own server, when CVM_DNS_LISTEN is set. */
  server: DnsServer | null;
  /** Publishes an instance reached at `sshHost` (its SSH endpoint's host): call when it becomes ready. */
  publish(hostname: string, sshHost: string): Promise<void>;
  /** Withdraws an instance's name: call when it fails, and before it is marked terminated. */
  withdraw(hostname: string): Promise<void>;
  /**
   * After a start (adoption settled): re-publishes ready instances and withdraws failed and
   * terminating ones, repairing what a crash may have left undone. Nothing to do for the embedded
   * provider, whose answers are the store.
   */
  sync(): Promise<{ published: number; withdrawn: number; failed: Array<{ hostname: string; error: Error }> }>;
  close(): Promise<void>;
}

/** Builds the provider and, when configured, starts the embedded server over the store. */
export async function startDns(
  cfg: DnsConfig,
  deps: { baseDomain: string; tenants: TenantStore; instances: InstanceStore; logger?: Logger; now?: () => Date },
): Promise<DnsService> {
  const provider: DnsProvider = cfg.rfc2136
    ? new Rfc2136Provider(
        { server: cfg.rfc2136.server, zone: cfg.rfc2136.zone, key: { name: cfg.rfc2136.keyName, secret: cfg.rfc2136.secret }, ttlSeconds: cfg.ttlSeconds },
        deps.now,
      )
    : new EmbeddedDnsProvider();
  let server: DnsServer | null = null;
  if (cfg.listen) {
    const zone = new AuthoritativeZone(
      {
        zone: deps.baseDomain,
        nameservers: cfg.nameservers,
        apexAddresses: cfg.hostAddresses,
        hostmaster: cfg.hostmaster,
        ttlSeconds: cfg.ttlSeconds,
        negativeTtlSeconds: cfg.negativeTtlSeconds,
        // Answers come live from the store, so the serial only has to move forward across restarts.
        serial: Math.floor((deps.now?.() ?? new Date()).getTime() / 1000),
        logger: deps.logger,
      },
      new StoreDnsRecordSource({ tenants: deps.tenants, instances: deps.instances, hostAddresses: cfg.hostAddresses }),
    );
    server = await startDnsServer({ listen: cfg.listen, zone, logger: deps.logger });
  }
  return {
    provider,
    server,
    publish: (hostname, sshHost) => provider.upsert(hostname, addressesForSshHost(sshHost, cfg.hostAddresses)),
    withdraw: (hostname) => provider.remove(hostname),
    sync: async () =>
      provider instanceof EmbeddedDnsProvider
        ? { published: 0, withdrawn: 0, failed: [] }
        : syncProviderFromStore(provider, { tenants: deps.tenants, instances: deps.instances, baseDomain: deps.baseDomain, hostAddresses: cfg.hostAddresses }),
    close: async () => void (await server?.close()),
  };
}

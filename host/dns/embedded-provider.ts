import type { DnsAddresses, DnsProvider } from "./records.js";

/**
 * The provider that goes with cvmd's own DNS server. That server reads every answer from the
 * store at query time, so there is nothing to write: publishing and withdrawing are the instance's
 * state transitions themselves, which is also why it needs no repair after a crash.
 */
export class EmbeddedDnsProvider implements DnsProvider {
  readonly name = "embedded";

  async upsert(_hostname: string, _records: DnsAddresses): Promise<void> {}

  async remove(_hostname: string): Promise<void> {}
}

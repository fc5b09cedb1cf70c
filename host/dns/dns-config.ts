import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { z } from "zod";
import { ConfigError, commaList, hostPort, integer, oneOf, optional, readSettings, setting, type Lookup, type Value } from "../../shared/config/settings.js";
import { normalizeAddresses, splitAddresses, type DnsAddresses } from "./records.js";
import { canonicalName } from "./zone-names.js";

/** DNS settings of cvmd, validated. Secrets stay in memory only. */
export interface DnsConfig {
  /** cvmd's own authoritative server for the base domain; null keeps it off. */
  listen: { host: string; port: number } | null;
  provider: "embedded" | "rfc2136";
  ttlSeconds: number;
  negativeTtlSeconds: number;
  /** NS (and SOA MNAME) of the zone: names outside it, or the apex itself. */
  nameservers: string[];
  hostmaster: string;
  /** This host's public addresses: the apex's A/AAAA, and instances reached via a wildcard port forward. */
  hostAddresses: DnsAddresses;
  rfc2136: { server: { host: string; port: number }; zone: string; keyName: string; secret: Buffer } | null;
}

const NAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

const dnsName: Value<string> = z
  .string()
  .transform(canonicalName)
  .pipe(z.string().regex(NAME, { error: "not a DNS name" }));

/** The CVM_DNS_* settings; the zone (the base domain) gives two of the defaults. */
export function dnsSettings(zone: string) {
  return {
    provider: setting("CVM_DNS_PROVIDER", oneOf(["embedded", "rfc2136"]), "embedded"),
    listen: optional("CVM_DNS_LISTEN", hostPort("127.0.0.1:5353")),
    ttlSeconds: setting("CVM_DNS_TTL", integer(1, 86400), "30"),
    negativeTtlSeconds: setting("CVM_DNS_NEGATIVE_TTL", integer(0, 86400), "30"),
    nameservers: setting("CVM_DNS_NAMESERVERS", commaList(dnsName), zone),
    hostmaster: setting("CVM_DNS_HOSTMASTER", dnsName, `hostmaster.${zone}`),
    hostAddresses: optional("CVM_DNS_HOST_ADDRESSES", z.string()),
    updateServer: optional("CVM_DNS_UPDATE_SERVER", hostPort("192.0.2.53:53")),
    updateZone: setting("CVM_DNS_UPDATE_ZONE", dnsName, zone),
    tsigKeyName: optional("CVM_DNS_TSIG_KEY_NAME", dnsName),
    tsigSecret: optional("CVM_DNS_TSIG_SECRET", z.string(), { secret: true }),
    tsigSecretFile: optional("CVM_DNS_TSIG_SECRET_FILE", z.string()),
  };
}

/**
 * Reads the CVM_DNS_* settings through `get` (the configuration's lookup: environment over the
 * config file, empty = unset). Throws a ConfigError naming the variable.
 */
export function parseDnsConfig(get: Lookup, baseDomain: string): DnsConfig {
  const zone = canonicalName(baseDomain);
  const s = readSettings(dnsSettings(zone), get);
  for (const ns of s.nameservers) {
    if (ns !== zone && ns.endsWith("." + zone)) throw new ConfigError("CVM_DNS_NAMESERVERS", `CVM_DNS_NAMESERVERS=${ns}: a nameserver inside ${zone} must be ${zone} itself (names below it belong to tenants)`);
  }
  // Unset, it is the address the server listens on when that is a specific one (127.0.0.1 in development).
  const fallback = s.listen && isIP(s.listen.host) && !["0.0.0.0", "::"].includes(s.listen.host) ? s.listen.host : "";
  let hostAddresses: DnsAddresses;
  try {
    hostAddresses = normalizeAddresses(splitAddresses((s.hostAddresses ?? fallback).split(",").filter((x) => x.trim())));
  } catch (err) {
    throw new ConfigError("CVM_DNS_HOST_ADDRESSES", `CVM_DNS_HOST_ADDRESSES: ${(err as Error).message}`);
  }
  const cfg: DnsConfig = {
    listen: s.listen,
    provider: s.provider,
    ttlSeconds: s.ttlSeconds,
    negativeTtlSeconds: s.negativeTtlSeconds,
    nameservers: s.nameservers,
    hostmaster: s.hostmaster,
    hostAddresses,
    rfc2136: null,
  };
  if (cfg.listen && s.nameservers.includes(zone) && !hostAddresses.a?.length && !hostAddresses.aaaa?.length) {
    throw new ConfigError("CVM_DNS_HOST_ADDRESSES", `CVM_DNS_HOST_ADDRESSES: required when ${zone} is its own nameserver (the apex needs an address for the glue)`);
  }
  if (s.provider === "rfc2136") {
    if (!s.updateServer) throw new ConfigError("CVM_DNS_UPDATE_SERVER", "CVM_DNS_UPDATE_SERVER: required with CVM_DNS_PROVIDER=rfc2136 (host:port of the primary)");
    if (!s.tsigKeyName) throw new ConfigError("CVM_DNS_TSIG_KEY_NAME", "CVM_DNS_TSIG_KEY_NAME: required with CVM_DNS_PROVIDER=rfc2136");
    cfg.rfc2136 = { server: s.updateServer, zone: s.updateZone, keyName: s.tsigKeyName, secret: tsigSecret(s.tsigSecret, s.tsigSecretFile) };
    if (zone !== s.updateZone && !zone.endsWith("." + s.updateZone)) {
      throw new ConfigError("CVM_DNS_UPDATE_ZONE", `CVM_DNS_UPDATE_ZONE=${s.updateZone}: instance names under ${zone} are not inside it`);
    }
  }
  return Object.freeze(cfg);
}

/** Base64, from CVM_DNS_TSIG_SECRET or (better: kept out of the environment) CVM_DNS_TSIG_SECRET_FILE. */
function tsigSecret(inline: string | null, file: string | null): Buffer {
  let text = inline;
  const source = file ? "CVM_DNS_TSIG_SECRET_FILE" : "CVM_DNS_TSIG_SECRET";
  if (file) {
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      throw new ConfigError(source, `CVM_DNS_TSIG_SECRET_FILE=${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  if (!text) throw new ConfigError(source, "CVM_DNS_TSIG_SECRET or CVM_DNS_TSIG_SECRET_FILE: required with CVM_DNS_PROVIDER=rfc2136");
  const b64 = text.trim();
  // The value is never echoed: it is the key.
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || b64.length % 4 !== 0) throw new ConfigError(source, `${source}: not base64`);
  const secret = Buffer.from(b64, "base64");
  if (secret.length < 16) throw new ConfigError(source, `${source}: the key is shorter than 16 bytes`);
  return secret;
}

import { readFileSync } from "node:fs";
import { isIP } from "node:net";
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

function listen(v: string, name: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:]+\]|[^:]+):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new Error(`${name}=${v}: expected host:port, e.g. 127.0.0.1:5353`);
  return { host: m[1]!.replace(/^\[|\]$/g, ""), port };
}

function int(v: string | undefined, dflt: number, name: string, min: number, max: number): number {
  if (v === undefined) return dflt;
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new Error(`${name}=${v}: expected an integer between ${min} and ${max}`);
  return Number(v);
}

function dnsName(v: string, name: string): string {
  const n = canonicalName(v);
  if (!NAME.test(n)) throw new Error(`${name}=${v}: not a DNS name`);
  return n;
}

/**
 * Reads the CVM_DNS_* settings through `get` (the same lookup config.ts uses: environment over
 * the config file, empty = unset). Throws an Error naming the variable; the caller wraps it.
 */
export function parseDnsConfig(get: (name: string) => string | undefined, baseDomain: string): DnsConfig {
  const zone = canonicalName(baseDomain);
  const provider = get("CVM_DNS_PROVIDER") ?? "embedded";
  if (provider !== "embedded" && provider !== "rfc2136") throw new Error(`CVM_DNS_PROVIDER=${provider}: expected embedded or rfc2136`);

  const nameservers = (get("CVM_DNS_NAMESERVERS") ?? zone).split(",").map((s) => s.trim()).filter(Boolean).map((s) => dnsName(s, "CVM_DNS_NAMESERVERS"));
  for (const ns of nameservers) {
    if (ns !== zone && ns.endsWith("." + zone)) throw new Error(`CVM_DNS_NAMESERVERS=${ns}: a nameserver inside ${zone} must be ${zone} itself (names below it belong to tenants)`);
  }
  const dnsListen = get("CVM_DNS_LISTEN") ? listen(get("CVM_DNS_LISTEN")!, "CVM_DNS_LISTEN") : null;
  // Unset, it is the address the server listens on when that is a specific one (127.0.0.1 in development).
  const fallback = dnsListen && isIP(dnsListen.host) && !["0.0.0.0", "::"].includes(dnsListen.host) ? dnsListen.host : "";
  let hostAddresses: DnsAddresses;
  try {
    hostAddresses = normalizeAddresses(splitAddresses((get("CVM_DNS_HOST_ADDRESSES") ?? fallback).split(",").filter((s) => s.trim())));
  } catch (err) {
    throw new Error(`CVM_DNS_HOST_ADDRESSES: ${(err as Error).message}`);
  }
  const cfg: DnsConfig = {
    listen: dnsListen,
    provider,
    ttlSeconds: int(get("CVM_DNS_TTL"), 30, "CVM_DNS_TTL", 1, 86400),
    negativeTtlSeconds: int(get("CVM_DNS_NEGATIVE_TTL"), 30, "CVM_DNS_NEGATIVE_TTL", 0, 86400),
    nameservers,
    hostmaster: dnsName(get("CVM_DNS_HOSTMASTER") ?? `hostmaster.${zone}`, "CVM_DNS_HOSTMASTER"),
    hostAddresses,
    rfc2136: null,
  };
  if (cfg.listen && nameservers.includes(zone) && !hostAddresses.a?.length && !hostAddresses.aaaa?.length) {
    throw new Error(`CVM_DNS_HOST_ADDRESSES: required when ${zone} is its own nameserver (the apex needs an address for the glue)`);
  }
  if (provider === "rfc2136") {
    const server = get("CVM_DNS_UPDATE_SERVER");
    const keyName = get("CVM_DNS_TSIG_KEY_NAME");
    if (!server) throw new Error("CVM_DNS_UPDATE_SERVER: required with CVM_DNS_PROVIDER=rfc2136 (host:port of the primary)");
    if (!keyName) throw new Error("CVM_DNS_TSIG_KEY_NAME: required with CVM_DNS_PROVIDER=rfc2136");
    cfg.rfc2136 = {
      server: listen(server, "CVM_DNS_UPDATE_SERVER"),
      zone: dnsName(get("CVM_DNS_UPDATE_ZONE") ?? zone, "CVM_DNS_UPDATE_ZONE"),
      keyName: dnsName(keyName, "CVM_DNS_TSIG_KEY_NAME"),
      secret: tsigSecret(get),
    };
    if (zone !== cfg.rfc2136.zone && !zone.endsWith("." + cfg.rfc2136.zone)) {
      throw new Error(`CVM_DNS_UPDATE_ZONE=${cfg.rfc2136.zone}: instance names under ${zone} are not inside it`);
    }
  }
  return Object.freeze(cfg);
}

/** Base64, from CVM_DNS_TSIG_SECRET or (better: kept out of the environment) CVM_DNS_TSIG_SECRET_FILE. */
function tsigSecret(get: (name: string) => string | undefined): Buffer {
  const file = get("CVM_DNS_TSIG_SECRET_FILE");
  let text = get("CVM_DNS_TSIG_SECRET");
  const source = file ? "CVM_DNS_TSIG_SECRET_FILE" : "CVM_DNS_TSIG_SECRET";
  if (file) {
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      throw new Error(`CVM_DNS_TSIG_SECRET_FILE=${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  if (!text) throw new Error("CVM_DNS_TSIG_SECRET or CVM_DNS_TSIG_SECRET_FILE: required with CVM_DNS_PROVIDER=rfc2136");
  const b64 = text.trim();
  // The value is never echoed: it is the key.
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || b64.length % 4 !== 0) throw new Error(`${source}: not base64`);
  const secret = Buffer.from(b64, "base64");
  if (secret.length < 16) throw new Error(`${source}: the key is shorter than 16 bytes`);
  return secret;
}

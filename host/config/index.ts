import { resolve } from "node:path";
import { parseAcceptedTcbStatuses, TcbPolicyError } from "../../shared/tdx/tcb-policy.js";
import type { TcbStatus } from "../../shared/tdx/tcb.js";
import { ConfigError, readSettings, settingNames, type Lookup } from "../../shared/config/settings.js";
import { dnsSettings, parseDnsConfig, type DnsConfig } from "../dns/dns-config.js";
import { loadCatalogue, type ModelCatalogue } from "../gateway/catalogue.js";
import { GATEWAY_SETTINGS, gatewayLimitsFromEnv, type GatewayLimits } from "../gateway/limits.js";
import { ATTESTATION_SETTINGS, DAEMON_SETTINGS, OPS_SETTINGS, POOL_SETTINGS } from "./daemon.js";
import { configSource } from "./source.js";
import { NETWORK_SETTINGS, VM_SETTINGS, vmConfigFrom, type VmConfig } from "./vm.js";

export { ConfigError } from "../../shared/config/settings.js";
export type { VmConfig } from "./vm.js";

/**
 * cvmd's configuration, compiled in stages: raw (environment over CVM_CONFIG_FILE) → defaults →
 * validated and frozen. Anything wrong stops start-up with one line naming the variable (exit 78).
 * cvmctl loads the same, so both see one host.
 */
export interface Config {
  dataDir: string;
  /** PostgreSQL instead of the data dir's SQLite file, when set (CVM_DATABASE_URL; may hold a password). */
  databaseUrl: string | null;
  listen: { host: string; port: number };
  baseDomain: string;
  pricing: { subscriptionCostUsd: string; instanceHoursIncluded: number; overagePerHourUsd: string };
  egressLimitBytes: number;
  /** Inference gateway limits (CVM_GATEWAY_*). */
  gatewayLimits: GatewayLimits;
  /** Per-instance DNS records: embedded server (CVM_DNS_LISTEN) or RFC 2136 updates. */
  dns: DnsConfig;
  /** How often the host's egress counters are sampled; must divide 60. */
  egressPollSeconds: number;
  catalogue: ModelCatalogue;
  driver: "qemu" | "none";
  logLevel: string;
  shutdownGraceMs: number;
  /** Operator listener for /metrics; null keeps it off. Never the tenant listener. */
  metricsListen: { host: string; port: number } | null;
  /** Requests per minute; 0 turns that limit off. */
  rateLimit: { perKeyPerMinute: number; perAddressPerMinute: number; authFailuresPerMinute: number };
  /** Addresses or CIDRs whose X-Forwarded-For is believed. */
  trustedProxies: string[];
  /** Native HTTPS on the tenant listener when both are set (re-read on SIGHUP). */
  tls: { certFile: string; keyFile: string } | null;
  /** Where TDX collateral comes from: an offline bundle and/or a PCCS (neither: verdicts say so). */
  attestation: { collateralFile: string | null; pccsUrl: string | null; acceptTcbStatuses: TcbStatus[] };
  /** Warm pool: the default size per image (CVM_WARM_POOL_SIZE) and how often it is refilled. */
  warmPool: { defaultSize: number; refillSeconds: number };
  /** What guests (instances and pool guests together) may use on this host. */
  capacity: { memoryMiB: number; vcpus: number };
  /** Cold boots (instances and pool guests) that run at once; the rest wait in a queue. */
  maxConcurrentBoots: number;
  /** The QEMU driver's settings; validated whatever CVM_DRIVER says, so a typo never waits for the switch. */
  vm: VmConfig;
}

/** Every setting cvmd and cvmctl read, in schema order: the README's table lists exactly these (the DNS names do not depend on the zone). */
export const SETTING_NAMES: readonly string[] = Object.freeze(
  [DAEMON_SETTINGS, OPS_SETTINGS, ATTESTATION_SETTINGS, POOL_SETTINGS, VM_SETTINGS, NETWORK_SETTINGS, dnsSettings("x"), GATEWAY_SETTINGS].flatMap(settingNames),
);

/** Frozen all the way down, so no component can change what another one was configured with. */
function deepFreeze<T>(v: T): T {
  // A Buffer (the TSIG secret) cannot be frozen; it is not shared with anything that writes.
  if (typeof v !== "object" || v === null || ArrayBuffer.isView(v)) return v;
  for (const child of Object.values(v)) deepFreeze(child);
  return Object.freeze(v);
}

function acceptedTcb(raw: string | null): TcbStatus[] {
  try {
    return parseAcceptedTcbStatuses(raw ?? undefined, "CVM_ACCEPT_TCB_STATUS");
  } catch (err) {
    if (err instanceof TcbPolicyError) throw new ConfigError("CVM_ACCEPT_TCB_STATUS", err.message);
    throw err;
  }
}

function compile(get: Lookup, cwd: string): Config {
  const d = readSettings(DAEMON_SETTINGS, get);
  const ops = readSettings(OPS_SETTINGS, get);
  const att = readSettings(ATTESTATION_SETTINGS, get);
  const pool = readSettings(POOL_SETTINGS, get);
  if ((ops.tlsCert === null) !== (ops.tlsKey === null)) {
    const missing = ops.tlsCert ? "CVM_TLS_KEY" : "CVM_TLS_CERT";
    throw new ConfigError(missing, `${missing}: CVM_TLS_CERT and CVM_TLS_KEY go together`);
  }
  let catalogue: ModelCatalogue;
  try {
    catalogue = loadCatalogue(d.modelsFile ?? undefined);
  } catch (err) {
    throw new ConfigError("CVM_MODELS_FILE", (err as Error).message);
  }
  return deepFreeze({
    dataDir: resolve(cwd, d.dataDir),
    databaseUrl: d.databaseUrl,
    listen: d.listen,
    baseDomain: d.baseDomain,
    pricing: { subscriptionCostUsd: d.subscriptionCostUsd, instanceHoursIncluded: d.instanceHoursIncluded, overagePerHourUsd: d.overagePerHourUsd },
    egressLimitBytes: d.egressLimitBytes,
    dns: parseDnsConfig(get, d.baseDomain),
    gatewayLimits: gatewayLimitsFromEnv(get),
    egressPollSeconds: d.egressPollSeconds,
    catalogue,
    driver: d.driver,
    logLevel: d.logLevel,
    shutdownGraceMs: d.shutdownGraceMs,
    metricsListen: ops.metricsListen,
    rateLimit: { perKeyPerMinute: ops.perKeyPerMinute, perAddressPerMinute: ops.perAddressPerMinute, authFailuresPerMinute: ops.authFailuresPerMinute },
    trustedProxies: ops.trustedProxies,
    tls: ops.tlsCert && ops.tlsKey ? { certFile: resolve(cwd, ops.tlsCert), keyFile: resolve(cwd, ops.tlsKey) } : null,
    attestation: { collateralFile: att.collateralFile ? resolve(cwd, att.collateralFile) : null, pccsUrl: att.pccsUrl, acceptTcbStatuses: acceptedTcb(att.acceptTcbStatus) },
    warmPool: { defaultSize: pool.defaultSize, refillSeconds: pool.refillSeconds },
    capacity: { memoryMiB: pool.capacityMemoryMiB, vcpus: pool.capacityVcpus },
    maxConcurrentBoots: pool.maxConcurrentBoots,
    vm: vmConfigFrom(get, cwd),
  });
}

/** The whole configuration from the environment and the file it names (CVM_CONFIG_FILE). */
export function loadConfig(env: Record<string, string | undefined>, cwd = process.cwd()): Config {
  const { get, fileKeys } = configSource(env);
  // A misspelt key in the file would otherwise fall back to its default without a word, e.g. a
  // host meant for `tdx` guests serving `plain` ones.
  const unknown = fileKeys.find((k) => !SETTING_NAMES.includes(k));
  if (unknown) throw new ConfigError(unknown, `${unknown} in CVM_CONFIG_FILE=${env.CVM_CONFIG_FILE}: not a setting of cvmd (see the README's configuration table)`);
  return compile(get, cwd);
}

/** The QEMU driver's part, from the same sources as loadConfig. */
export function loadVmConfig(env: Record<string, string | undefined>, cwd = process.cwd()): VmConfig {
  return loadConfig(env, cwd).vm;
}

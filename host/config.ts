import { readFileSync } from "node:fs";
import { availableParallelism, totalmem } from "node:os";
import { isIP } from "node:net";
import { resolve } from "node:path";
import { loadCatalogue, type ModelCatalogue } from "./gateway/catalogue.js";
import { parseDnsConfig, type DnsConfig } from "./dns/dns-config.js";
import { gatewayLimitsFromEnv, type GatewayLimits } from "./gateway/limits.js";
import { parseAcceptedTcbStatuses, TcbPolicyError } from "../shared/tdx/tcb-policy.js";
import type { TcbStatus } from "../shared/tdx/tcb.js";

/**
 * cvmd's configuration, compiled in stages: raw (env, optionally over a JSON file) → defaults →
 * validated and frozen. Anything wrong stops start-up with one line naming the variable.
 */
export interface Config {
  dataDir: string;
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
  /**
   * Where TDX collateral comes from: an offline bundle and/or a PCCS (neither: verdicts say so); which
   * TCB statuses pass (CVM_ACCEPT_TCB_STATUS, default UpToDate, the same rule as cvm-verify).
   */
  attestation: { collateralFile: string | null; pccsUrl: string | null; acceptTcbStatuses: TcbStatus[] };
  /** Warm pool: the default size per image (CVM_WARM_POOL_SIZE) and how often it is refilled. */
  warmPool: { defaultSize: number; refillSeconds: number };
  /** What guests (instances and pool guests together) may use on this host. */
  capacity: { memoryMiB: number; vcpus: number };
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

const USD = /^\d{1,9}\.\d{2}$/;
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

function parseListen(v: string, name: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:]+\]|[^:]+):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new ConfigError(`${name}=${v}: expected host:port, e.g. 127.0.0.1:8080`);
  return { host: m[1]!.replace(/^\[|\]$/g, ""), port };
}

function parseIntStrict(v: string, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new ConfigError(`${name}=${v}: expected an integer between ${min} and ${max}`);
  return Number(v);
}

/** The operator-facing settings of issue 10 (metrics, rate limits, proxies, TLS). */
function opsConfig(get: (name: string) => string | undefined, cwd: string): Pick<Config, "metricsListen" | "rateLimit" | "trustedProxies" | "tls"> {
  const metrics = get("CVM_METRICS_LISTEN");
  const MAX_PER_MINUTE = 10_000_000;
  const perKeyPerMinute = parseIntStrict(get("CVM_RATE_LIMIT") ?? "600", "CVM_RATE_LIMIT", 0, MAX_PER_MINUTE);
  const trustedProxies = (get("CVM_TRUSTED_PROXIES") ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  for (const p of trustedProxies) {
    if (!isAddressOrCidr(p)) throw new ConfigError(`CVM_TRUSTED_PROXIES=${p}: expected comma-separated IP addresses or CIDRs, e.g. 127.0.0.1,10.0.0.0/8`);
  }
  const cert = get("CVM_TLS_CERT");
  const key = get("CVM_TLS_KEY");
  if ((cert === undefined) !== (key === undefined)) throw new ConfigError(`${cert ? "CVM_TLS_KEY" : "CVM_TLS_CERT"}: CVM_TLS_CERT and CVM_TLS_KEY go together`);
  return {
    metricsListen: metrics ? parseListen(metrics, "CVM_METRICS_LISTEN") : null,
    rateLimit: {
      perKeyPerMinute,
      perAddressPerMinute: parseIntStrict(
        get("CVM_RATE_LIMIT_PER_ADDRESS") ?? String(Math.min(perKeyPerMinute * 2, MAX_PER_MINUTE)),
        "CVM_RATE_LIMIT_PER_ADDRESS",
        0,
        MAX_PER_MINUTE,
      ),
      authFailuresPerMinute: parseIntStrict(get("CVM_AUTH_FAILURE_LIMIT") ?? "10", "CVM_AUTH_FAILURE_LIMIT", 0, MAX_PER_MINUTE),
    },
    trustedProxies,
    tls: cert && key ? { certFile: resolve(cwd, cert), keyFile: resolve(cwd, key) } : null,
  };
}

function attestationConfig(get: (name: string) => string | undefined, cwd: string): Config["attestation"] {
  const file = get("CVM_COLLATERAL_FILE");
  const pccs = get("CVM_PCCS_URL");
  if (pccs) {
    let u: URL | undefined;
    try {
      u = new URL(pccs);
    } catch {
      u = undefined;
    }
    if (!u || (u.protocol !== "https:" && u.protocol !== "http:")) {
      throw new ConfigError(`CVM_PCCS_URL=${pccs}: expected an http(s) URL of a PCCS or Intel PCS, e.g. https://pccs.example:8081`);
    }
  }
  let acceptTcbStatuses: TcbStatus[];
  try {
    acceptTcbStatuses = parseAcceptedTcbStatuses(get("CVM_ACCEPT_TCB_STATUS"), "CVM_ACCEPT_TCB_STATUS");
  } catch (err) {
    if (err instanceof TcbPolicyError) throw new ConfigError(err.message);
    throw err;
  }
  return { collateralFile: file ? resolve(cwd, file) : null, pccsUrl: pccs ?? null, acceptTcbStatuses };
}

function isAddressOrCidr(v: string): boolean {
  const [addr, bits, extra] = v.split("/");
  const family = isIP(addr ?? "");
  if (!family || extra !== undefined) return false;
  if (bits === undefined) return true;
  return /^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128);
}

function parseDivisorOf60(v: string, name: string): number {
  const n = parseIntStrict(v, name, 1, 30);
  if (60 % n !== 0) throw new ConfigError(`${name}=${v}: must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30)`);
  return n;
}

export function loadConfig(env: NodeJS.ProcessEnv, cwd = process.cwd()): Config {
  let file: Record<string, string> = {};
  if (env.CVM_CONFIG_FILE) {
    try {
      const parsed = JSON.parse(readFileSync(env.CVM_CONFIG_FILE, "utf8")) as unknown;
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not a JSON object");
      file = Object.fromEntries(Object.entries(parsed).map(([k, v]) => [k, String(v)]));
    } catch (err) {
      throw new ConfigError(`CVM_CONFIG_FILE=${env.CVM_CONFIG_FILE}: ${(err as Error).message}`);
    }
  }
  // Environment wins over the file; the file uses the same variable names.
  const get = (name: string): string | undefined => {
    const v = env[name] ?? file[name];
    return v === undefined || v === "" ? undefined : v;
  };

  const baseDomain = (get("CVM_BASE_DOMAIN") ?? "cvm.localhost").toLowerCase().replace(/\.$/, "");
  if (!baseDomain.split(".").every((l) => DNS_LABEL.test(l))) throw new ConfigError(`CVM_BASE_DOMAIN=${baseDomain}: not a DNS name`);

  let dns: DnsConfig;
  try {
    dns = parseDnsConfig(get, baseDomain);
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }

  let gatewayLimits: GatewayLimits;
  try {
    gatewayLimits = gatewayLimitsFromEnv(get);
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }

  const subscriptionCostUsd = get("CVM_PRICE_SUBSCRIPTION_USD") ?? "200.00";
  if (!USD.test(subscriptionCostUsd)) throw new ConfigError(`CVM_PRICE_SUBSCRIPTION_USD=${subscriptionCostUsd}: expected dollars with cents, e.g. 200.00`);
  const overagePerHourUsd = get("CVM_PRICE_OVERAGE_PER_HOUR_USD") ?? "0.45";
  if (!USD.test(overagePerHourUsd)) throw new ConfigError(`CVM_PRICE_OVERAGE_PER_HOUR_USD=${overagePerHourUsd}: expected dollars with cents, e.g. 0.45`);

  const driver = get("CVM_DRIVER") ?? "qemu";
  if (driver !== "qemu" && driver !== "none") throw new ConfigError(`CVM_DRIVER=${driver}: expected qemu or none`);

  let catalogue: ModelCatalogue;
  try {
    catalogue = loadCatalogue(get("CVM_MODELS_FILE"));
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }

  const cfg: Config = {
    dataDir: resolve(cwd, get("CVM_DATA_DIR") ?? "./var"),
    listen: parseListen(get("CVM_LISTEN") ?? "127.0.0.1:8080", "CVM_LISTEN"),
    baseDomain,
    pricing: {
      subscriptionCostUsd,
      instanceHoursIncluded: parseIntStrict(get("CVM_PRICE_INCLUDED_HOURS") ?? "200", "CVM_PRICE_INCLUDED_HOURS", 0, 1_000_000),
      overagePerHourUsd,
    },
    egressLimitBytes: parseIntStrict(get("CVM_EGRESS_LIMIT_BYTES") ?? "5368709120", "CVM_EGRESS_LIMIT_BYTES", 1),
    dns,
    gatewayLimits,
    egressPollSeconds: parseDivisorOf60(get("CVM_EGRESS_POLL_SECONDS") ?? "10", "CVM_EGRESS_POLL_SECONDS"),
    catalogue,
    driver,
    logLevel: get("CVM_LOG_LEVEL") ?? "info",
    shutdownGraceMs: parseIntStrict(get("CVM_SHUTDOWN_GRACE_MS") ?? "10000", "CVM_SHUTDOWN_GRACE_MS", 0),
    ...opsConfig(get, cwd),
    attestation: attestationConfig(get, cwd),
    warmPool: {
      defaultSize: parseIntStrict(get("CVM_WARM_POOL_SIZE") ?? "0", "CVM_WARM_POOL_SIZE", 0, 64),
      refillSeconds: parseDivisorOf60(get("CVM_WARM_POOL_REFILL_SECONDS") ?? "15", "CVM_WARM_POOL_REFILL_SECONDS"),
    },
    // Defaults leave a fifth of the host's memory to the host, and allow 4 vCPUs per host CPU.
    capacity: {
      memoryMiB: parseIntStrict(get("CVM_CAPACITY_MEMORY_MIB") ?? String(Math.floor((totalmem() / 1048576) * 0.8)), "CVM_CAPACITY_MEMORY_MIB", 0),
      vcpus: parseIntStrict(get("CVM_CAPACITY_VCPUS") ?? String(availableParallelism() * 4), "CVM_CAPACITY_VCPUS", 0),
    },
  };
  if (!["fatal", "error", "warn", "info", "debug", "trace", "silent"].includes(cfg.logLevel)) {
    throw new ConfigError(`CVM_LOG_LEVEL=${cfg.logLevel}: expected one of fatal, error, warn, info, debug, trace, silent`);
  }
  return Object.freeze(cfg);
}

import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { loadCatalogue, type ModelCatalogue } from "./gateway/catalogue.js";

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
  catalogue: ModelCatalogue;
  driver: "qemu" | "none";
  logLevel: string;
  shutdownGraceMs: number;
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
    catalogue,
    driver,
    logLevel: get("CVM_LOG_LEVEL") ?? "info",
    shutdownGraceMs: parseIntStrict(get("CVM_SHUTDOWN_GRACE_MS") ?? "10000", "CVM_SHUTDOWN_GRACE_MS", 0),
  };
  if (!["fatal", "error", "warn", "info", "debug", "trace", "silent"].includes(cfg.logLevel)) {
    throw new ConfigError(`CVM_LOG_LEVEL=${cfg.logLevel}: expected one of fatal, error, warn, info, debug, trace, silent`);
  }
  return Object.freeze(cfg);
}

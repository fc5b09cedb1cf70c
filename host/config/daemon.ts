import { availableParallelism, totalmem } from "node:os";
import { commaList, divisorOf60, hostPort, integer, oneOf, optional, setting, text } from "../../shared/config/settings.js";
import { addressOrCidr, domainName, httpUrl, postgresUrl, usdCents } from "./values.js";

/** Rate limits above this are a typo, not a policy. */
const MAX_PER_MINUTE = 10_000_000;

/** The API daemon's own settings: listeners, data, prices, logs, shutdown. One line per setting. */
export const DAEMON_SETTINGS = {
  dataDir: setting("CVM_DATA_DIR", text, "./var"),
  // Secret: the URL may carry the database password, so a bad value is not echoed.
  databaseUrl: optional("CVM_DATABASE_URL", postgresUrl, { secret: true }),
  listen: setting("CVM_LISTEN", hostPort("127.0.0.1:8080"), "127.0.0.1:8080"),
  baseDomain: setting("CVM_BASE_DOMAIN", domainName, "cvm.localhost"),
  subscriptionCostUsd: setting("CVM_PRICE_SUBSCRIPTION_USD", usdCents, "200.00"),
  instanceHoursIncluded: setting("CVM_PRICE_INCLUDED_HOURS", integer(0, 1_000_000), "200"),
  overagePerHourUsd: setting("CVM_PRICE_OVERAGE_PER_HOUR_USD", usdCents, "0.45"),
  egressLimitBytes: setting("CVM_EGRESS_LIMIT_BYTES", integer(1), "5368709120"),
  egressPollSeconds: setting("CVM_EGRESS_POLL_SECONDS", divisorOf60, "10"),
  modelsFile: optional("CVM_MODELS_FILE", text),
  driver: setting("CVM_DRIVER", oneOf(["qemu", "none"]), "qemu"),
  logLevel: setting("CVM_LOG_LEVEL", oneOf(["fatal", "error", "warn", "info", "debug", "trace", "silent"]), "info"),
  shutdownGraceMs: setting("CVM_SHUTDOWN_GRACE_MS", integer(0), "10000"),
};

/** The operator-facing settings of issue 10: metrics, rate limits, proxies, TLS. */
export const OPS_SETTINGS = {
  metricsListen: optional("CVM_METRICS_LISTEN", hostPort("127.0.0.1:9464")),
  perKeyPerMinute: setting("CVM_RATE_LIMIT", integer(0, MAX_PER_MINUTE), "600"),
  perAddressPerMinute: setting("CVM_RATE_LIMIT_PER_ADDRESS", integer(0, MAX_PER_MINUTE), (get) => {
    const perKey = get("CVM_RATE_LIMIT") || "600";
    return String(Math.min(Number(perKey) * 2, MAX_PER_MINUTE));
  }),
  authFailuresPerMinute: setting("CVM_AUTH_FAILURE_LIMIT", integer(0, MAX_PER_MINUTE), "10"),
  trustedProxies: setting("CVM_TRUSTED_PROXIES", commaList(addressOrCidr), ""),
  tlsCert: optional("CVM_TLS_CERT", text),
  tlsKey: optional("CVM_TLS_KEY", text),
};

export const ATTESTATION_SETTINGS = {
  collateralFile: optional("CVM_COLLATERAL_FILE", text),
  pccsUrl: optional("CVM_PCCS_URL", httpUrl("https://pccs.example:8081")),
  /** Parsed by the TCB policy itself (shared with cvm-verify), so both sides accept the same names. */
  acceptTcbStatus: optional("CVM_ACCEPT_TCB_STATUS", text),
};

/** Warm pool and the guests' capacity budget. */
export const POOL_SETTINGS = {
  defaultSize: setting("CVM_WARM_POOL_SIZE", integer(0, 64), "0"),
  refillSeconds: setting("CVM_WARM_POOL_REFILL_SECONDS", divisorOf60, "15"),
  // Defaults leave a fifth of the host's memory to the host, and allow 4 vCPUs per host CPU.
  capacityMemoryMiB: setting("CVM_CAPACITY_MEMORY_MIB", integer(0), () => String(Math.floor((totalmem() / 1048576) * 0.8))),
  capacityVcpus: setting("CVM_CAPACITY_VCPUS", integer(0), () => String(availableParallelism() * 4)),
  // A cold boot keeps about two host CPUs busy until its agent is up; more at once only slows them all.
  maxConcurrentBoots: setting("CVM_MAX_CONCURRENT_BOOTS", integer(1, 1024), () => String(Math.max(1, Math.floor(availableParallelism() / 2)))),
};

#!/usr/bin/env node
import { ConfigError, loadConfig } from "./config.js";
import { packageVersion, startDaemon } from "./daemon.js";
import type { Driver } from "./drivers/driver.js";
import { UnavailableDriver } from "./drivers/unavailable-driver.js";
import { buildQemuDriver, type BuiltDriver } from "./drivers/qemu/build-driver.js";
import { createLogger } from "./logger.js";
import { installLastResortHandlers } from "./ops/last-resort.js";
import { Metrics } from "./ops/metrics.js";

/** cvmd's composition root: the only place that reads the environment and installs signal handlers. */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`cvmd: configuration error: ${err.message}\n`);
      process.exit(78);
    }
    throw err;
  }
  const logger = createLogger(config.logLevel, "cvmd");
  installLastResortHandlers(logger);
  const securityLog = logger.child({ stream: "security" });

  let built: BuiltDriver;
  let guestSize: { memoryMiB: number; vcpus: number } | undefined;
  try {
    const vm = config.driver === "none" ? null : config.vm;
    guestSize = vm ? { memoryMiB: vm.memoryMiB, vcpus: vm.vcpus } : undefined;
    const upstreams = config.catalogue.models.map((m) => m.upstream.base_url);
    built = vm ? await buildQemuDriver(vm, config.dataDir, logger, upstreams) : { driver: new UnavailableDriver("CVM_DRIVER=none") };
  } catch (err) {
    process.stderr.write(`cvmd: ${err instanceof ConfigError ? "configuration error: " : ""}${(err as Error).message}\n`);
    process.exit(78);
  }
  const driver: Driver = built.driver;

  // Handlers go in before start-up so a signal that arrives while we start is still a clean stop.
  // One registry for the process: components built here (driver, warm pool, attestation) report into it too.
  const metrics = new Metrics({ processMetrics: config.metricsListen !== null, version: packageVersion() });
  const daemon = startDaemon(config, { driver, logger, securityLog, metrics, egressFirewall: built.firewall, guestSize });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down");
    daemon
      .then((d) => d.close())
      .then(
        () => process.exit(0),
        (err) => {
          logger.error({ err }, "shutdown failed");
          process.exit(1);
        },
      );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  // SIGHUP re-reads the TLS certificate and key (renewals); nothing else is reloaded.
  process.on("SIGHUP", () => {
    daemon
      .then((d) => d.reloadTls())
      .then(
        () => logger.info({ cert: config.tls?.certFile ?? null }, "tls reloaded"),
        (err: Error) => logger.error({ err: err.message }, "tls reload failed; the previous certificate stays in use"),
      );
  });
  await daemon;
}

main().catch((err) => {
  process.stderr.write(`cvmd: ${err instanceof Error ? err.message : String(err)}\n`);
  // 78 (EX_CONFIG) for what only the operator can mend, which the unit does not restart on.
  process.exit(err instanceof ConfigError ? 78 : ((err as { exitCode?: number }).exitCode ?? 1));
});

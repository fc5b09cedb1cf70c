#!/usr/bin/env node
import { ConfigError, loadConfig } from "./config.js";
import { startDaemon } from "./daemon.js";
import type { Driver } from "./instances/driver.js";
import { UnavailableDriver } from "./instances/unavailable-driver.js";
import { createLogger } from "./logger.js";

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
  const securityLog = logger.child({ stream: "security" });

  let driver: Driver;
  if (config.driver === "none") driver = new UnavailableDriver("CVM_DRIVER=none");
  else driver = new UnavailableDriver("the QEMU driver is not available in this build");

  // Handlers go in before start-up so a signal that arrives while we start is still a clean stop.
  const daemon = startDaemon(config, { driver, logger, securityLog });
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
  await daemon;
}

main().catch((err) => {
  process.stderr.write(`cvmd: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});

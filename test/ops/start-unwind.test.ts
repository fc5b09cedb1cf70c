import { existsSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ConfigError } from "../../host/config.js";
import { controlSocketPath } from "../../host/ops/control-socket.js";
import { LOCK_FILE, lockHolder } from "../../host/ops/daemon-lock.js";
import { run } from "../../shared/util/run.js";
import { FakeDriver } from "../support/fake-driver.js";
import { startTestDaemon, tempDir, type TestDaemon } from "../support/daemon.js";
import { sshKeyPair } from "../support/ssh-keys.js";

/*
 * cvmd's start is two stages: checks without side effects (TLS pair, collateral), then resources
 * on one stack that a failure unwinds. The guests are the FakeDriver TEST DOUBLE's, the rest real
 * (SQLite file, data dir lock, DNS, control socket, listeners).
 */

const ED = sshKeyPair("ed25519").public;

/** A FakeDriver that counts what start-up does to guests, and its own close(). */
function countingDriver() {
  const driver = new FakeDriver();
  const calls = { adopt: 0, poolAdopt: 0, poolBoot: 0, close: 0 };
  const adopt = driver.adopt.bind(driver);
  driver.adopt = (spec, ctx) => (calls.adopt++, adopt(spec, ctx));
  const { adopt: poolAdopt, boot: poolBoot } = driver.warm;
  driver.warm.adopt = (g, ctx) => (calls.poolAdopt++, poolAdopt(g, ctx));
  driver.warm.boot = (g, ctx) => (calls.poolBoot++, poolBoot(g, ctx));
  const reset = () => Object.assign(calls, { adopt: 0, poolAdopt: 0, poolBoot: 0, close: 0 });
  return { driver: Object.assign(driver, { close: async () => void calls.close++ }), calls, reset };
}

function listenTcp(port = 0): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(port, "127.0.0.1", () => resolve(s));
  });
}

async function freePort(): Promise<number> {
  const s = await listenTcp();
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function until(ok: () => boolean, ms = 5000): Promise<void> {
  for (const end = Date.now() + ms; !ok(); ) {
    if (Date.now() > end) throw new Error(`condition not reached in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("cvmd's start: refusals before side effects, and a failed start releases what it started", () => {
  const cleanups: Array<() => unknown> = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });
  const dir = () => {
    const t = tempDir("cvm-unwind-");
    cleanups.push(() => t.remove());
    return t.path;
  };
  const started = async (d: Promise<TestDaemon>) => {
    const daemon = await d;
    cleanups.push(() => daemon.close());
    return daemon;
  };

  /** A data dir holding one ready instance and one warm pool guest, its cvmd stopped (the guests keep running). */
  async function usedDataDir(driver: FakeDriver): Promise<string> {
    const dataDir = dir();
    const d = await startTestDaemon({ dataDir, driver, env: { CVM_WARM_POOL_SIZE: "1" } });
    try {
      const { apiKey } = await d.tenant("acme");
      const r = await d.fetch("/v1/instances", { key: apiKey, method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ public_key: ED }) });
      expect(r.status).toBe(202);
      await until(() => driver.guests.size === 1 && [...driver.poolGuests.values()].some((g) => g.prepared));
    } finally {
      await d.close();
    }
    return dataDir;
  }

  // The tenant listener is the last step; the metrics listener comes after the engine, the pool,
  // the jobs and the control socket are up.
  it.each(["CVM_LISTEN", "CVM_METRICS_LISTEN"])("%s's port taken: every earlier resource is released, and the next start succeeds at once", async (taken) => {
    const { driver, calls, reset } = countingDriver();
    const dataDir = await usedDataDir(driver);
    reset();
    const blocker = await listenTcp();
    cleanups.push(() => new Promise((r) => blocker.close(r)));
    const blocked = `127.0.0.1:${(blocker.address() as { port: number }).port}`;
    const [dnsPort, metricsPort] = [await freePort(), await freePort()];
    const env = { CVM_WARM_POOL_SIZE: "2", CVM_WARM_POOL_REFILL_SECONDS: "1", CVM_DNS_LISTEN: `127.0.0.1:${dnsPort}`, CVM_METRICS_LISTEN: `127.0.0.1:${metricsPort}` };

    const err = await startTestDaemon({ dataDir, driver, env: { ...env, [taken]: blocked } }).then(
      (d) => (cleanups.push(() => d.close()), null),
      (e: NodeJS.ErrnoException) => e,
    );
    expect(err?.code).toBe("EADDRINUSE");
    // It got as far as the guests before failing.
    expect(calls.adopt).toBe(1);
    expect(calls.poolAdopt).toBe(1);

    expect(calls.close).toBe(1);
    expect(existsSync(join(dataDir, LOCK_FILE))).toBe(false);
    expect(lockHolder(dataDir)).toBeNull();
    expect(existsSync(controlSocketPath(dataDir))).toBe(false);
    // Released is not stopped: every guest is left for the next cvmd.
    expect(driver.destroyed).toEqual([]);
    expect(driver.destroyedPoolGuests).toEqual([]);
    // The refill job (every second) went with the failed start: no boot after it.
    const boots = calls.poolBoot;
    await new Promise((r) => setTimeout(r, 1500));
    expect(calls.poolBoot).toBe(boots);

    // Same database, same DNS and metrics ports: all free again, no wait for a lock.
    const t0 = Date.now();
    const d = await started(startTestDaemon({ dataDir, driver, env: { ...env, CVM_LISTEN: "127.0.0.1:0" } }));
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(d.dnsPort).toBe(dnsPort);
    expect(d.metricsUrl).toBe(`http://127.0.0.1:${metricsPort}`);
    expect((await d.fetch("/v1/openapi.json")).status).toBe(200);
    expect(existsSync(controlSocketPath(dataDir))).toBe(true);
    expect(driver.guests.size).toBe(1);
  });

  it("a bad TLS key is refused before the data dir is locked or any guest is adopted or booted", async () => {
    const { driver, calls, reset } = countingDriver();
    const dataDir = await usedDataDir(driver);
    reset();
    const files = dir();
    const cert = join(files, "tls.crt");
    const key = join(files, "tls.key");
    await run("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", key, "-out", cert], { timeoutMs: 30_000 });
    writeFileSync(key, "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n");
    const env = { CVM_WARM_POOL_SIZE: "2", CVM_TLS_CERT: cert, CVM_TLS_KEY: key };

    const err = await startTestDaemon({ dataDir, driver, env }).then(
      (d) => (cleanups.push(() => d.close()), null),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toMatch(/CVM_TLS_CERT\/CVM_TLS_KEY/);
    expect(calls).toEqual({ adopt: 0, poolAdopt: 0, poolBoot: 0, close: 0 });
    expect(existsSync(join(dataDir, LOCK_FILE))).toBe(false);
    // A data dir that does not exist yet is not even created.
    const fresh = join(files, "never-made");
    await expect(startTestDaemon({ dataDir: fresh, driver, env })).rejects.toBeInstanceOf(ConfigError);
    expect(existsSync(fresh)).toBe(false);
    expect(calls).toEqual({ adopt: 0, poolAdopt: 0, poolBoot: 0, close: 0 });

    // The same start with the pair mended does adopt them: the counts above would have seen it.
    await run("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", key, "-out", cert], { timeoutMs: 30_000 });
    const d = await started(startTestDaemon({ dataDir, driver, env }));
    expect(d.url).toMatch(/^https:/);
    expect(calls.adopt).toBe(1);
    expect(calls.poolAdopt).toBe(1);
  });
});

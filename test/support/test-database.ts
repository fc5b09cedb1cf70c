import { createHash } from "node:crypto";
import { resolve } from "node:path";
import pg from "pg";
import { inject } from "vitest";
import { loadConfig } from "../../host/config.js";
import { openDatabase } from "../../host/daemon.js";
import type { Database } from "../../host/store/db.js";

/**
 * The database the store and API suites run on: PostgreSQL in the vitest project "postgres" (which
 * sets CVM_TEST_DATABASE=postgres and starts the cluster), SQLite in the data dir otherwise. The
 * suites never choose: they get it through startTestDaemon, startCvmd, cvmctl and openTestDatabase.
 */
export const TEST_DATABASE: "sqlite" | "postgres" = process.env.CVM_TEST_DATABASE === "postgres" ? "postgres" : "sqlite";

const created = new Set<string>();

/**
 * The cluster's database for `dataDir`, created on first use: like the SQLite file in a data dir, a
 * daemon restarted on the same dir finds its rows, and a new dir starts empty.
 */
export async function postgresUrlFor(dataDir: string): Promise<string> {
  const socketDir = inject("postgresSocketDir");
  const name = `cvm_${createHash("sha256").update(resolve(dataDir)).digest("hex").slice(0, 24)}`;
  if (!created.has(name)) {
    const admin = new pg.Client({ host: socketDir, user: "postgres", database: "postgres" });
    await admin.connect();
    try {
      await admin.query(`CREATE DATABASE ${name}`);
    } catch (err) {
      if ((err as { code?: string }).code !== "42P04") throw err; // duplicate_database: an earlier process made it
    } finally {
      await admin.end();
    }
    created.add(name);
  }
  return `postgresql:///${name}?host=${socketDir}&user=postgres`;
}

/** What to add to a cvmd's or cvmctl's environment so that it uses the test database of its data dir. */
export async function testDatabaseEnv(env: Record<string, string | undefined>): Promise<Record<string, string>> {
  if (TEST_DATABASE !== "postgres" || env.CVM_DATABASE_URL || !env.CVM_DATA_DIR) return {};
  return { CVM_DATABASE_URL: await postgresUrlFor(env.CVM_DATA_DIR) };
}

/** The test database of `dataDir`, opened (not migrated) the way cvmd and cvmctl open theirs. */
export async function openTestDatabase(dataDir: string, opts: { busyTimeoutMs?: number } = {}): Promise<Database> {
  const env = { CVM_DATA_DIR: dataDir };
  return openDatabase(loadConfig({ ...env, ...(await testDatabaseEnv(env)) }), opts);
}

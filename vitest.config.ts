import { execFileSync } from "node:child_process";
import { defineConfig } from "vitest/config";
import { postgresBin } from "./test/support/postgres.js";
import { prerequisites } from "./test/support/prerequisites.js";

/**
 * The store and API suites, which run twice: on SQLite (project "sqlite", with everything else) and
 * on PostgreSQL (project "postgres"). They never name a database: the test support gives each data
 * dir its own (test/support/test-database.ts).
 */
const DATABASE_SUITES = ["host/store/**/*.test.ts", "test/api/**/*.test.ts", "test/pool/**/*.test.ts", "test/gateway/**/*.test.ts"];
/** Tests of PostgreSQL itself (its error codes, a URL that cannot work): only the postgres project runs them, so nothing is skipped. */
const POSTGRES_ONLY = "**/*.pg.test.ts";
const ALL_TESTS = ["{host,guest,shared,test,images}/**/*.test.ts"];
const EXCLUDE = ["node_modules/**", "dist/**", "var/**", "images/out/**", "images/cache/**"];

const initdb = postgresBin("initdb");
const pgCtl = postgresBin("pg_ctl");
const postgres =
  prerequisites("the store and API suites on PostgreSQL", {
    tools: [
      [initdb ?? "initdb", ["--version"]],
      [pgCtl ?? "pg_ctl", ["--version"]],
    ],
    other: process.getuid?.() === 0 && !userExists("postgres") ? "no postgres user to run the server as" : null,
  }) === null;

function userExists(name: string): boolean {
  try {
    execFileSync("id", ["-u", name], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

export default defineConfig({
  test: {
    exclude: EXCLUDE,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    // The hostile-guest harness collects garbage before it measures, so that a full GC of the test
    // process's own heap (vitest, tsx) is not charged to cvmd's event loop during an attack.
    poolOptions: { forks: { execArgv: ["--expose-gc"] } },
    // System tests share root-only resources (netns names, nft tables); keep files serial on 2 cores.
    fileParallelism: false,
    projects: [
      // Each project names its own include: under `extends: true` vitest concatenates arrays, so an
      // include on the root would add every test to the postgres project too.
      { extends: true, test: { name: "sqlite", include: ALL_TESTS, exclude: [...EXCLUDE, POSTGRES_ONLY] } },
      ...(postgres
        ? [
            {
              extends: true as const,
              test: { name: "postgres", include: DATABASE_SUITES, env: { CVM_TEST_DATABASE: "postgres" }, globalSetup: ["test/support/postgres-global-setup.ts"] },
            },
          ]
        : []),
    ],
  },
});

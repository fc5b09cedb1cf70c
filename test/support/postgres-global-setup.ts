import type { TestProject } from "vitest/node";
import { startPostgresCluster } from "./postgres.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** Socket directory of the run's PostgreSQL cluster (vitest project "postgres"). */
    postgresSocketDir: string;
  }
}

/** One throwaway PostgreSQL cluster for the whole run of the "postgres" project; each data dir gets its own database in it (test-database.ts). */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const cluster = await startPostgresCluster();
  project.provide("postgresSocketDir", cluster.socketDir);
  return () => cluster.stop();
}

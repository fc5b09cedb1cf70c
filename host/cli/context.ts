import { mkdirSync } from "node:fs";
import { ConfigError, loadConfig, type Config } from "../config.js";
import { DB_FILE, openDatabase } from "../daemon.js";
import { tellDaemonAuthChanged } from "../ops/control-socket.js";
import type { Database } from "../store/db.js";

export interface Io {
  out(line: string): void;
  err(line: string): void;
}

/**
 * A failure the operator caused or can act on: its message is printed as one `cvmctl: …` line and
 * its code becomes the exit status (2 usage, 1 refused or failed, 78 configuration).
 */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

export class UsageError extends CliError {
  constructor(message: string) {
    super(message, 2);
  }
}

/** What every command handler gets; the configuration is loaded only when a command runs, so help and usage errors work with a broken one. */
export interface CliContext {
  io: Io;
  config(): Config;
  dbFile: string;
}

export function cliContext(env: NodeJS.ProcessEnv, io: Io): CliContext {
  let config: Config | undefined;
  return {
    io,
    dbFile: DB_FILE,
    config() {
      try {
        config ??= loadConfig(env);
      } catch (err) {
        if (err instanceof ConfigError) throw new CliError(`configuration error: ${err.message}`, 78);
        throw err;
      }
      return config;
    },
  };
}

/** Opens (and migrates) the configured database (the data dir's, or CVM_DATABASE_URL's) for one operation. */
export async function withDb<T>(config: Config, dbFile: string, fn: (db: Database) => Promise<T>): Promise<T> {
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const db = await openDatabase(config, { dbFile });
  try {
    await db.migrate();
    return await fn(db);
  } finally {
    try {
      // A running cvmd caches credentials: it must drop them before we report success.
      if (db.changes.authWritten) await tellDaemonAuthChanged(config.dataDir);
    } finally {
      await db.close();
    }
  }
}

export function table(rows: string[][]): string {
  if (rows.length === 0) return "";
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ")).join("\n");
}

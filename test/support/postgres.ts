import { execFile, execFileSync } from "node:child_process";
import { accessSync, chownSync, constants, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const execFileP = promisify(execFile);

/**
 * A PostgreSQL server program: on PATH when it is linked there, else in Debian's
 * /usr/lib/postgresql/<major>/bin of the newest installed major version (Debian puts only the
 * client wrappers on PATH). Null when neither has it.
 */
export function postgresBin(tool: "initdb" | "pg_ctl"): string | null {
  const candidates = (process.env.PATH ?? "").split(":").filter(Boolean).map((d) => join(d, tool));
  let majors: string[] = [];
  try {
    majors = readdirSync("/usr/lib/postgresql").filter((v) => /^\d+$/.test(v));
  } catch {
    /* no Debian server package */
  }
  candidates.push(...majors.sort((a, b) => Number(b) - Number(a)).map((v) => `/usr/lib/postgresql/${v}/bin/${tool}`));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      /* next */
    }
  }
  return null;
}

export interface PostgresCluster {
  /** The directory of its Unix socket (the `host` of a connection); it listens on no TCP port. */
  socketDir: string;
  stop(): Promise<void>;
}

/**
 * A throwaway cluster under a new temp dir: `initdb` and `pg_ctl start`, run as the `postgres` user
 * when we are root (the server refuses to run as root), trusting local connections, listening only
 * on a socket in that dir. Durability is off (fsync, synchronous_commit): the cluster dies with the
 * test run. `stop()` stops it and removes the dir.
 */
export async function startPostgresCluster(): Promise<PostgresCluster> {
  const initdb = postgresBin("initdb");
  const pgCtl = postgresBin("pg_ctl");
  if (!initdb || !pgCtl) throw new Error("PostgreSQL's initdb/pg_ctl not found (Debian package postgresql)");
  const root = mkdtempSync(join(tmpdir(), "cvm-pg-"));
  const data = join(root, "data");
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const id = (flag: string) => Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8" }).trim());
    chownSync(root, id("-u"), id("-g"));
  }
  const run = (tool: string, args: string[]) =>
    execFileP(asRoot ? "runuser" : tool, asRoot ? ["-u", "postgres", "--", tool, ...args] : args, { timeout: 120_000, cwd: root }).catch((err: Error & { stderr?: string }) => {
      throw new Error(`${tool} ${args.join(" ")}: ${err.message}\n${err.stderr ?? ""}`);
    });
  try {
    // A language's collation (ICU "en"), as on a real server, not byte order: the schema must not
    // depend on the server's default to sort names as SQLite does.
    await run(initdb, ["-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--locale-provider=icu", "--icu-locale=en", "--no-sync"]);
    const server = `-c listen_addresses='' -k ${root} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200`;
    await run(pgCtl, ["-D", data, "-l", join(root, "server.log"), "-w", "-t", "60", "-o", server, "start"]);
  } catch (err) {
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
  return {
    socketDir: root,
    stop: async () => {
      try {
        await run(pgCtl, ["-D", data, "-m", "fast", "-w", "stop"]);
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    },
  };
}

import { execFile, spawn, type ChildProcess } from "node:child_process";
import { promisify } from "node:util";
import { testDatabaseEnv } from "./test-database.js";

const execFileP = promisify(execFile);
const ROOT = new URL("../../", import.meta.url).pathname;

/** Runs one of our TypeScript entry points as a real process (through tsx, so tests need no build). */
export function tsEntry(entry: string): string[] {
  return ["--import", "tsx", ROOT + entry];
}

/** Runs one of our command-line entry points as its own process with only `env` (and PATH), and the test database of its CVM_DATA_DIR (SQLite there, or PostgreSQL: test-database.ts). */
async function runEntry(entry: string, args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  const dbEnv = await testDatabaseEnv(env);
  try {
    const { stdout, stderr } = await execFileP(process.execPath, [...tsEntry(entry), ...args], {
      env: { PATH: process.env.PATH, ...dbEnv, ...env },
      timeout: 60_000,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : 1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

export const cvmctl = (args: string[], env: Record<string, string>) => runEntry("host/cli/main.ts", args, env);

/** cvm-verify (guest/verify/bin.ts), e.g. the tenant mode against a running cvmd. */
export const cvmVerify = (args: string[], env: Record<string, string>) => runEntry("guest/verify/bin.ts", args, env);

/** Runs cvmd expecting it to stop by itself before it listens: its exit code and its stderr. */
export async function cvmdUntilExit(env: Record<string, string>, timeoutMs = 60_000): Promise<{ code: number | null; stderr: string }> {
  const dbEnv = await testDatabaseEnv(env);
  const child = spawn(process.execPath, tsEntry("host/main.ts"), {
    env: { PATH: process.env.PATH, CVM_LISTEN: "127.0.0.1:0", ...dbEnv, ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  return new Promise((resolve) =>
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    }),
  );
}

export interface CvmdProcess {
  child: ChildProcess;
  url: string;
  logs: string[];
  kill(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts the real cvmd and resolves once it logs where it listens. */
export async function startCvmd(env: Record<string, string>, timeoutMs = 60_000): Promise<CvmdProcess> {
  const dbEnv = await testDatabaseEnv(env);
  const child = spawn(process.execPath, tsEntry("host/main.ts"), {
    env: { PATH: process.env.PATH, CVM_LISTEN: "127.0.0.1:0", ...dbEnv, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: string[] = [];
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`cvmd did not start within ${timeoutMs} ms:\n${logs.join("\n")}`)), timeoutMs);
    let buf = "";
    let listening = false;
    child.stdout!.on("data", (chunk: Buffer) => {
      // Once cvmd listens only the first lines are kept, unparsed: a benchmark's load process must
      // not spend its CPU reading the daemon's request log.
      if (listening) {
        if (logs.length < 5000) logs.push(chunk.toString());
        return;
      }
      buf += chunk.toString();
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (logs.length < 5000) logs.push(line);
        try {
          const rec = JSON.parse(line) as { msg?: string; url?: string };
          if (rec.msg === "cvmd listening" && rec.url) {
            listening = true;
            clearTimeout(timer);
            resolve({
              child,
              url: rec.url,
              logs,
              kill: (signal = "SIGTERM") => {
                child.kill(signal);
                return exited;
              },
            });
          }
        } catch {
          /* not JSON */
        }
      }
    });
    child.stderr!.on("data", (c: Buffer) => logs.push(c.toString()));
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`cvmd exited (${code}) before listening:\n${logs.join("\n")}`));
    });
  });
}

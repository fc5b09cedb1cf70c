import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";

export const LOCK_FILE = "cvmd.pid";

export interface LockHolder {
  pid: number;
  /** Kernel start time of the process (clock ticks since boot), so a recycled pid is not mistaken for the holder. */
  startTime: string | null;
  role: string;
}

export class DataDirBusyError extends Error {
  override name = "DataDirBusyError";
  constructor(readonly holder: LockHolder, dataDir: string) {
    super(`${holder.role} (pid ${holder.pid}) is using ${dataDir}`);
  }
}

/** Field 22 of /proc/<pid>/stat; null where there is no procfs. */
export function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may contain spaces and parentheses: count fields after the last ')'.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? null;
  } catch {
    return null;
  }
}

function alive(h: LockHolder): boolean {
  try {
    process.kill(h.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  if (h.startTime === null) return true;
  const now = processStartTime(h.pid);
  return now === null || now === h.startTime;
}

/** The live holder of the data dir's lock, or null when there is none (or only a stale file). */
export function lockHolder(dataDir: string): LockHolder | null {
  let h: LockHolder;
  try {
    const raw = JSON.parse(readFileSync(join(dataDir, LOCK_FILE), "utf8")) as { pid?: unknown; start_time?: unknown; role?: unknown };
    if (typeof raw.pid !== "number" || !Number.isInteger(raw.pid) || raw.pid <= 0) return null;
    h = { pid: raw.pid, startTime: typeof raw.start_time === "string" ? raw.start_time : null, role: typeof raw.role === "string" ? raw.role : "unknown" };
  } catch {
    return null;
  }
  return alive(h) ? h : null;
}

/**
 * Takes the data dir for this process: cvmd holds it while it runs, `cvmctl restore` while it
 * swaps the database. A file left by a killed holder is stale (its pid is gone or now belongs to
 * a process that started at another time) and is taken over.
 */
export function acquireDataDirLock(dataDir: string, role: string): { release(): void } {
  const path = join(dataDir, LOCK_FILE);
  const me: LockHolder = { pid: process.pid, startTime: processStartTime(process.pid), role };
  for (let attempt = 0; attempt < 5; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, "wx", 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const holder = lockHolder(dataDir);
      if (holder) throw new DataDirBusyError(holder, dataDir);
      try {
        unlinkSync(path);
      } catch {
        /* another starter removed it first; retry */
      }
      continue;
    }
    try {
      writeSync(fd, JSON.stringify({ pid: me.pid, start_time: me.startTime, role }) + "\n");
    } finally {
      closeSync(fd);
    }
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        try {
          const raw = JSON.parse(readFileSync(path, "utf8")) as { pid?: number };
          if (raw.pid === me.pid) unlinkSync(path);
        } catch {
          /* already gone */
        }
      },
    };
  }
  throw new Error(`could not take ${path}: it keeps reappearing`);
}

/**
 * cvmd's start: cvmctl holds the lock only for a short write or a restore, so wait for it; another
 * cvmd is an error at once.
 */
export async function acquireDaemonLock(dataDir: string, waitForCvmctlMs = 60_000): Promise<{ release(): void }> {
  const deadline = Date.now() + waitForCvmctlMs;
  for (;;) {
    try {
      return acquireDataDirLock(dataDir, "cvmd");
    } catch (err) {
      if (!(err instanceof DataDirBusyError) || !err.holder.role.startsWith("cvmctl") || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

import { closeSync, linkSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from "node:fs";
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
    super(`${holder.role}${holder.pid > 0 ? ` (pid ${holder.pid})` : ""} is using ${dataDir}`);
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

/** Field 3 of /proc/<pid>/stat (R, S, D, Z, …); null where there is no procfs or no such pid. */
function processState(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0] ?? null;
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
  // A killed holder stays a zombie until its parent reaps it, and signal 0 still reaches a
  // zombie: restarts right after kill -9 were refused for as long as that took. A zombie (or a
  // dying task) holds no file, no socket and no guest, so it does not hold the data dir either.
  const state = processState(h.pid);
  if (state === "Z" || state === "X" || state === "x") return false;
  if (h.startTime === null) return true;
  const now = processStartTime(h.pid);
  return now === null || now === h.startTime;
}

/**
 * How long an unreadable lock file is presumed to belong to a writer still writing it. Our own
 * writers never leave one (the file appears complete, see acquireDataDirLock); this covers a
 * file cut short by a crash of the machine or written by an older cvm that wrote in place.
 */
const UNREADABLE_GRACE_MS = 5_000;

/** The live holder of the data dir's lock, or null when there is none (or only a stale file). */
export function lockHolder(dataDir: string): LockHolder | null {
  const path = join(dataDir, LOCK_FILE);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return null;
  }
  let h: LockHolder | null = null;
  try {
    const raw = JSON.parse(text) as { pid?: unknown; start_time?: unknown; role?: unknown };
    if (typeof raw.pid === "number" && Number.isInteger(raw.pid) && raw.pid > 0) {
      h = { pid: raw.pid, startTime: typeof raw.start_time === "string" ? raw.start_time : null, role: typeof raw.role === "string" ? raw.role : "unknown" };
    }
  } catch {
    /* unreadable: see below */
  }
  if (h) return alive(h) ? h : null;
  // Never take over a file that may be in the middle of being written by a live holder.
  try {
    if (Date.now() - statSync(path).mtimeMs < UNREADABLE_GRACE_MS) return { pid: 0, startTime: null, role: "an unidentified process (the lock file is being written)" };
  } catch {
    /* gone meanwhile */
  }
  return null;
}

/**
 * Takes the data dir for this process: cvmd holds it while it runs, `cvmctl restore` while it
 * swaps the database. A file left by a killed holder is stale (its pid is gone or now belongs to
 * a process that started at another time) and is taken over.
 */
export function acquireDataDirLock(dataDir: string, role: string): { release(): void } {
  const path = join(dataDir, LOCK_FILE);
  const me: LockHolder = { pid: process.pid, startTime: processStartTime(process.pid), role };
  // The file is written complete under a private name and then linked into place: link() fails
  // with EEXIST when the lock exists, like an O_EXCL create, but the lock is never visible half
  // written, so no reader can mistake a live writer's partial file for a stale one.
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  const fd = openSync(tmp, "w", 0o600);
  try {
    writeSync(fd, JSON.stringify({ pid: me.pid, start_time: me.startTime, role }) + "\n");
  } finally {
    closeSync(fd);
  }
  let taken = false;
  try {
    for (let attempt = 0; attempt < 5 && !taken; attempt++) {
      try {
        linkSync(tmp, path);
        taken = true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        const holder = lockHolder(dataDir);
        if (holder) throw new DataDirBusyError(holder, dataDir);
        try {
          unlinkSync(path);
        } catch {
          /* another starter removed it first; retry */
        }
      }
    }
  } finally {
    unlinkSync(tmp);
  }
  if (!taken) throw new Error(`could not take ${path}: it keeps reappearing`);
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

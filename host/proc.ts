import { readFile, readdir } from "node:fs/promises";
import path from "node:path";

/** /proc look-ups for processes cvmd did not spawn itself (daemonized QEMU, restarted cvmd), so waitpid is no option. */

export async function readCmdline(pid: number, procRoot = "/proc"): Promise<string[] | null> {
  try {
    const raw = await readFile(path.join(procRoot, String(pid), "cmdline"));
    if (raw.length === 0) return null; // zombie or kernel thread
    const parts = raw.toString("utf8").split("\0");
    if (parts.at(-1) === "") parts.pop();
    return parts;
  } catch {
    return null;
  }
}

/** True while the process exists and is not a zombie (a killed daemon may linger as one until init reaps it). */
export async function isAlive(pid: number, procRoot = "/proc"): Promise<boolean> {
  try {
    const stat = await readFile(path.join(procRoot, String(pid), "stat"), "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** Is this argv a QEMU started for this run dir? Its pidfile path is unique per instance, so it identifies it. */
export function isQemuFor(argv: string[] | null, pidfile: string): boolean {
  if (!argv || argv.length === 0) return false;
  if (!path.basename(argv[0]).startsWith("qemu-system-")) return false;
  const i = argv.indexOf("-pidfile");
  return i >= 0 && argv[i + 1] === pidfile;
}

/** Finds QEMU processes for a run dir by scanning /proc, for when the pidfile is missing or stale. */
export async function findQemuByPidfile(pidfile: string, procRoot = "/proc"): Promise<number[]> {
  const found: number[] = [];
  for (const name of await readdir(procRoot)) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (isQemuFor(await readCmdline(pid, procRoot), pidfile) && (await isAlive(pid, procRoot))) found.push(pid);
  }
  return found;
}

export async function waitForExit(pid: number, timeoutMs: number, procRoot = "/proc"): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!(await isAlive(pid, procRoot))) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

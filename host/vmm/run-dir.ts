import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";

import { VmmError, type LaunchRecord } from "./hypervisor.js";

/** Everything QEMU needs per instance lives under `<dataDir>/vms/<instance-id>/`. */
export interface RunPaths {
  dir: string;
  pidfile: string;
  qmp: string;
  agent: string;
  /** QEMU's serial chardev; only cvmd connects to it (see SerialCapture). */
  serial: string;
  /** The console cvmd relays for `cvmctl console`. */
  console: string;
  serialLog: string;
  launchJson: string;
}

// sockaddr_un.sun_path is 108 bytes including the terminating NUL.
const MAX_UNIX_PATH = 107;
const INSTANCE_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

export function assertInstanceId(id: string): void {
  if (!INSTANCE_ID.test(id)) throw new VmmError("invalid_spec", `instance id ${JSON.stringify(id)} must match ${INSTANCE_ID}`);
}

export function runPaths(dataDir: string, instanceId: string): RunPaths {
  assertInstanceId(instanceId);
  if (!path.isAbsolute(dataDir)) throw new VmmError("invalid_spec", `dataDir must be absolute (QEMU chdirs to / when it daemonizes): ${dataDir}`);
  const dir = path.join(dataDir, "vms", instanceId);
  const p: RunPaths = {
    dir,
    pidfile: path.join(dir, "qemu.pid"),
    qmp: path.join(dir, "qmp.sock"),
    agent: path.join(dir, "agent.sock"),
    serial: path.join(dir, "serial.sock"),
    console: path.join(dir, "console.sock"),
    serialLog: path.join(dir, "serial.log"),
    launchJson: path.join(dir, "launch.json"),
  };
  for (const sock of [p.qmp, p.agent, p.serial, p.console]) {
    if (Buffer.byteLength(sock) > MAX_UNIX_PATH) {
      throw new VmmError("invalid_spec", `socket path ${sock} exceeds ${MAX_UNIX_PATH} bytes; use a shorter data dir`);
    }
  }
  return p;
}

export async function ensureRunDir(p: RunPaths): Promise<void> {
  await mkdir(p.dir, { recursive: true, mode: 0o700 });
}

/** Write-then-rename so a crash never leaves a half-written record. */
export async function writeLaunchRecord(p: RunPaths, rec: LaunchRecord): Promise<void> {
  const tmp = `${p.launchJson}.tmp`;
  await writeFile(tmp, JSON.stringify(rec, null, 2) + "\n", { mode: 0o600 });
  await rename(tmp, p.launchJson);
}

export async function readLaunchRecord(p: RunPaths): Promise<LaunchRecord | null> {
  let text: string;
  try {
    text = await readFile(p.launchJson, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
  const rec = JSON.parse(text) as LaunchRecord;
  if (rec.version !== 1 || rec.instanceId !== path.basename(p.dir)) {
    throw new VmmError("invalid_spec", `${p.launchJson} is not a launch record for ${path.basename(p.dir)}`);
  }
  return rec;
}

export async function readPidfile(p: RunPaths): Promise<number | null> {
  try {
    const n = Number.parseInt((await readFile(p.pidfile, "utf8")).trim(), 10);
    return Number.isSafeInteger(n) && n > 1 ? n : null;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}

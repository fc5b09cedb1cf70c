import { readdir, rm, stat, unlink } from "node:fs/promises";
import path from "node:path";

import pino, { type Logger } from "pino";

import { run, RunError } from "../../shared/util/run.js";
import {
  VmmError,
  type AdoptResult,
  type Hypervisor,
  type LaunchedVm,
  type LaunchRecord,
  type LaunchSpec,
  type StopOptions,
  type StopResult,
  type VmInspection,
} from "./hypervisor.js";
import { findQemuByPidfile, isAlive, isQemuFor, readCmdline, signal, waitForExit } from "../proc.js";
import { PROFILES, type ProfileTable } from "./profiles.js";
import { buildQemuArgs } from "./qemu-args.js";
import { QmpClient } from "./qmp-client.js";
import { DEFAULT_SERIAL_BYTES_PER_SEC, DEFAULT_SERIAL_LOG_BYTES, SerialCapture } from "./serial-capture.js";
import { ensureRunDir, readLaunchRecord, readPidfile, runPaths, writeLaunchRecord, type RunPaths } from "./run-dir.js";

export interface QemuHypervisorOptions {
  /** Root of per-instance run dirs: `<dataDir>/vms/<id>/`. Must be absolute and short (Unix socket paths). */
  dataDir: string;
  qemuBinary?: string;
  ipBinary?: string;
  /** The profile rows the argv is built from; the driver must dial from the same table. */
  profiles?: ProfileTable;
  /** How long QEMU may take to daemonize (set up devices) before the launch counts as failed. */
  launchTimeoutMs?: number;
  qmpTimeoutMs?: number;
  /** Wait after `quit` and after SIGTERM before escalating. */
  escalateAfterMs?: number;
  procRoot?: string;
  /** Cap on each guest's serial.log plus serial.log.1. */
  serialLogMaxBytes?: number;
  /** Serial bytes per second a guest may send before cvmd stops reading for the rest of the second. */
  serialBytesPerSec?: number;
  /** Where a guest going over its serial byte budget is recorded, once per episode. */
  securityLog?: Logger;
  logger?: Logger;
}

/** Runs each guest as a daemonized QEMU, optionally inside a network namespace, and finds it again after a restart. */
export class QemuHypervisor implements Hypervisor {
  private readonly o: Required<QemuHypervisorOptions>;
  private readonly qmp = new Map<string, QmpClient>();
  private readonly serial = new Map<string, SerialCapture>();

  constructor(opts: QemuHypervisorOptions) {
    this.o = Object.freeze({
      serialLogMaxBytes: DEFAULT_SERIAL_LOG_BYTES,
      serialBytesPerSec: DEFAULT_SERIAL_BYTES_PER_SEC,
      securityLog: pino({ level: "silent" }),
      logger: pino({ level: "silent" }),
      qemuBinary: "qemu-system-x86_64",
      ipBinary: "ip",
      launchTimeoutMs: 30_000,
      qmpTimeoutMs: 5_000,
      escalateAfterMs: 3_000,
      procRoot: "/proc",
      profiles: PROFILES,
      ...opts,
    });
  }

  paths(instanceId: string): RunPaths {
    return runPaths(this.o.dataDir, instanceId);
  }

  async launch(spec: LaunchSpec): Promise<LaunchedVm> {
    const p = this.paths(spec.instanceId);
    const args = buildQemuArgs(spec, p, this.o.profiles);
    await ensureRunDir(p);
    const live = await this.livePid(p);
    if (live !== null) throw new VmmError("already_running", `instance ${spec.instanceId} already runs as pid ${live}`);

    const argv = spec.netns
      ? [this.o.ipBinary, "netns", "exec", spec.netns, this.o.qemuBinary, ...args]
      : [this.o.qemuBinary, ...args];
    const record: LaunchRecord = {
      version: 1,
      instanceId: spec.instanceId,
      profile: spec.profile,
      accel: spec.profile === "tdx" ? "kvm" : spec.accel,
      cid: spec.cid,
      tap: spec.nic.tap,
      mac: spec.nic.mac,
      netns: spec.netns ?? null,
      argv,
      recordedAt: new Date().toISOString(),
      serialOffset: await sizeOf(p.serialLog),
    };
    // Recorded before QEMU exists: if cvmd dies in between, the next one still knows the CID and tap were taken.
    await writeLaunchRecord(p, record);
    for (const f of [p.pidfile, p.qmp, p.agent, p.serial, p.console]) await unlink(f).catch(() => {});

    const t0 = performance.now();
    try {
      await run(argv[0], argv.slice(1), { timeoutMs: this.o.launchTimeoutMs });
    } catch (e) {
      const detail = e instanceof RunError ? e.stderr.trim() || e.message : String(e);
      // A daemon that got as far as its pidfile before the parent timed out is still ours to clean up.
      const stray = await this.livePid(p);
      if (stray !== null) signal(stray, "SIGKILL");
      throw new VmmError("launch_failed", `QEMU for ${spec.instanceId} did not start: ${detail}`, { cause: e });
    }
    const startMs = performance.now() - t0;
    const pid = await this.livePid(p);
    if (pid === null) throw new VmmError("launch_failed", `QEMU for ${spec.instanceId} daemonized but is not running`);
    try {
      // QEMU waits paused (-S) until the serial capture is connected, so the log starts with the firmware's first line.
      await this.captureSerial(spec.instanceId, p);
      await (await this.client(spec.instanceId, p)).execute("cont", undefined, { timeoutMs: this.o.qmpTimeoutMs });
    } catch (e) {
      await this.stopCapture(spec.instanceId);
      signal(pid, "SIGKILL");
      throw new VmmError("launch_failed", `QEMU for ${spec.instanceId} started but could not be resumed: ${(e as Error).message}`, { cause: e });
    }
    return { instanceId: spec.instanceId, pid, runDir: p.dir, record, startMs };
  }

  async inspect(instanceId: string): Promise<VmInspection> {
    const p = this.paths(instanceId);
    const record = (await readLaunchRecord(p)) ?? undefined;
    const pid = await this.livePid(p);
    if (pid === null) return { instanceId, state: "stopped", record };
    try {
      const q = await this.client(instanceId, p);
      const st = await q.execute<{ status: string }>("query-status", undefined, { timeoutMs: this.o.qmpTimeoutMs });
      return { instanceId, state: "running", pid, status: st.status, record };
    } catch {
      return { instanceId, state: "unknown", pid, record };
    }
  }

  async adopt(instanceId: string): Promise<AdoptResult> {
    const p = this.paths(instanceId);
    const record = await readLaunchRecord(p);
    if (!record) return { adopted: false, instanceId, reason: "no-record", detail: `no ${p.launchJson}` };
    const recorded = await readPidfile(p);
    if (recorded !== null && (await isAlive(recorded, this.o.procRoot))) {
      const argv = await readCmdline(recorded, this.o.procRoot);
      if (!isQemuFor(argv, p.pidfile)) {
        return { adopted: false, instanceId, reason: "not-ours", detail: `pid ${recorded} is ${argv?.[0] ?? "unknown"}, not QEMU for ${p.dir}` };
      }
    }
    const pid = await this.livePid(p);
    if (pid === null) return { adopted: false, instanceId, reason: "dead", detail: `no live QEMU for ${p.dir}` };
    this.dropClient(instanceId);
    try {
      const q = await this.client(instanceId, p);
      const st = await q.execute<{ status: string }>("query-status", undefined, { timeoutMs: this.o.qmpTimeoutMs });
      // A guest launched before cvmd captured serial output itself has no serial.sock: adopt it all the same.
      await this.captureSerial(instanceId, p).catch((err: Error) =>
        this.o.logger.warn({ instance_id: instanceId, err: err.message }, "no serial capture for this guest; its serial output is not logged"),
      );
      return { adopted: true, instanceId, pid, status: st.status, record };
    } catch (e) {
      return { adopted: false, instanceId, reason: "qmp-unreachable", detail: `pid ${pid}: ${(e as Error).message}` };
    }
  }

  async stop(instanceId: string, opts: StopOptions = {}): Promise<StopResult> {
    const p = this.paths(instanceId);
    const t0 = Date.now();
    const done = (stoppedBy: StopResult["stoppedBy"]): StopResult => ({ stoppedBy, elapsedMs: Date.now() - t0 });
    const pid = await this.livePid(p);
    if (pid === null) {
      await this.cleanupSockets(instanceId, p);
      return done("already-stopped");
    }
    const graceMs = opts.graceMs ?? 0;
    let q: QmpClient | null = null;
    try {
      q = await this.client(instanceId, p);
    } catch {
      q = null; // a wedged monitor must not prevent the kill
    }
    let result: StopResult | null = null;
    if (q && graceMs > 0) {
      await q.execute("system_powerdown", undefined, { timeoutMs: this.o.qmpTimeoutMs }).catch(() => {});
      if (await waitForExit(pid, graceMs, this.o.procRoot)) result = done("powerdown");
    }
    if (!result && q) {
      await q.execute("quit", undefined, { timeoutMs: this.o.qmpTimeoutMs }).catch(() => {});
      if (await waitForExit(pid, this.o.escalateAfterMs, this.o.procRoot)) result = done("quit");
    }
    if (!result) {
      signal(pid, "SIGTERM");
      if (await waitForExit(pid, this.o.escalateAfterMs, this.o.procRoot)) result = done("sigterm");
    }
    if (!result) {
      signal(pid, "SIGKILL");
      if (!(await waitForExit(pid, this.o.escalateAfterMs, this.o.procRoot))) {
        throw new VmmError("not_running", `pid ${pid} survived SIGKILL for ${this.o.escalateAfterMs} ms`);
      }
      result = done("sigkill");
    }
    await this.cleanupSockets(instanceId, p);
    return result;
  }

  async list(): Promise<string[]> {
    try {
      return (await readdir(path.join(this.o.dataDir, "vms"), { withFileTypes: true }))
        .filter((d) => d.isDirectory())
        .map((d) => d.name)
        .sort();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw e;
    }
  }

  async purge(instanceId: string): Promise<void> {
    const p = this.paths(instanceId);
    const pid = await this.livePid(p);
    if (pid !== null) throw new VmmError("already_running", `instance ${instanceId} still runs as pid ${pid}; stop it first`);
    this.dropClient(instanceId);
    await this.stopCapture(instanceId);
    await rm(p.dir, { recursive: true, force: true });
  }

  /** Subscribes to QMP events (SHUTDOWN, RESET, ...) of a running guest. */
  async events(instanceId: string, onEvent: (e: { event: string; data?: Record<string, unknown> }) => void): Promise<() => void> {
    const q = await this.client(instanceId, this.paths(instanceId));
    q.on("event", onEvent);
    return () => q.off("event", onEvent);
  }

  /** Closes monitor and serial connections without touching the guests (cvmd shutdown). */
  close(): void {
    for (const id of [...this.qmp.keys()]) this.dropClient(id);
    for (const id of [...this.serial.keys()]) void this.stopCapture(id);
  }

  /** The serial capture of a running guest, for tests and status. */
  serialCapture(instanceId: string): SerialCapture | undefined {
    return this.serial.get(instanceId);
  }

  private async captureSerial(instanceId: string, p: RunPaths): Promise<void> {
    await this.stopCapture(instanceId);
    const cap = await SerialCapture.start({
      serialSocket: p.serial,
      consoleSocket: p.console,
      logPath: p.serialLog,
      maxBytes: this.o.serialLogMaxBytes,
      bytesPerSec: this.o.serialBytesPerSec,
      onFlood: (f) =>
        this.o.securityLog.warn(
          { event: "serial_flood", instance_id: instanceId, bytes_in_window: f.bytesInWindow, bytes_per_sec: f.bytesPerSec },
          "guest sends more serial output than its budget; cvmd reads it at the budget's pace",
        ),
      onError: (err) => this.o.logger.warn({ instance_id: instanceId, err: err.message }, "serial capture failed"),
    });
    this.serial.set(instanceId, cap);
    void cap.ended.then(() => {
      if (this.serial.get(instanceId) === cap) {
        this.serial.delete(instanceId);
        void cap.close();
      }
    });
  }

  private async stopCapture(instanceId: string): Promise<void> {
    const cap = this.serial.get(instanceId);
    this.serial.delete(instanceId);
    await cap?.close();
  }

  /** The live QEMU for this run dir: the pidfile if it names one, else a /proc scan (pidfile lost or not yet written). */
  private async livePid(p: RunPaths): Promise<number | null> {
    const recorded = await readPidfile(p);
    if (recorded !== null && (await isAlive(recorded, this.o.procRoot)) && isQemuFor(await readCmdline(recorded, this.o.procRoot), p.pidfile)) {
      return recorded;
    }
    const found = await findQemuByPidfile(p.pidfile, this.o.procRoot);
    return found[0] ?? null;
  }

  private async client(instanceId: string, p: RunPaths): Promise<QmpClient> {
    const existing = this.qmp.get(instanceId);
    if (existing && !existing.isClosed) return existing;
    const q = await QmpClient.connect(p.qmp, { timeoutMs: this.o.qmpTimeoutMs });
    q.on("close", () => {
      if (this.qmp.get(instanceId) === q) this.qmp.delete(instanceId);
    });
    this.qmp.set(instanceId, q);
    return q;
  }

  private dropClient(instanceId: string): void {
    this.qmp.get(instanceId)?.close();
    this.qmp.delete(instanceId);
  }

  private async cleanupSockets(instanceId: string, p: RunPaths): Promise<void> {
    this.dropClient(instanceId);
    await this.stopCapture(instanceId);
    for (const f of [p.pidfile, p.qmp, p.agent, p.serial, p.console]) await unlink(f).catch(() => {});
  }
}

async function sizeOf(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch {
    return 0;
  }
}

import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { tempDir } from "../../test/support/daemon.js";
import { acquireDataDirLock, DataDirBusyError, LOCK_FILE, lockHolder, processStartTime } from "./daemon-lock.js";

describe("data dir lock", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());

  it("is exclusive while held and gone after release", () => {
    const lock = acquireDataDirLock(dir.path, "cvmd");
    expect(lockHolder(dir.path)).toMatchObject({ pid: process.pid, role: "cvmd" });
    expect(() => acquireDataDirLock(dir.path, "cvmctl restore")).toThrow(DataDirBusyError);
    lock.release();
    expect(lockHolder(dir.path)).toBeNull();
    acquireDataDirLock(dir.path, "again").release();
  });

  it("takes over a file whose pid is dead, or alive but started at another time", async () => {
    const child = spawn(process.execPath, ["-e", ""]);
    const deadPid = child.pid!;
    await new Promise((r) => child.once("exit", r));
    writeFileSync(join(dir.path, LOCK_FILE), JSON.stringify({ pid: deadPid, start_time: "1", role: "cvmd" }));
    expect(lockHolder(dir.path)).toBeNull();
    // Our own pid with a different start time stands for a recycled pid.
    writeFileSync(join(dir.path, LOCK_FILE), JSON.stringify({ pid: process.pid, start_time: "1", role: "cvmd" }));
    expect(lockHolder(dir.path)).toBeNull();
    const lock = acquireDataDirLock(dir.path, "cvmd");
    expect(JSON.parse(readFileSync(join(dir.path, LOCK_FILE), "utf8")).start_time).toBe(processStartTime(process.pid));
    lock.release();
  });

  it("reads a process start time from procfs", () => {
    expect(processStartTime(process.pid)).toMatch(/^\d+$/);
  });
});

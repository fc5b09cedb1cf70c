import { spawn } from "node:child_process";
import { readdirSync, readFileSync, utimesSync, writeFileSync } from "node:fs";
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

  it("takes over from a zombie: a killed holder its parent has not reaped yet", async () => {
    // `exec sleep` replaces the shell, so the background child's parent never reaps it.
    const parent = spawn("bash", ["-c", "sleep 0 & echo $!; exec sleep 10"], { stdio: ["ignore", "pipe", "ignore"] });
    try {
      const zombie = Number(await new Promise<string>((r) => parent.stdout!.once("data", (d: Buffer) => r(d.toString()))));
      const deadline = Date.now() + 5_000;
      while (!/\) Z /.test(readFileSync(`/proc/${zombie}/stat`, "utf8")) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      expect(readFileSync(`/proc/${zombie}/stat`, "utf8")).toMatch(/\) Z /);
      writeFileSync(join(dir.path, LOCK_FILE), JSON.stringify({ pid: zombie, start_time: processStartTime(zombie), role: "cvmd" }));
      expect(lockHolder(dir.path)).toBeNull();
      acquireDataDirLock(dir.path, "cvmd").release();
    } finally {
      parent.kill("SIGKILL");
    }
  });

  it("never takes over a half-written file while it may still be written; an old unreadable one is stale", () => {
    const path = join(dir.path, LOCK_FILE);
    writeFileSync(path, '{"pid": 12');
    expect(() => acquireDataDirLock(dir.path, "cvmd")).toThrow(DataDirBusyError);
    writeFileSync(path, "");
    expect(() => acquireDataDirLock(dir.path, "cvmd")).toThrow(/being written/);
    const old = new Date(Date.now() - 60_000);
    utimesSync(path, old, old);
    const lock = acquireDataDirLock(dir.path, "cvmd");
    expect(JSON.parse(readFileSync(path, "utf8")).pid).toBe(process.pid);
    lock.release();
    // The private file the lock was written under is gone too.
    expect(readdirSync(dir.path).filter((f) => f.startsWith(LOCK_FILE))).toEqual([]);
  });

  it("reads a process start time from procfs", () => {
    expect(processStartTime(process.pid)).toMatch(/^\d+$/);
  });
});

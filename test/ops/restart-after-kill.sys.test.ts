import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { tempDir } from "../support/daemon.js";
import { tsEntry } from "../support/processes.js";

/**
 * Starts the real cvmd under a shell that then execs `sleep`: the sleep becomes cvmd's parent and
 * never reaps it, so a cvmd killed with -9 stays a zombie, the state a supervisor leaves it in
 * until it gets round to wait(). Resolves with cvmd's pid once it listens.
 */
function startUnreaped(env: Record<string, string>): { parent: ChildProcess; listening: Promise<number> } {
  const cmd = [process.execPath, ...tsEntry("host/main.ts")].map((a) => `'${a}'`).join(" ");
  const parent = spawn("bash", ["-c", `${cmd} & echo "PID $!" >&2; exec sleep 300`], {
    env: { PATH: process.env.PATH, CVM_LISTEN: "127.0.0.1:0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const listening = new Promise<number>((resolve, reject) => {
    let pid = 0;
    let out = "";
    let err = "";
    const timer = setTimeout(() => reject(new Error(`cvmd did not listen within 60 s:\n${out}\n${err}`)), 60_000);
    parent.stderr!.on("data", (d: Buffer) => {
      err += d.toString();
      const m = /PID (\d+)/.exec(err);
      if (m) pid = Number(m[1]);
      if (/cvmd: /.test(err)) {
        clearTimeout(timer);
        reject(new Error(`cvmd refused to start:\n${err}`));
      }
    });
    parent.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes('"cvmd listening"') && pid) {
        clearTimeout(timer);
        resolve(pid);
      }
    });
  });
  return { parent, listening };
}

const state = (pid: number) => readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "")[0];

describe("cvmd restarted right after kill -9", () => {
  const dir = tempDir();
  const parents: ChildProcess[] = [];
  afterAll(() => {
    for (const p of parents) p.kill("SIGKILL");
    dir.remove();
  });

  it("starts at once, 10 times in a row, while the killed one is still an unreaped zombie", async () => {
    const env = { CVM_DATA_DIR: dir.path, CVM_DRIVER: "none" };
    for (let round = 0; round < 10; round++) {
      const s = startUnreaped(env);
      parents.push(s.parent);
      const pid = await s.listening;
      process.kill(pid, "SIGKILL");
      const deadline = Date.now() + 5_000;
      while (state(pid) !== "Z" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      expect(state(pid)).toBe("Z");
    }
  }, 300_000);
});

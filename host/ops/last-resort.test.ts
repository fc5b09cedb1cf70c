import { spawn } from "node:child_process";

import { expect, test } from "vitest";

import { tsEntry } from "../../test/support/processes.js";
import { EXIT_INTERNAL } from "./last-resort.js";

function child(how: string): Promise<{ code: number | null; lines: Array<Record<string, unknown>>; stderr: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [...tsEntry("host/ops/test/last-resort-child.ts"), how], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    c.stdout.on("data", (d: Buffer) => (out += d.toString()));
    c.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const t = setTimeout(() => c.kill("SIGKILL"), 30_000);
    c.on("error", reject);
    c.on("close", (code) => {
      clearTimeout(t);
      resolve({ code, stderr: err, lines: out.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l) as Record<string, unknown>) });
    });
  });
}

test.each(["rejection", "exception"])("an unhandled %s is logged as one fatal JSON line and the process exits non-zero", async (how) => {
  const r = await child(how);
  expect(r.code).toBe(EXIT_INTERNAL);
  expect(r.lines).toHaveLength(1);
  expect(r.lines[0]).toMatchObject({ level: 60, name: "cvmd", kind: how === "rejection" ? "unhandledRejection" : "uncaughtException" });
  expect((r.lines[0]!.err as { message: string }).message).toMatch(/^boom/);
  expect(r.stderr).toBe("");
});

test("a process that fails nowhere exits 0 with nothing logged", async () => {
  const r = await child("none");
  expect(r).toMatchObject({ code: 0, lines: [] });
});
